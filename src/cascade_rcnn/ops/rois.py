"""RoIs: the (K, 5) rows (image index, x1, y1, x2, y2) in which the RPN hands a batch's proposals
to the RoI heads, image by image."""
from __future__ import annotations

import torch


def rois_from_boxes(boxes_per_image: list[torch.Tensor]) -> torch.Tensor:
    """(K, 5) RoIs from a list of (N_i, 4) boxes, one per image."""
    return torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1)
                      for i, b in enumerate(boxes_per_image)])


def boxes_per_image(rois: torch.Tensor, num_images: int) -> list[torch.Tensor]:
    """The (N_i, 4) boxes of each of ``num_images`` images from (K, 5) RoIs."""
    return [rois[rois[:, 0] == i, 1:] for i in range(num_images)]
