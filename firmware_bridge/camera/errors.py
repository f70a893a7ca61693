"""Camera errors. picamera2/libcamera and Pillow errors are converted at this boundary."""
from __future__ import annotations


class CameraError(Exception):
    """Base of the camera errors."""


class CameraUnavailable(CameraError):
    """No camera (not connected, picamera2 missing, or unplugged); reopen to retry."""


class CaptureTimeout(CameraError):
    """The camera did not return a frame in time."""


class CorruptFrame(CameraError):
    """The camera returned data that is not a complete image."""


class PhotoWriteError(CameraError):
    """The photo could not be written to the photo directory (disk full, permissions)."""
