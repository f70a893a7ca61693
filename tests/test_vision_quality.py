"""The photo quality gate says why to retake: blur, dark, bright, clipped."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.config import load_config
from device.vision.quality import QualityThresholds, RetakeReason, assess
from device.vision.synth import render_photo


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    rng = np.random.default_rng(8)
    # the sharpest synthetic photo of a few: the gate must pass a good photo
    photos = [cv2.cvtColor(render_photo(rng).image, cv2.COLOR_RGB2GRAY) for _ in range(6)]
    return max(photos, key=lambda g: cv2.Laplacian(g, cv2.CV_64F).var())


def test_good_photo_passes(gray: np.ndarray) -> None:
    centred = np.clip(gray.astype(np.float32) - gray.mean() + 128, 0, 255).astype(np.uint8)  # mid exposure
    quality = assess(centred)
    assert quality.ok, quality


def test_blur_is_caught(gray: np.ndarray) -> None:
    quality = assess(cv2.GaussianBlur(gray, (0, 0), 6))
    assert RetakeReason.BLURRY in quality.reasons and not quality.ok


def test_dark_and_bright_are_caught(gray: np.ndarray) -> None:
    dark = assess((gray * 0.1).astype(np.uint8))
    assert RetakeReason.TOO_DARK in dark.reasons and RetakeReason.UNDEREXPOSED in dark.reasons
    bright = assess(np.clip(gray.astype(np.int32) + 200, 0, 255).astype(np.uint8))
    assert RetakeReason.TOO_BRIGHT in bright.reasons and RetakeReason.OVEREXPOSED in bright.reasons


def test_thresholds_come_from_config(gray: np.ndarray, tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[vision]\nmin_sharpness = 100000.0\n")
    section = load_config(path, env={}).vision
    strict = QualityThresholds(min_sharpness=section.min_sharpness)
    assert RetakeReason.BLURRY in assess(gray, strict).reasons
    assert assess(gray, strict).to_dict()["reasons"][0] == "blurry"
