"""Bad photos give a clear ImageError (and a clean CLI exit), never a crash or a Pillow exception."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.vision.check import HouseNumberChecker
from device.vision.errors import ImageError
from device.vision.image import load_image
from device.vision.synth import jpeg_bytes, render_photo


@pytest.fixture(scope="module")
def good_jpeg() -> bytes:
    return jpeg_bytes(render_photo(np.random.default_rng(5)))


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


def test_good_jpeg_loads_at_its_own_size(good_jpeg: bytes) -> None:
    loaded = load_image(good_jpeg)
    assert (loaded.width, loaded.height) == (640, 480)
    assert loaded.gray.shape == (480, 640) and loaded.rgb.shape == (480, 640, 3)


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4056, 3040), (90, 120, 150)).save(buf, "JPEG")
    loaded = load_image(buf.getvalue())
    assert (loaded.width, loaded.height) == (4056, 3040)
    assert max(loaded.gray.shape) <= 1280
    assert loaded.scale == pytest.approx(loaded.gray.shape[1] / 4056)


def test_exif_orientation_is_applied() -> None:
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.new("RGB", (200, 100), (10, 20, 30)).save(buf, "JPEG", exif=exif)
    loaded = load_image(buf.getvalue())
    assert (loaded.width, loaded.height) == (100, 200)


@pytest.mark.parametrize("case, reason", [
    ("truncated_jpeg", "corrupt"),
    ("corrupt_jpeg", "corrupt"),
    ("one_pixel", "too_small"),
    ("fifty_megapixels", "too_large"),
    ("not_an_image", "not_an_image"),
    ("empty", "empty"),
])
def test_bad_input_gives_a_clear_error(case: str, reason: str, good_jpeg: bytes, tmp_path: Path) -> None:
    data = {
        "truncated_jpeg": lambda: good_jpeg[: len(good_jpeg) // 2],
        "corrupt_jpeg": lambda: good_jpeg[:150] + bytes(b ^ 0xFF for b in good_jpeg[150:600]) + good_jpeg[600:],
        "one_pixel": lambda: _png(1, 1),
        "fifty_megapixels": lambda: _png(10000, 5000),
        "not_an_image": lambda: b"%PDF-1.4 this is a delivery note, not a photo\n" * 50,
        "empty": lambda: b"",
    }[case]()
    path = tmp_path / f"{case}.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.reason == reason
    assert str(path) in str(info.value)


def test_missing_file_and_bad_array(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.reason == "unreadable_file"
    with pytest.raises(ImageError):
        load_image(np.zeros((100, 100), np.float32))


def test_checker_raises_image_error_not_a_crash(checker: HouseNumberChecker, good_jpeg: bytes) -> None:
    with pytest.raises(ImageError):
        checker.check(good_jpeg[:1000], "12")
    with pytest.raises(ImageError):
        checker.check(_png(1, 1), "12")
    # and still works afterwards
    assert checker.check(good_jpeg, "12").verdict in ("match", "mismatch", "unreadable")
