"""The house-number check: find the number in a delivery photo, read it, compare with the stop's number.

Two steps through the model's two signatures: `locate` (a small fully convolutional net: a map of where
the number's glyphs are) and `read` (a conv net that classifies each character position of a candidate
crop). Each located number gets a second, closer locator pass (a tighter box) and is read through several
slightly moved boxes; a reading counts only when at least two of those looks agree. "match"
needs the expected number read with high confidence; anything doubtful is "unreadable", because a wrong
"match" lets a wrong-address delivery through while "unreadable" only asks the driver to look again.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from device.config import VisionSection
from device.contract.domain import Verdict
from device.vision import preprocess as pp
from device.vision.backend import InferenceBackend, TFLiteBackend
from device.vision.errors import ExpectedNumberError, ModelError
from device.vision.image import DEFAULT_MAX_MEGAPIXELS, DEFAULT_WORK_SIDE, ImageSource, LoadedImage, load_image
from device.vision.quality import Quality, QualityThresholds, assess

log = logging.getLogger(__name__)

MODEL_NAME = "housenumber.tflite"


def default_model_path() -> Path:
    return Path(str(resources.files("device.vision") / "models" / MODEL_NAME))


@dataclass(frozen=True)
class CheckThresholds:
    locate_min: float = 0.5  # locator probability for a pixel to belong to a number
    locate_retry_min: float = 0.25  # second look when nothing reached locate_min
    match_min_confidence: float = 0.75  # reader confidence needed to say "match" (calibrated: FAR <= 0.3%)
    mismatch_min_confidence: float = 0.7  # reader confidence needed to say "mismatch" (else unreadable)
    max_candidates: int = 3  # regions read per photo
    refine_zoom: float = 5.0  # second locator pass on a window this many box heights tall (0: no second pass)
    agree: int = 2  # looks at a number (box moves, refined box) that must read the same text with the confidence
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    work_side: int = DEFAULT_WORK_SIDE


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    read: str | None  # the number read (None when unreadable)
    confidence: float
    boxes: tuple[tuple[int, int, int, int], ...]  # x0, y0, x1, y1 in the photo's pixels, best first
    ms: float
    quality: Quality | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {"verdict": str(self.verdict), "read": self.read,
                                  "confidence": round(self.confidence, 4), "boxes": [list(b) for b in self.boxes],
                                  "ms": round(self.ms, 1)}
        if self.quality is not None:
            doc["quality"] = self.quality.to_dict()
        return doc


def normalise_expected(expected: str) -> str:
    """'12 a' -> '12A'. Raises ExpectedNumberError for what the model cannot read."""
    text = "".join(str(expected).split()).upper()
    if not text or len(text) > pp.MAX_LABEL or any(ch not in pp.ALPHABET for ch in text):
        raise ExpectedNumberError(f"expected house number {expected!r} must be 1-{pp.MAX_LABEL} characters of "
                                  f"digits and suffix letters {pp.ALPHABET[10:]}")
    return text


@dataclass(frozen=True)
class Located:
    box: tuple[int, int, int, int]  # working-scale pixels
    score: float


DEFAULT_QUALITY = QualityThresholds()


class HouseNumberChecker:
    def __init__(self, backend: InferenceBackend, thresholds: CheckThresholds = CheckThresholds(),
                 quality: QualityThresholds = DEFAULT_QUALITY) -> None:
        self.backend = backend
        self.thresholds = thresholds
        self.quality_thresholds = quality

    @classmethod
    def default(cls, model_path: Path | None = None, thresholds: CheckThresholds = CheckThresholds(),
                quality: QualityThresholds = DEFAULT_QUALITY) -> HouseNumberChecker:
        return cls(TFLiteBackend(model_path or default_model_path()), thresholds, quality)

    def _heatmap(self, gray: np.ndarray) -> tuple[np.ndarray, pp.Letterbox]:
        image, letterbox = pp.locator_input(gray)
        heatmap = self.backend.run("locate", image=image[None, :, :, None])["heatmap"]
        if heatmap.shape[1:] != (pp.LOC_H // pp.LOC_STRIDE, pp.LOC_W // pp.LOC_STRIDE):
            raise ModelError(f"locate output has shape {heatmap.shape}")
        return heatmap[0], letterbox

    def locate(self, gray: np.ndarray) -> list[pp.Candidate]:
        heatmap, letterbox = self._heatmap(gray)
        h, w = gray.shape[:2]
        found = pp.candidates(heatmap, letterbox, (w, h), self.thresholds.locate_min, self.thresholds.max_candidates)
        if not found:  # a faint number (small, low contrast): look again at a lower threshold
            found = pp.candidates(heatmap, letterbox, (w, h), self.thresholds.locate_retry_min,
                                  self.thresholds.max_candidates)
        return found

    def refine(self, gray: np.ndarray, box: pp.Box) -> pp.Box | None:
        """A tighter box for a located number: the locator again on a window around it, at several times the
        resolution; all glyph regions there that overlap the first box, merged (so a suffix is not cut off).
        None when the second look finds nothing there."""
        if self.thresholds.refine_zoom <= 0:
            return None
        h, w = gray.shape[:2]
        wx0, wy0, wx1, wy1 = pp.zoom_window(box, (w, h), self.thresholds.refine_zoom)
        if wx1 - wx0 < 16 or wy1 - wy0 < 16:
            return None
        heatmap, letterbox = self._heatmap(gray[wy0:wy1, wx0:wx1])
        found = pp.candidates(heatmap, letterbox, (wx1 - wx0, wy1 - wy0), self.thresholds.locate_min, limit=6)
        return pp.union_of_overlapping([(c.box[0] + wx0, c.box[1] + wy0, c.box[2] + wx0, c.box[3] + wy0)
                                        for c in found], box)

    def read(self, gray: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> list[pp.Reading]:
        if not boxes:
            return []
        crops = np.stack([pp.reader_input(gray, box) for box in boxes])[:, :, :, None]
        probs = self.backend.run("read", crop=crops)["probs"]
        return [pp.decode_positions(p) for p in probs]

    def read_consensus(self, gray: np.ndarray, looks: list[list[pp.Box]]) -> list[pp.Reading]:
        """One reading per number from all its looks (boxes), read in one batch; see preprocess.consensus."""
        readings = self.read(gray, [box for boxes in looks for box in boxes])
        out, start = [], 0
        for boxes in looks:
            out.append(pp.consensus(readings[start:start + len(boxes)], self.thresholds.agree,
                                    longer_min=self.thresholds.mismatch_min_confidence))
            start += len(boxes)
        return out

    def check(self, image: ImageSource | LoadedImage, expected: str) -> CheckResult:
        """Raises ImageError for a bad photo, ExpectedNumberError for an impossible expected number."""
        started = time.perf_counter()
        want = normalise_expected(expected)
        loaded = image if isinstance(image, LoadedImage) else load_image(
            image, max_megapixels=self.thresholds.max_megapixels, work_side=self.thresholds.work_side)
        quality = assess(loaded.gray, self.quality_thresholds)
        found = self.locate(loaded.gray)
        size = (loaded.gray.shape[1], loaded.gray.shape[0])
        located = [(c.box, self.refine(loaded.gray, c.box)) for c in found]
        looks = [pp.jittered_boxes(box, size) + (pp.jittered_boxes(tight, size) if tight else [])
                 for box, tight in located]
        readings = self.read_consensus(loaded.gray, looks)
        to_photo = 1.0 / loaded.scale
        boxes = tuple(tuple(int(round(v * to_photo)) for v in (tight or box)) for box, tight in located)
        verdict, read, confidence, order = self._decide(want, readings)
        if order:  # the box that decided goes first
            boxes = (boxes[order],) + boxes[:order] + boxes[order + 1:]
        ms = (time.perf_counter() - started) * 1000
        log.debug("check expected=%s verdict=%s read=%s confidence=%.3f candidates=%d ms=%.1f", want, verdict, read,
                  confidence, len(found), ms)
        return CheckResult(verdict, read, confidence, boxes, ms, quality)

    def _decide(self, want: str, readings: list[pp.Reading]) -> tuple[Verdict, str | None, float, int]:
        t = self.thresholds
        for index, reading in enumerate(readings):
            if reading.text == want and reading.confidence >= t.match_min_confidence:
                return Verdict.MATCH, want, reading.confidence, index
        confident = [(r.confidence, i) for i, r in enumerate(readings) if r.text and
                     r.confidence >= t.mismatch_min_confidence]
        if confident:
            confidence, index = max(confident)
            if readings[index].text != want:
                return Verdict.MISMATCH, readings[index].text, confidence, index
        best = max((r.confidence for r in readings), default=0.0)
        return Verdict.UNREADABLE, None, best, 0


def checker_from_config(section: VisionSection) -> HouseNumberChecker:
    thresholds = CheckThresholds(locate_min=section.locate_min, match_min_confidence=section.match_min_confidence,
                                 mismatch_min_confidence=section.mismatch_min_confidence,
                                 max_megapixels=section.max_megapixels)
    quality = QualityThresholds(min_sharpness=section.min_sharpness, min_brightness=section.min_brightness,
                                max_brightness=section.max_brightness,
                                max_clipped_fraction=section.max_clipped_fraction)
    return HouseNumberChecker.default(Path(section.model) if section.model else None, thresholds, quality)
