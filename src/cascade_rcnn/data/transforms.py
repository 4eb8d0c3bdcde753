"""The network's input: resize to fit a scale, normalise, pad to a multiple of 32; for prediction
and, with the boxes and masks and an optional flip, for training."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models.input_norm import MMDETECTION_RESIZE, ResizeRule
from .images import ImageInput, to_rgb_uint8

SIZE_DIVISOR = 32  # MMDetection's ``Pad(size_divisor=32)``: batches are padded to multiples of it


@dataclass(frozen=True)
class ResizedImage:
    """An image resized for the network, and how to map its pixels back to the original."""

    image: np.ndarray  # (h, w, 3) uint8, RGB
    original_size: tuple[int, int]  # (H, W)
    scale_factor: tuple[float, float]  # (w / W, h / H), two factors as MMDetection
    rule: ResizeRule = MMDETECTION_RESIZE

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    def boxes_to_original(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4) boxes of the resized image -> (N, 4) boxes in the original's pixels, and the (N,)
        bool mask of the boxes kept (all, except empty ones under Detectron2's rule)."""
        if not self.rule.multiply_back:
            return boxes / boxes.new_tensor(self.scale_factor).repeat(2), boxes.new_ones(len(boxes), dtype=torch.bool)
        (height, width), (new_h, new_w) = self.original_size, self.size
        boxes = boxes * torch.tensor([width / new_w, height / new_h] * 2, dtype=boxes.dtype, device=boxes.device)
        boxes = clip_to(boxes, height, width)
        return boxes, (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)


def clip_to(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 4) xyxy boxes with x clamped to [0, width] and y to [0, height]."""
    upper = boxes.new_tensor([width, height, width, height])
    return torch.maximum(torch.minimum(boxes, upper), boxes.new_zeros(()))


def shortest_edge_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_h, new_w) as Detectron2's ``ResizeShortestEdge`` rounds them, for ``scale`` = (long, short)."""
    short, longest = min(scale), max(scale)
    factor = short * 1.0 / min(height, width)
    new_h, new_w = (short, factor * width) if height < width else (factor * height, short)
    if max(new_h, new_w) > longest:
        factor = longest * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * factor, new_w * factor
    return max(int(new_h + 0.5), 1), max(int(new_w + 0.5), 1)


def fit_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_h, new_w) keeping the aspect ratio inside ``scale`` = (long side, short side) limits.

    MMDetection rounds with ``int(x * s + 0.5)``; a side never becomes 0 px (extreme aspect ratios).
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)


def resize(image: np.ndarray, scale: tuple[int, int], rule: ResizeRule = MMDETECTION_RESIZE) -> ResizedImage:
    """Bilinear resize of the uint8 image under ``rule`` (bit-exact with the framework's input)."""
    height, width = image.shape[:2]
    new_h, new_w = rule_size(height, width, scale, rule)
    resized = bilinear(image, (new_h, new_w), rule.library)
    return ResizedImage(resized, (height, width), (new_w / width, new_h / height), rule)


def rule_size(height: int, width: int, scale: tuple[int, int], rule: ResizeRule) -> tuple[int, int]:
    """(new_h, new_w) of an image resized to ``scale`` under ``rule``."""
    return (shortest_edge_size if rule.shortest_edge else fit_size)(height, width, scale)


