"""What every camera gives: a frame of RGB pixels with the wall-clock time it was taken."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray  # H x W x 3 uint8
    taken_at: datetime  # UTC, timezone-aware

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


class Camera(Protocol):
    def open(self) -> None: ...

    def capture(self) -> Frame:
        """One still; raises CameraError subclasses."""
        ...

    def close(self) -> None: ...
