"""The agent's proof-photo step as assembled from config: simulated camera -> JPEG with EXIF -> real model."""
from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import piexif

from device.agent import ProofPhoto
from device.assembly import _photo_taker
from device.config import load_config
from device.contract.domain import Package, Stop, Verdict
from device.vision.synth import jpeg_bytes, render_photo
from firmware_bridge.fix import Fix, FixMode

PHOTO_SEED = 18  # a seed whose "12A" photo the shipped model reads (checked below through the real check)


def test_take_photo_captures_checks_and_hashes(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "door.jpg").write_bytes(jpeg_bytes(render_photo(np.random.default_rng(PHOTO_SEED), "12A")))
    config_file = tmp_path / "flexedge.toml"
    config_file.write_text(f'[camera]\nbackend = "simulated"\nsim_dir = "{frames}"\n')
    config = load_config(config_file, env={})
    take_photo, close = _photo_taker(config, tmp_path)
    stop = Stop("S1", "1 High St", "12A", 52.0, 13.0, (Package("PKG1"),))
    fix = Fix(time=datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc), lat=52.0, lon=13.0, mode=FixMode.FIX_3D)
    try:
        photo = asyncio.run(take_photo(stop, fix))
    finally:
        close()
    assert isinstance(photo, ProofPhoto)
    data = Path(photo.path).read_bytes()
    assert Path(photo.path).parent == tmp_path / "photos"
    assert hashlib.sha256(data).hexdigest() == photo.sha256
    assert piexif.load(data)["GPS"][piexif.GPSIFD.GPSLatitudeRef] == b"N"
    assert photo.verdict is Verdict.MATCH and photo.read == "12A", photo
    assert photo.box is not None and photo.ms > 0
    copy = Path(photo.upload_path).read_bytes()  # the bounded copy for the cloud, EXIF kept
    assert Path(photo.upload_path) == tmp_path / "photos" / f"{photo.photo_id}.upload.jpg"
    assert hashlib.sha256(copy).hexdigest() == photo.upload_sha256 != photo.sha256
    assert len(copy) == photo.upload_bytes <= 300 * 1024 and photo.bytes == len(data)
    assert piexif.load(copy)["GPS"][piexif.GPSIFD.GPSLatitudeRef] == b"N"
    other = Stop("S2", "14 High St", "14", 52.0, 13.0, (Package("PKG2"),))
    take_photo, close = _photo_taker(config, tmp_path)
    try:
        assert asyncio.run(take_photo(other, fix)).verdict is not Verdict.MATCH
    finally:
        close()