def bilinear(image: np.ndarray, size: tuple[int, int], library: str = "cv2") -> np.ndarray:
    """The uint8 image resized to ``size`` (h, w) bilinearly by ``library`` ("cv2" or "pil")."""
    if library == "pil":
        return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], bgr: bool) -> torch.Tensor:
    """(3, h, w) float32 ``(x - mean) / std`` of an RGB uint8 image, in BGR order if ``bgr``."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    if bgr:
        tensor = tensor.flip(0)
    tensor = tensor.float()
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def pad_batch(images: list[torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W): zero-pad each (3, h, w) image at the bottom/right to a common multiple of 32."""
    height = max(i.shape[1] for i in images)
    width = max(i.shape[2] for i in images)
    height = -(-height // SIZE_DIVISOR) * SIZE_DIVISOR
    width = -(-width // SIZE_DIVISOR) * SIZE_DIVISOR
    return torch.stack([F.pad(i, (0, width - i.shape[2], 0, height - i.shape[1])) for i in images])


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) a single (h, w) image is padded to."""
    return tuple(-(-s // SIZE_DIVISOR) * SIZE_DIVISOR for s in size)


@dataclass
class TrainSample:
    """One augmented training image: network input, targets in its pixels, and its size."""

    tensor: torch.Tensor  # (3, h, w) normalised
    target: dict  # boxes (G, 4), labels (G,), masks (G, h, w) uint8, crowd_boxes (M, 4)
    size: tuple[int, int]  # (h, w) before padding


def resize_sample(sample: dict, scale: tuple[int, int], rule: ResizeRule = MMDETECTION_RESIZE) -> dict:
    """A data set sample resized to fit ``scale`` keeping the ratio, as ``rule`` rounds the size
    and resizes the image (``resize_sample_to``)."""
    return resize_sample_to(sample, rule_size(*sample["image"].shape[:2], scale, rule), rule.library)


def resize_sample_to(sample: dict, size: tuple[int, int], library: str = "cv2") -> dict:
    """A data set sample resized to ``size`` (h, w): the image bilinearly (by ``library``), boxes
    scaled by (sx, sy, sx, sy) and clipped to the image (float32 tensors), masks by nearest
    neighbour. ``sample`` holds ``image`` RGB uint8 (H, W, 3), ``boxes`` (G, 4), ``labels`` (G,),
    optionally ``masks`` (G, H, W) uint8 and ``crowd_boxes`` (M, 4); so does the result."""
    (old_h, old_w), (height, width) = sample["image"].shape[:2], size
    image = bilinear(sample["image"], size, library)
    factors = torch.tensor((width / old_w, height / old_h), dtype=torch.float32).repeat(2)
    upper = torch.tensor([width, height, width, height], dtype=torch.float32)

    def scale_boxes(boxes) -> torch.Tensor:
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * factors
        return torch.minimum(boxes.clamp(min=0), upper)

    out = {"image": image, "boxes": scale_boxes(sample["boxes"]),
           "labels": torch.as_tensor(sample["labels"], dtype=torch.long).reshape(-1),
           "crowd_boxes": scale_boxes(sample.get("crowd_boxes", np.zeros((0, 4))))}
    masks = sample.get("masks")
    if masks is not None:
        out["masks"] = np.zeros((len(masks), height, width), dtype=np.uint8)
        for index, mask in enumerate(masks):
            out["masks"][index] = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return out


def crop_window(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    """The (height, width) window at (top, left) of a ``resize_sample`` output: boxes shifted and
    clipped to it, those left without area dropped with their labels and masks (crowd regions
    likewise)."""
    offset = torch.tensor([left, top, left, top], dtype=torch.float32)
    upper = torch.tensor([width, height, width, height], dtype=torch.float32)

    def window(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = torch.minimum((boxes - offset).clamp(min=0), upper)
        return boxes, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])

    boxes, keep = window(sample["boxes"])
    crowd, keep_crowd = window(sample["crowd_boxes"])
    out = {"image": sample["image"][top:top + height, left:left + width], "boxes": boxes[keep],
           "labels": sample["labels"][keep], "crowd_boxes": crowd[keep_crowd]}
    if "masks" in sample:
        out["masks"] = sample["masks"][keep.numpy(), top:top + height, left:left + width]
    return out


def train_transform(sample: dict, scale: tuple[int, int], flip: bool, mean: tuple[float, ...],
                    std: tuple[float, ...], bgr: bool, rule: ResizeRule = MMDETECTION_RESIZE) -> TrainSample:
    """MMDetection's COCO training recipe for one data set sample: ``resize_sample`` (under
    ``rule``: Detectron2's for its models), optional horizontal flip, normalise."""
    resized = resize_sample(sample, scale, rule)
    height, width = resized["image"].shape[:2]

    def flip_boxes(boxes: torch.Tensor) -> torch.Tensor:
        return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1) if flip else boxes

    image = resized["image"][:, ::-1] if flip else resized["image"]
    target = {"boxes": flip_boxes(resized["boxes"]), "labels": resized["labels"],
              "crowd_boxes": flip_boxes(resized["crowd_boxes"])}
    if "masks" in resized:
        masks = resized["masks"]
        target["masks"] = torch.from_numpy(np.ascontiguousarray(masks[:, :, ::-1] if flip else masks))
    return TrainSample(normalize(np.ascontiguousarray(image), mean, std, bgr), target, (height, width))


def prepare_image(image: ImageInput, name: str, scale: tuple[int, int], mean: tuple[float, ...],
                  std: tuple[float, ...], bgr: bool, rule: ResizeRule = MMDETECTION_RESIZE
                  ) -> tuple[ResizedImage, torch.Tensor]:
    """Any input -> (resize record, normalised (3, h, w) float tensor): what both the PyTorch
    model and the ONNX runtime feed their network (``name`` is used in errors)."""
    resized = resize(to_rgb_uint8(image, name), scale, rule)
    return resized, normalize(resized.image, mean, std, bgr)
