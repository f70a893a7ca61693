"""Photo quality gate: is it sharp enough and well exposed? Says why to retake.

Sharpness is the variance of the Laplacian, measured at a fixed width so the threshold does not depend on
the camera resolution. Exposure is the mean brightness and the share of clipped (black or white) pixels.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from device.vision.pixels import laplacian_variance, resize

MEASURE_WIDTH = 640  # sharpness is measured at this width


class RetakeReason(enum.StrEnum):
    BLURRY = "blurry"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    UNDEREXPOSED = "underexposed"  # many pixels crushed to black
    OVEREXPOSED = "overexposed"  # many pixels blown to white


@dataclass(frozen=True)
class QualityThresholds:
    min_sharpness: float = 60.0  # variance of the Laplacian at MEASURE_WIDTH
    min_brightness: float = 50.0  # mean grey level 0..255
    max_brightness: float = 215.0
    max_clipped_fraction: float = 0.25  # share of pixels <= 5 or >= 250


@dataclass(frozen=True)
class Quality:
    sharpness: float
    brightness: float
    dark_fraction: float
    bright_fraction: float
    reasons: tuple[RetakeReason, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "reasons": [str(r) for r in self.reasons], "sharpness": round(self.sharpness, 1),
                "brightness": round(self.brightness, 1), "dark_fraction": round(self.dark_fraction, 3),
                "bright_fraction": round(self.bright_fraction, 3)}


def assess(gray: np.ndarray, thresholds: QualityThresholds = QualityThresholds()) -> Quality:
    h, w = gray.shape[:2]
    if w != MEASURE_WIDTH:
        gray = resize(gray, (MEASURE_WIDTH, max(1, round(h * MEASURE_WIDTH / w))))
    sharpness = laplacian_variance(gray)
    brightness = float(gray.mean())
    dark = float((gray <= 5).mean())
    bright = float((gray >= 250).mean())
    reasons = []
    if sharpness < thresholds.min_sharpness:
        reasons.append(RetakeReason.BLURRY)
    if brightness < thresholds.min_brightness:
        reasons.append(RetakeReason.TOO_DARK)
    if brightness > thresholds.max_brightness:
        reasons.append(RetakeReason.TOO_BRIGHT)
    if dark > thresholds.max_clipped_fraction:
        reasons.append(RetakeReason.UNDEREXPOSED)
    if bright > thresholds.max_clipped_fraction:
        reasons.append(RetakeReason.OVEREXPOSED)
    return Quality(sharpness, brightness, dark, bright, tuple(reasons))
