"""The copy of a proof photo that goes over the cellular link: a re-encoded JPEG bounded in size.

The original stays on the device (retention deletes it later); the cloud gets a copy no longer than
`long_side_px` on its long side and no bigger than `max_bytes`, with the original's EXIF (time, GPS). The JPEG
quality steps down until the copy fits; if even the lowest quality does not fit, the picture shrinks further.
Both sha256 go into the proof event, so the cloud can check the file it holds against the event.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from firmware_bridge.camera.photo import write_atomically

log = logging.getLogger(__name__)

QUALITY_STEPS = (85, 75, 65, 55, 45, 35)  # JPEG qualities tried in turn until the copy fits max_bytes
SHRINK_FACTOR = 0.8  # when even the lowest quality is too big: shrink the long side by this and try again
MIN_LONG_SIDE_PX = 320  # below this a proof photo is no proof: give up rather than shrink further
UPLOAD_SUFFIX = ".upload.jpg"  # the copy sits beside its original: {photo_id}.upload.jpg


class UploadCopyError(Exception):
    """The upload copy could not be made (unreadable original, cannot fit, cannot write)."""


@dataclass(frozen=True)
class UploadLimits:
    long_side_px: int = 1600  # a phone-class proof photo: the house number and the door are readable
    max_bytes: int = 300 * 1024


@dataclass(frozen=True)
class UploadCopy:
    path: Path
    sha256: str
    bytes: int
    width: int
    height: int
    quality: int


def upload_copy_path(original: Path) -> Path:
    return original.with_name(original.stem + UPLOAD_SUFFIX)


def _encode(image: Image.Image, quality: int, exif: bytes | None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=True, exif=exif or b"")
    return buf.getvalue()


def encode_within(image: Image.Image, limits: UploadLimits, exif: bytes | None) -> tuple[bytes, Image.Image, int]:
    """(JPEG bytes, the resized image, quality) of the best-quality encoding within the limits."""
    long_side = min(limits.long_side_px, max(image.size))
    while long_side >= MIN_LONG_SIDE_PX:
        scaled = image.copy()
        scaled.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        for quality in QUALITY_STEPS:
            data = _encode(scaled, quality, exif)
            if len(data) <= limits.max_bytes:
                return data, scaled, quality
        long_side = int(long_side * SHRINK_FACTOR)
    raise UploadCopyError(f"no encoding of at least {MIN_LONG_SIDE_PX} px fits {limits.max_bytes} bytes")


def make_upload_copy(original: Path, limits: UploadLimits) -> UploadCopy:
    """Write `{photo_id}.upload.jpg` beside the original (atomically) and describe it."""
    try:
        with Image.open(original) as image:
            exif = image.info.get("exif")
            image.load()
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise UploadCopyError(f"cannot read {original}: {exc}") from exc
    data, scaled, quality = encode_within(rgb, limits, exif)
    target = upload_copy_path(original)
    try:
        write_atomically(target, data)
    except OSError as exc:
        raise UploadCopyError(f"cannot write {target}: {exc.strerror or exc}") from exc
    log.info("upload copy of %s: %dx%d q%d, %d bytes", original.name, scaled.width, scaled.height, quality,
             len(data))
    return UploadCopy(target, hashlib.sha256(data).hexdigest(), len(data), scaled.width, scaled.height, quality)
