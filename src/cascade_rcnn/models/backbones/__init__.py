"""Backbones: image batch -> feature maps C2..C5. One file per family (spec + module).

The contract a cascade builds on (``ModelConfig.backbone``) - no registry, any object will do:

- the spec: a frozen dataclass with ``build() -> nn.Module``, ``input_norm`` (``InputNorm``:
  what the backbone's pretrained weights expect) and ``label`` (its name in the zoo tables); for
  ``engine.train`` also ``imagenet_url`` (or None), ``frozen_stages`` and ``norm_eval`` (a
  backbone with frozen parts must start from pretrained weights);
- optional spec hooks, for a family with rules of its own (``hooks.py`` holds the defaults of a
  spec without them, so ``engine/`` and ``weights/`` never ask which family it is):
  ``lr_scale(name) -> float`` and ``weight_decays(name, parameter) -> bool`` per parameter of the
  detector (ConvNeXt's layer-wise lr decay, Swin's norms without weight decay; default: one lr,
  everything decays), ``to_own_layout(state) -> state`` for checkpoints in another key layout
  (Swin: MMDetection's -> the official one, ``swin_layout.py``; default: unchanged) and
  ``imagenet_keys`` (``hooks.ImageNetKeys``: the keys of its ImageNet classifier files dropped,
  and those of the backbone such a file lacks; default: none);
- the module: ``out_channels`` (channels of each returned map), ``strides`` (their strides, the
  FPN expects 4, 8, 16, 32) and ``forward(images, path) -> list of maps``, where ``images`` is a
  (B, 3, H, W) normalised batch and ``path`` the detector's ``ComputePath`` (a backbone that has
  no fast form of its own ignores it).

``tests/test_custom_backbone.py`` defines one in the test file and trains, predicts and exports
it. Adding a family = one new file here + zoo entries (``convnext.py`` is one; Swin adds
``swin_layout.py`` for MMDetection's key layout).
"""
