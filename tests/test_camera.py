"""Simulated camera with faults; photos written atomically with EXIF time and GPS; sha256 into the store."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from device.store import EventStore
from device.vision.quality import RetakeReason, assess
from device.vision.synth import jpeg_bytes, render_photo
from firmware_bridge.camera import (
    CameraUnavailable,
    CaptureTimeout,
    CorruptFrame,
    PhotoWriteError,
    SimFault,
    SimulatedCamera,
    capture_photo,
)
from firmware_bridge.camera.picam import PiCamera
from firmware_bridge.fix import Fix, FixMode

TAKEN = datetime(2026, 11, 24, 14, 5, 7, tzinfo=timezone.utc)
FIX = Fix(time=TAKEN, lat=48.137154, lon=-11.576124, mode=FixMode.FIX_3D, alt=519.5, eph=4.2)


@pytest.fixture
def sim_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(render_photo(rng)))
    (folder / "notes.txt").write_text("ignored")
    return folder


@pytest.fixture
def camera(sim_dir: Path) -> SimulatedCamera:
    cam = SimulatedCamera(sim_dir, clock=lambda: TAKEN)
    cam.open()
    return cam


def test_capture_writes_jpeg_with_exif_and_records_sha(camera: SimulatedCamera, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    saved = capture_photo(camera, photos, FIX)
    assert saved.path.parent == photos and saved.path.name == f"{saved.photo_id}.jpg"
    data = saved.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == saved.sha256 and len(data) == saved.bytes
    assert saved.taken_at == "2026-11-24T14:05:07.000Z"
    assert [p.name for p in photos.iterdir()] == [saved.path.name]  # no temporary file left
    exif = piexif.load(data)
    assert exif["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"2026:11:24 14:05:07"
    gps = exif["GPS"]
    assert gps[piexif.GPSIFD.GPSLatitudeRef] == b"N" and gps[piexif.GPSIFD.GPSLongitudeRef] == b"W"
    (d, m, s) = (a / b for a, b in gps[piexif.GPSIFD.GPSLatitude])
    assert d + m / 60 + s / 3600 == pytest.approx(48.137154, abs=1e-6)
    (d, m, s) = (a / b for a, b in gps[piexif.GPSIFD.GPSLongitude])
    assert d + m / 60 + s / 3600 == pytest.approx(11.576124, abs=1e-6)
    assert gps[piexif.GPSIFD.GPSAltitude][0] / gps[piexif.GPSIFD.GPSAltitude][1] == pytest.approx(519.5)
    assert gps[piexif.GPSIFD.GPSDateStamp] == b"2026:11:24"
    with Image.open(saved.path) as img:
        assert img.size == (640, 480)

    with EventStore(tmp_path / "events.db") as store:
        store.state.record_photo(saved.photo_id, str(saved.path), saved.sha256, stop_id="S1", taken_at=saved.taken_at)
        row = store.state.photo(saved.photo_id)
    assert row["sha256"] == saved.sha256 and row["stop_id"] == "S1"


def test_no_fix_means_no_gps_tags(camera: SimulatedCamera, tmp_path: Path) -> None:
    saved = capture_photo(camera, tmp_path, Fix(time=None, lat=None, lon=None))
    assert piexif.load(saved.path.read_bytes())["GPS"] == {}


def test_frames_cycle_through_the_folder(camera: SimulatedCamera) -> None:
    first = [camera.capture().rgb for _ in range(4)]
    assert np.array_equal(first[0], first[3]) and not np.array_equal(first[0], first[1])


def test_faults_then_recovery(camera: SimulatedCamera) -> None:
    camera.inject(SimFault.CORRUPT_FRAME, SimFault.TIMEOUT, SimFault.UNPLUGGED)
    with pytest.raises(CorruptFrame):
        camera.capture()
    with pytest.raises(CaptureTimeout):
        camera.capture()
    with pytest.raises(CameraUnavailable):
        camera.capture()
    with pytest.raises(CameraUnavailable):  # stays unplugged until reopened
        camera.capture()
    camera.open()
    assert camera.capture().size == (640, 480)
    assert camera.faults_injected == 3


def test_dark_and_defocused_frames_fail_the_quality_gate(camera: SimulatedCamera) -> None:
    camera.inject(SimFault.DARK, SimFault.DEFOCUSED)
    dark = camera.capture()
    blurred = camera.capture()
    assert RetakeReason.TOO_DARK in assess(np.asarray(Image.fromarray(dark.rgb).convert("L"))).reasons
    assert RetakeReason.BLURRY in assess(np.asarray(Image.fromarray(blurred.rgb).convert("L"))).reasons


def test_random_faults_are_seeded(sim_dir: Path) -> None:
    def run() -> list[str]:
        cam = SimulatedCamera(sim_dir, fault_rate=0.5, seed=7)
        cam.open()
        outcome = []
        for _ in range(12):
            try:
                cam.capture()
                outcome.append("ok")
            except (CorruptFrame, CaptureTimeout, CameraUnavailable) as exc:
                outcome.append(type(exc).__name__)
                cam.open()
        return outcome
    first = run()
    assert first == run() and "ok" in first and len(set(first)) > 1


def test_missing_folder_and_unwritable_photo_dir(tmp_path: Path, camera: SimulatedCamera) -> None:
    with pytest.raises(CameraUnavailable):
        SimulatedCamera(tmp_path / "nothing").open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraUnavailable):
        SimulatedCamera(empty).open()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PhotoWriteError):
        capture_photo(camera, blocker / "photos")


def test_pi_camera_without_picamera2_is_unavailable() -> None:
    camera = PiCamera(2304, 1296)
    with pytest.raises(CameraUnavailable, match="picamera2"):
        camera.open()
    with pytest.raises(CameraUnavailable):
        camera.capture()


def test_camera_from_config(tmp_path: Path, sim_dir: Path) -> None:
    from device.config import load_config
    from device.photos import camera_from_config, photo_dir

    path = tmp_path / "c.toml"
    path.write_text(f'[camera]\nbackend = "simulated"\nsim_dir = "{sim_dir}"\n')
    config = load_config(path, env={})
    camera = camera_from_config(config.camera)
    camera.open()
    saved = capture_photo(camera, photo_dir(config.camera, tmp_path))
    assert saved.path.parent == tmp_path / "photos"
    pi = load_config(path, env={"FLEXEDGE_CAMERA__BACKEND": "picamera2", "FLEXEDGE_CAMERA__EXPOSURE_US": "8000"})
    camera = camera_from_config(pi.camera)
    assert isinstance(camera, PiCamera) and camera.exposure_us == 8000 and (camera.width, camera.height) == (2304, 1296)


def test_live_folder_serves_the_scene_in_view(tmp_path: Path) -> None:
    """Live mode: each capture takes the next new file; with nothing new, the last scene again."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "view"
    folder.mkdir()

    def show(name: str, text: str) -> None:
        (folder / name).write_bytes(jpeg_bytes(render_photo(rng, text=text)))

    show("0001.jpg", "12")
    camera = SimulatedCamera(folder, live=True)
    camera.open()
    first = camera.capture().rgb
    assert np.array_equal(camera.capture().rgb, first)  # nothing new: the same scene
    show("0002.jpg", "14")
    show("0003.jpg", "16")
    second, third = camera.capture().rgb, camera.capture().rgb
    assert not np.array_equal(second, first) and not np.array_equal(third, second)
    assert np.array_equal(camera.capture().rgb, third)
    for old in folder.iterdir():
        old.unlink()
    with pytest.raises(CaptureTimeout):
        camera.capture()
