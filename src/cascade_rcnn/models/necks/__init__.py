"""Necks: the backbone's maps -> the feature pyramid that the RPN and the RoI heads read.

The contract (``ModelConfig.neck``) - no registry, any object will do:

- the spec: a frozen dataclass with ``build(config, in_channels, in_strides) -> nn.Module``,
  given the backbone module's ``out_channels`` and ``strides``;
- the module: ``forward(maps) -> list of (B, config.fpn_channels, H_l, W_l) maps``, finest first,
  and ``strides`` (the stride of each returned map in input pixels). The RPN reads every level;
  the RoI heads read the levels of their ``featmap_strides`` (the first four of FPN's five).

``fpn.py`` is MMDetection's FPN; ``tests/test_custom_parts.py`` defines a neck in the test file.
"""
