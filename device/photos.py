"""Builds the configured camera and knows where photos go (config -> firmware_bridge.camera)."""
from __future__ import annotations

from pathlib import Path

from device.config import CameraBackend, CameraSection, PhotosSection
from device.upload_copy import UploadLimits
from firmware_bridge.camera import Camera, SimulatedCamera
from firmware_bridge.camera.picam import PiCamera


def camera_from_config(section: CameraSection) -> Camera:
    if section.backend is CameraBackend.PICAMERA2:
        return PiCamera(section.width, section.height, autofocus=section.autofocus, exposure_us=section.exposure_us)
    return SimulatedCamera(Path(section.sim_dir), live=section.live_scene)


def photo_dir(section: CameraSection, data_dir: Path) -> Path:
    return Path(section.photo_dir).expanduser() if section.photo_dir else data_dir / "photos"


def upload_limits(section: PhotosSection) -> UploadLimits:
    return UploadLimits(long_side_px=section.upload_long_side_px, max_bytes=section.upload_max_kb * 1024)
