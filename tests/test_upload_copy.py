"""The upload copy of a proof photo: bounded long side and bytes, EXIF kept, written beside the original."""
from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from device.upload_copy import UploadCopyError, UploadLimits, make_upload_copy, upload_copy_path
from device.vision.synth import render_photo
from firmware_bridge.camera.photo import exif_bytes
from firmware_bridge.fix import Fix, FixMode

CAMERA_SIZE = (2304, 1296)  # the Pi Camera Module 3 frame the agent saves


def camera_photo(path: Path, seed: int = 3, size: tuple[int, int] = CAMERA_SIZE) -> bytes:
    """A camera-sized photo with sensor noise (a clean render compresses far better than a real photo)."""
    rng = np.random.default_rng(seed)
    image = render_photo(rng, "12A", size=size).image.astype(np.int16)
    noisy = np.clip(image + rng.normal(0, 9, image.shape), 0, 255).astype(np.uint8)
    fix = Fix(time=datetime(2026, 5, 4, 10, 0, tzinfo=timezone.utc), lat=47.61, lon=-122.34, mode=FixMode.FIX_3D)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=90, exif=exif_bytes(fix.time, fix))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_copy_is_bounded_and_keeps_exif(tmp_path: Path) -> None:
    original = tmp_path / "P1.jpg"
    data = camera_photo(original)
    assert len(data) > 300 * 1024  # the original would not fit the bound: the copy must be re-encoded
    copy = make_upload_copy(original, UploadLimits())
    assert copy.path == upload_copy_path(original) == tmp_path / "P1.upload.jpg"
    stored = copy.path.read_bytes()
    assert len(stored) == copy.bytes <= 300 * 1024
    assert hashlib.sha256(stored).hexdigest() == copy.sha256
    with Image.open(copy.path) as image:
        assert max(image.size) == 1600 and image.size == (copy.width, copy.height)
        exif = piexif.load(image.info["exif"])
    assert exif["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"2026:05:04 10:00:00"
    assert exif["GPS"][piexif.GPSIFD.GPSLatitudeRef] == b"N"
    assert original.read_bytes() == data  # the original is untouched


def test_tight_byte_bound_lowers_quality_then_size(tmp_path: Path) -> None:
    original = tmp_path / "P2.jpg"
    camera_photo(original, seed=4)
    copy = make_upload_copy(original, UploadLimits(long_side_px=1600, max_bytes=40 * 1024))
    assert copy.bytes <= 40 * 1024
    assert copy.width < 1600  # the lowest quality at 1600 px did not fit: it shrank


def test_small_photo_is_not_enlarged(tmp_path: Path) -> None:
    original = tmp_path / "P3.jpg"
    camera_photo(original, size=(640, 480))
    copy = make_upload_copy(original, UploadLimits())
    assert (copy.width, copy.height) == (640, 480)


def test_unreadable_or_impossible(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg")
    with pytest.raises(UploadCopyError, match="cannot read"):
        make_upload_copy(junk, UploadLimits())
    original = tmp_path / "P4.jpg"
    camera_photo(original, size=(640, 480))
    with pytest.raises(UploadCopyError, match="fits"):
        make_upload_copy(original, UploadLimits(max_bytes=1000))
