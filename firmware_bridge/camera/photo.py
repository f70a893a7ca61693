"""A captured frame becomes a JPEG with EXIF time and GPS, written atomically; its sha256 is returned
so the caller can index it and later prove the upload is the same file."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import piexif
import uuid6
from PIL import Image

from firmware_bridge.camera.base import Camera, Frame
from firmware_bridge.camera.errors import PhotoWriteError
from firmware_bridge.fix import Fix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedPhoto:
    photo_id: str  # UUIDv7, also the file name stem
    path: Path
    sha256: str
    bytes: int
    taken_at: str  # ISO 8601 UTC


def _rational(value: float, denominator: int = 10000) -> tuple[int, int]:
    f = Fraction(value).limit_denominator(denominator)
    return f.numerator, f.denominator


def _dms(degrees: float) -> tuple[tuple[int, int], ...]:
    degrees = abs(degrees)
    d = int(degrees)
    m = int((degrees - d) * 60)
    s = (degrees - d - m / 60) * 3600
    return (d, 1), (m, 1), (round(s * 1000), 1000)


def exif_bytes(taken_at: datetime, fix: Fix | None) -> bytes:
    utc = taken_at.astimezone(timezone.utc)
    stamp = utc.strftime("%Y:%m:%d %H:%M:%S").encode()
    exif: dict[str, dict[int, object]] = {
        "0th": {piexif.ImageIFD.DateTime: stamp, piexif.ImageIFD.Software: b"flexedge"},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: stamp, piexif.ExifIFD.OffsetTimeOriginal: b"+00:00"},
        "GPS": {},
    }
    if fix is not None and fix.has_position and fix.lat is not None and fix.lon is not None:
        gps = exif["GPS"]
        gps[piexif.GPSIFD.GPSVersionID] = (2, 3, 0, 0)
        gps[piexif.GPSIFD.GPSLatitudeRef] = b"N" if fix.lat >= 0 else b"S"
        gps[piexif.GPSIFD.GPSLatitude] = _dms(fix.lat)
        gps[piexif.GPSIFD.GPSLongitudeRef] = b"E" if fix.lon >= 0 else b"W"
        gps[piexif.GPSIFD.GPSLongitude] = _dms(fix.lon)
        if fix.alt is not None:
            gps[piexif.GPSIFD.GPSAltitudeRef] = 0 if fix.alt >= 0 else 1
            gps[piexif.GPSIFD.GPSAltitude] = _rational(abs(fix.alt), 100)
        if fix.eph is not None:
            gps[piexif.GPSIFD.GPSHPositioningError] = _rational(fix.eph, 100)
        if fix.time is not None:
            t = fix.time.astimezone(timezone.utc)
            gps[piexif.GPSIFD.GPSTimeStamp] = ((t.hour, 1), (t.minute, 1), (t.second * 1000 + t.microsecond // 1000,
                                                                            1000))
            gps[piexif.GPSIFD.GPSDateStamp] = t.strftime("%Y:%m:%d").encode()
    data: bytes = piexif.dump(exif)
    return data


def write_atomically(final: Path, data: bytes) -> None:
    """Write to a temporary file beside `final`, fsync, rename into place, fsync the folder: never half a
    file under the final name. Raises OSError."""
    folder = final.parent
    tmp_name = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=final.suffix, dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, final)
        tmp_name = None
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def save_photo(frame: Frame, photo_dir: Path, fix: Fix | None = None, quality: int = 90) -> SavedPhoto:
    """Encode, write to a temporary file, fsync, rename into place, fsync the folder: never half a photo."""
    photo_dir = Path(photo_dir)
    photo_id = str(uuid6.uuid7())
    buf = io.BytesIO()
    Image.fromarray(frame.rgb).save(buf, "JPEG", quality=quality, exif=exif_bytes(frame.taken_at, fix))
    data = buf.getvalue()
    final = photo_dir / f"{photo_id}.jpg"
    try:
        write_atomically(final, data)
    except OSError as exc:
        raise PhotoWriteError(f"cannot write photo to {photo_dir}: {exc.strerror or exc}") from exc
    taken_at = frame.taken_at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    saved = SavedPhoto(photo_id, final, hashlib.sha256(data).hexdigest(), len(data), taken_at)
    log.info("photo %s saved (%d bytes)", photo_id, len(data))
    return saved


def capture_photo(camera: Camera, photo_dir: Path, fix: Fix | None = None, quality: int = 90) -> SavedPhoto:
    return save_photo(camera.capture(), photo_dir, fix, quality)
