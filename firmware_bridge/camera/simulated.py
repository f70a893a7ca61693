"""A simulated camera serving image files from a folder, with the faults a real camera shows.

Faults are injected for the next captures (`inject`) or drawn at `fault_rate` from a seeded generator:
a corrupt (truncated) frame, a capture timeout, an unplugged camera (until reopened), and frames that are
too dark or out of focus (which the photo quality gate must catch).
"""
from __future__ import annotations

import enum
import io
import logging
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from firmware_bridge.camera.base import Frame
from firmware_bridge.camera.errors import CameraUnavailable, CaptureTimeout, CorruptFrame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class SimFault(enum.Enum):
    CORRUPT_FRAME = "corrupt_frame"  # the sensor pipeline hands over a truncated JPEG
    TIMEOUT = "timeout"  # no frame in time
    UNPLUGGED = "unplugged"  # ribbon cable out: every capture fails until open() again
    DARK = "dark"  # lens covered / night without light
    DEFOCUSED = "defocused"  # autofocus hunted and missed


class SimulatedCamera:
    def __init__(self, folder: Path, *, fault_rate: float = 0.0, seed: int = 0, live: bool = False,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        """`live`: the folder is what the lens sees now. Each capture takes the next file (by name) after the
        last one served, or the last one again when nothing new arrived (a bench or demo puts the scene
        in front of the camera by writing files); otherwise the files found at open() are served in a loop."""
        self.folder = Path(folder)
        self.live = live
        self._last_served: str | None = None
        self.fault_rate = fault_rate
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._pending: deque[SimFault] = deque()
        self._files: list[Path] = []
        self._next = 0
        self._open = False
        self._unplugged = False
        self.captures = 0
        self.faults_injected = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise CameraUnavailable(f"simulated camera folder not found: {self.folder}")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraUnavailable(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        self._open = True
        self._unplugged = False

    def close(self) -> None:
        self._open = False

    def inject(self, *faults: SimFault) -> None:
        """The next captures fail or degrade in this order."""
        self._pending.extend(faults)

    def _fault(self) -> SimFault | None:
        if self._pending:
            return self._pending.popleft()
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return list(SimFault)[int(self._rng.integers(len(SimFault)))]
        return None

    def _next_live_file(self) -> Path:
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CaptureTimeout(f"nothing in view: no images in {self.folder}")
        newer = [p for p in files if self._last_served is None or p.name > self._last_served]
        path = newer[0] if newer else next((p for p in files if p.name == self._last_served), files[-1])
        self._last_served = path.name
        return path

    def capture(self) -> Frame:
        if not self._open or self._unplugged:
            raise CameraUnavailable("camera not open" if not self._open else "camera disconnected")
        path = self._next_live_file() if self.live else self._files[self._next % len(self._files)]
        self._next += 1
        self.captures += 1
        data = path.read_bytes()
        fault = self._fault()
        if fault is not None:
            self.faults_injected += 1
            log.info("simulated camera fault: %s", fault.value)
        if fault is SimFault.TIMEOUT:
            raise CaptureTimeout("no frame from the camera")
        if fault is SimFault.UNPLUGGED:
            self._unplugged = True
            raise CameraUnavailable("camera disconnected")
        if fault is SimFault.CORRUPT_FRAME:
            data = data[: max(1, len(data) // 3)]
        try:
            with Image.open(io.BytesIO(data)) as img:
                frame = img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise CorruptFrame(f"frame from {path.name} is not a complete image: {exc}") from exc
        if fault is SimFault.DEFOCUSED:
            frame = frame.filter(ImageFilter.GaussianBlur(max(3.0, frame.width / 200)))
        rgb = np.asarray(frame)
        if fault is SimFault.DARK:
            rgb = (rgb.astype(np.float32) * 0.08).astype(np.uint8)
        return Frame(rgb, self._clock())
