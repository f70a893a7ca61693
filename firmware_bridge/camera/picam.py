"""The Raspberry Pi camera through picamera2 (libcamera). picamera2 is imported only when opened.

Install on the Pi with the `pi` extra (or Debian's python3-picamera2).
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

from firmware_bridge.camera.base import Frame
from firmware_bridge.camera.errors import CameraUnavailable, CaptureTimeout

log = logging.getLogger(__name__)

CAPTURE_TIMEOUT_S = 5.0  # a still should take well under a second; longer means the pipeline is stuck


class PiCamera:
    def __init__(self, width: int, height: int, *, autofocus: bool = True, exposure_us: int = 0,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.width, self.height = width, height
        self.autofocus = autofocus
        self.exposure_us = exposure_us
        self._clock = clock
        self._cam: Any = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # Pi only
        except ImportError as exc:
            raise CameraUnavailable("picamera2 is not installed (pip install '.[pi]' on the Pi)") from exc
        try:
            cam = Picamera2()
            cam.configure(cam.create_still_configuration(main={"size": (self.width, self.height),
                                                               "format": "RGB888"}))
            controls: dict[str, Any] = {}
            if self.autofocus:
                controls["AfMode"] = 2  # continuous (libcamera controls.AfModeEnum.Continuous)
            if self.exposure_us:
                controls.update(AeEnable=False, ExposureTime=self.exposure_us)
            if controls:
                cam.set_controls(controls)
            cam.start()
        except (RuntimeError, IndexError, OSError) as exc:  # no camera: IndexError from the camera list
            raise CameraUnavailable(f"cannot open the Pi camera: {exc}") from exc
        self._cam = cam

    def capture(self) -> Frame:
        if self._cam is None:
            raise CameraUnavailable("camera not open")
        try:
            if self.autofocus:
                self._cam.autofocus_cycle()
            job = self._cam.capture_array("main", wait=False)
            array = self._cam.wait(job, timeout=CAPTURE_TIMEOUT_S)
        except TimeoutError as exc:
            raise CaptureTimeout(f"no frame within {CAPTURE_TIMEOUT_S} s") from exc
        except (RuntimeError, OSError) as exc:
            raise CameraUnavailable(f"capture failed: {exc}") from exc
        # picamera2's "RGB888" is B, G, R in memory order.
        return Frame(array[:, :, ::-1].copy(), self._clock())

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.close()
            finally:
                self._cam = None
