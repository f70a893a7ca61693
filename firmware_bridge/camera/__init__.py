"""Camera: picamera2 on a Pi (imported lazily), a simulated camera elsewhere, and photo files with EXIF."""
from firmware_bridge.camera.base import Camera, Frame
from firmware_bridge.camera.errors import CameraError, CameraUnavailable, CaptureTimeout, CorruptFrame, PhotoWriteError
from firmware_bridge.camera.photo import SavedPhoto, capture_photo, save_photo
from firmware_bridge.camera.simulated import SimFault, SimulatedCamera

__all__ = ["Camera", "CameraError", "CameraUnavailable", "CaptureTimeout", "CorruptFrame", "Frame",
           "PhotoWriteError", "SavedPhoto", "SimFault", "SimulatedCamera", "capture_photo", "save_photo"]
