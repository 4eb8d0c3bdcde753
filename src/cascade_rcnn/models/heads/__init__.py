"""The heads each cascade stage runs on its RoI features: box (classes + deltas) and mask.

A head is chosen by its spec in ``ModelConfig`` (``box_head``, ``mask_head``): a frozen dataclass
with ``build(config) -> nn.Module``. A box head maps (K, C, 7, 7) RoI features to class logits
(K, num_classes + 1, background last) and deltas (K, 4); a mask head maps (K, C, 14, 14) to
(K, num_classes, 28, 28) logits and offers ``class_logits`` (one class per RoI, the fast path).
"""
