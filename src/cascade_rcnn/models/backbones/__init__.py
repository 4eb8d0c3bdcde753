"""Backbones: image batch -> feature maps C2..C5. One file per family (spec + module).

The contract a cascade builds on (``ModelConfig.backbone``) - no registry, any object will do:

- the spec: a frozen dataclass with ``build() -> nn.Module`` and ``input_norm`` (``InputNorm``:
  what the backbone's pretrained weights expect);
- the module: ``out_channels`` (channels of each returned map), ``strides`` (their strides, the
  FPN expects 4, 8, 16, 32) and ``forward(images, path) -> list of maps``, where ``images`` is a
  (B, 3, H, W) normalised batch and ``path`` the detector's ``ComputePath`` (a backbone that has
  no fast form of its own ignores it).

``tests/test_custom_backbone.py`` defines one in the test file and trains, predicts and exports
it. Adding a family = one new file here + zoo entries.
"""
