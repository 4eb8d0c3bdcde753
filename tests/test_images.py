"""Every supported image input becomes the same RGB uint8 (H, W, 3) array; bad inputs say why."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from cascade_rcnn import ImageError
from cascade_rcnn.data.images import list_images, read_image, to_rgb_uint8


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)


def check_rgb(result, expected):
    assert result.dtype == np.uint8
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)


# --- arrays and tensors --------------------------------------------------------------------------

def test_rgb_uint8_passes_through(rgb):
    check_rgb(to_rgb_uint8(rgb), rgb)


@pytest.mark.parametrize("shape", [(12, 17), (12, 17, 1)])
def test_grayscale_is_repeated_to_three_channels(rgb, shape):
    gray = rgb[:, :, 0].reshape(shape)
    check_rgb(to_rgb_uint8(gray), np.repeat(rgb[:, :, :1], 3, axis=2))


def test_rgba_drops_alpha(rgb):
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    check_rgb(to_rgb_uint8(rgba), rgb)


def test_uint16_is_shifted_to_8_bit(rng):
    deep = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    check_rgb(to_rgb_uint8(deep), (deep >> 8).astype(np.uint8))


def test_torch_chw_uint8_and_float_match_numpy(rgb):
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    check_rgb(to_rgb_uint8(chw), rgb)
    check_rgb(to_rgb_uint8(chw.float() / 255), rgb)
    check_rgb(to_rgb_uint8(chw.double() / 255), rgb)
    check_rgb(to_rgb_uint8(chw[:1]), np.repeat(rgb[:, :, :1], 3, axis=2))
    check_rgb(to_rgb_uint8(torch.cat([chw, chw[:1]])), rgb)  # RGBA


def test_float_tensor_rounds_to_nearest():
    values = torch.tensor([0.0, 0.6 / 255, 0.4 / 255, 1.0, 254.6 / 255]).view(1, 1, 5).expand(3, 1, 5)
    assert to_rgb_uint8(values)[0, :, 0].tolist() == [0, 1, 0, 255, 255]


@pytest.mark.parametrize("tensor", [
    torch.full((3, 4, 4), 1.01), torch.full((3, 4, 4), -0.01), torch.full((3, 4, 4), 255.0),
    torch.full((3, 4, 4), float("nan")),
], ids=["above-1", "negative", "0-255-floats", "nan"])
def test_float_tensor_outside_unit_range_is_rejected(tensor):
    with pytest.raises(ImageError, match="image"):
        to_rgb_uint8(tensor)


@pytest.mark.parametrize("array", [
    np.zeros((4, 5, 2), np.uint8), np.zeros((4, 5, 5), np.uint8), np.zeros((1, 4, 5, 3), np.uint8),
    np.zeros((7,), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.uint8),
    np.zeros((4, 5, 3), np.float32), np.zeros((4, 5, 3), np.int32),
    torch.zeros((2, 4, 5), dtype=torch.uint8), torch.zeros((5, 6, 3), dtype=torch.uint8),
    torch.zeros((1, 3, 4, 5), dtype=torch.uint8), torch.zeros((3, 4, 5), dtype=torch.int64),
    torch.zeros((3, 0, 5), dtype=torch.uint8), [[0, 1], [2, 3]],
], ids=["np-2ch", "np-5ch", "np-4d", "np-1d", "np-empty", "np-empty-2d", "np-float", "np-int32",
        "t-2ch", "t-hwc", "t-4d", "t-int64", "t-empty", "list"])
def test_wrong_shapes_and_types_are_rejected(array):
    with pytest.raises(ImageError, match="photo"):
        to_rgb_uint8(array, name="photo")


# --- PIL -----------------------------------------------------------------------------------------

def test_pil_modes(rgb):
    check_rgb(to_rgb_uint8(Image.fromarray(rgb)), rgb)
    check_rgb(to_rgb_uint8(Image.fromarray(rgb[:, :, 1])), np.repeat(rgb[:, :, 1:2], 3, axis=2))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])
    check_rgb(to_rgb_uint8(Image.fromarray(rgba)), rgb)
    palette = Image.fromarray(rgb).convert("P")
    check_rgb(to_rgb_uint8(palette), np.asarray(palette.convert("RGB")))
    gray_alpha = Image.fromarray(rgba).convert("LA")
    check_rgb(to_rgb_uint8(gray_alpha), np.repeat(np.asarray(gray_alpha)[:, :, :1], 3, axis=2))


def test_pil_16_bit_grayscale(rng):
    deep = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    image = Image.fromarray(deep)
    assert image.mode.startswith("I;16")
    expected = np.repeat((deep >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    check_rgb(to_rgb_uint8(image), expected)


# --- files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, params, lossless", [
    (".png", [], True), (".bmp", [], True), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], True),
    (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95], False),
])
def test_files_written_by_opencv_read_as_rgb(tmp_path, suffix, params, lossless):
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :10, 0] = 250  # red left third, green middle, blue right: catches a BGR/RGB swap
    image[:, 10:20, 1] = 250
    image[:, 20:, 2] = 250
    path = tmp_path / f"colors{suffix}"
    assert cv2.imwrite(str(path), image[:, :, ::-1], params)
    result = to_rgb_uint8(path)
    assert result.shape == (20, 30, 3) and result.dtype == np.uint8
    if lossless:
        np.testing.assert_array_equal(result, image)
    else:
        assert np.abs(result.astype(int) - image).mean() < 8
        assert result[10, 3].argmax() == 0 and result[10, 15].argmax() == 1 and result[10, 27].argmax() == 2
    assert np.array_equal(to_rgb_uint8(str(path)), result)


def test_files_written_by_pil_gray_rgba_and_16_bit(tmp_path, rgb, rng):
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    check_rgb(read_image(tmp_path / "gray.png"), np.repeat(rgb[:, :, :1], 3, axis=2))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 3, np.uint8)])).save(tmp_path / "rgba.png")
    check_rgb(read_image(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb).save(tmp_path / "lossless.webp", lossless=True)
    check_rgb(read_image(tmp_path / "lossless.webp"), rgb)
    deep = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    check_rgb(read_image(tmp_path / "deep.png"), np.repeat((deep >> 8).astype(np.uint8)[:, :, None], 3, axis=2))


def test_jpeg_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    result = read_image(tmp_path / "rotated.jpg")
    assert result.shape == (40, 20, 3)
    expected = np.rot90(stored, k=-1)  # clockwise: the left half becomes the top half
    assert np.abs(result.astype(int) - expected).mean() < 4
    assert result[:15].min() > 200 and result[25:].max() < 50


@pytest.mark.parametrize("content", [b"", None, "random"], ids=["empty", "missing", "corrupt"])
def test_unreadable_files_name_the_path(tmp_path, content):
    path = tmp_path / "photo.jpg"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(2048))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        to_rgb_uint8(path)
    assert str(path) in str(info.value)


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path)


def test_list_images_sorted_recursive_and_skips_other_files(tmp_path):
    for name in ("b.png", "a.jpg", "C.JPEG", "sub/d.webp", "sub/deeper/e.bmp", "notes.txt", "x.pth",
                 "sub/f.tif", "noext"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    found = list_images(tmp_path)
    assert found == sorted(found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "C.JPEG", "a.jpg", "b.png", "sub/d.webp", "sub/deeper/e.bmp", "sub/f.tif"]
    assert list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
