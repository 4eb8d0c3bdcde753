"""Backbones: image batch -> feature maps C2..C5. One file per family (spec + module).

The contract a cascade builds on (``ModelConfig.backbone``) - no registry, any object will do:

- the spec: a frozen dataclass with ``build() -> nn.Module``, ``input_norm`` (``InputNorm``:
  what the backbone's pretrained weights expect) and ``label`` (its name in the zoo tables); for
  ``engine.train`` also ``imagenet_url`` (or None), ``frozen_stages`` and ``norm_eval`` (a
  backbone with frozen parts must start from pretrained weights);
- the module: ``out_channels`` (channels of each returned map), ``strides`` (their strides, the
  FPN expects 4, 8, 16, 32) and ``forward(images, path) -> list of maps``, where ``images`` is a
  (B, 3, H, W) normalised batch and ``path`` the detector's ``ComputePath`` (a backbone that has
  no fast form of its own ignores it).

``tests/test_custom_backbone.py`` defines one in the test file and trains, predicts and exports
it. Adding a family = one new file here + zoo entries (``convnext.py`` is one).
"""
