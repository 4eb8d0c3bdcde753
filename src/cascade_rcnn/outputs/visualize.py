"""Drawing detections: translucent masks, boxes, class names and scores."""
from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw

from .detections import Detections


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw(image: np.ndarray, detections: Detections, mask_alpha: float = 0.45) -> Image.Image:
    """RGB uint8 (H, W, 3) image with ``detections`` drawn on it, as a PIL image."""
    canvas = image.astype(np.float32)
    labels = detections.labels.tolist()
    if detections.masks is not None:
        for mask, label in zip(detections.masks.numpy(), labels):
            canvas[mask] = canvas[mask] * (1 - mask_alpha) + np.array(class_color(label)) * mask_alpha
    picture = Image.fromarray(canvas.round().astype(np.uint8))
    pen = ImageDraw.Draw(picture)
    line = max(1, round(max(image.shape[:2]) / 400))
    for box, score, label in zip(detections.boxes.tolist(), detections.scores.tolist(), labels):
        color = class_color(label)
        pen.rectangle(box, outline=color, width=line)
        text = f"{detections.class_names[label]} {score:.2f}"
        left, top, right, bottom = pen.textbbox((box[0], box[1]), text)
        top_y = max(box[1] - (bottom - top) - 2, 0)
        pen.rectangle((box[0], top_y, box[0] + right - left + 2, top_y + bottom - top + 2), fill=color)
        pen.text((box[0] + 1, top_y), text, fill=(0, 0, 0))
    return picture


def draw_ground_truth(sample: dict, class_names: tuple[str, ...]) -> Image.Image:
    """A data set sample (``image``, ``boxes``, ``labels``, optional ``masks``) drawn like
    detections of score 1, for checking annotations by eye."""
    labels = torch.as_tensor(sample["labels"])
    masks = sample.get("masks")
    detections = Detections(torch.as_tensor(sample["boxes"]), torch.ones(len(labels)), labels, tuple(class_names),
                            sample["image"].shape[:2], None if masks is None else torch.as_tensor(masks).bool())
    return draw(sample["image"], detections)
