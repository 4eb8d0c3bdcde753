"""Any supported image input -> RGB uint8 (H, W, 3) numpy array.

Conversions, chosen to match what MMDetection sees when it reads the same file with OpenCV:
- files: decoded by OpenCV with EXIF orientation applied; grayscale is repeated to 3 channels,
  the alpha channel of RGBA is dropped (not composited), 16-bit is scaled to 8 bit (value >> 8);
- numpy: (H, W) or (H, W, 1/3/4) arrays in RGB(A) order, uint8 or uint16 (>> 8);
- torch: (C, H, W) tensors with C in 1/3/4, uint8, or float in [0, 1] (x 255, rounded);
- PIL images: converted the same way as numpy arrays.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch

from ..errors import CascadeRCNNError

try:
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow is a dependency, kept optional for this import
    Image = None

ImageInput = Union[str, Path, np.ndarray, torch.Tensor, "Image.Image"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(CascadeRCNNError, ValueError):
    """An input that is not a usable image; the message names the file or input."""


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a file, EXIF orientation applied."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt, empty or unsupported format)")
    return np.ascontiguousarray(image[:, :, ::-1])


# EXIF orientations that turn the stored picture by 90 degrees (OpenCV applies them on decode).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def image_file_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as ``read_image`` will return it (EXIF orientation
    applied), from its header only: no pixel is decoded. Raises ImageError naming the file if it
    is not a readable image."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1) if image.format == "JPEG" else 1
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: not a readable image ({error})") from None
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


def to_rgb_uint8(image: ImageInput, name: str = "image") -> np.ndarray:
    """Normalise any supported input to RGB uint8 (H, W, 3); ``name`` is used in errors."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if Image is not None and isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return _array_to_rgb(np.asarray(image).astype(np.uint16), name)
        return _array_to_rgb(np.asarray(image.convert("RGBA" if "A" in image.mode else "RGB")), name)
    if isinstance(image, torch.Tensor):
        return _tensor_to_rgb(image, name)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, name)
    raise ImageError(f"{name}: unsupported input type {type(image).__name__} "
                     "(expected a path, PIL image, numpy HWC array or torch CHW tensor)")


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: expected an (H, W) or (H, W, 1|3|4) array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{name}: empty image of shape {array.shape}")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageError(f"{name}: numpy images must be uint8 or uint16, got {array.dtype}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _tensor_to_rgb(tensor: torch.Tensor, name: str) -> np.ndarray:
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ImageError(f"{name}: expected a (C, H, W) tensor with C in 1/3/4, got {tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        if not torch.isfinite(tensor).all():
            raise ImageError(f"{name}: float image contains NaN or infinity")
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise ImageError(f"{name}: float images must be in [0, 1], got range "
                             f"[{tensor.min().item():.3g}, {tensor.max().item():.3g}]")
        tensor = (tensor * 255).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        raise ImageError(f"{name}: tensor images must be uint8 or float in [0, 1], got {tensor.dtype}")
    return _array_to_rgb(tensor.permute(1, 2, 0).numpy(), name)


def list_images(path: str | Path) -> list[Path]:
    """The image files in a folder (sorted, recursive), or the path itself if it is a file."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [path]
