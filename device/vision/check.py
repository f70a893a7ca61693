"""The house-number check: find text in a delivery photo, read it, compare with the stop's number.

Scene text models trained on real photographs (PP-OCRv4 detection and recognition in TFLite, ocr.py) find and read
the text; this module turns readings into a verdict. Text boxes on one line are joined (a number in separate tiles
or stickers), each candidate is read as located and, when that reading is or is part of the expected number, again
through wider boxes (a suffix or a thin first digit the box cut off, the other glyphs of a widely spaced sticker
number the detector missed: the "9" found of a "79" is read as 79, never a match for 9); a doubtful reading of the
expected number gets two more looks and counts as sure as its second-surest look. The house number in a reading is
the run of digits with an optional letter right after it. "match" needs the expected number read with every
character confident, and no longer number around it in the wider look; anything doubtful is "unreadable", because a
wrong "match" lets a wrong-address delivery through while "unreadable" asks the driver to look again. A photo the
first pass finds nothing sure in gets a finer look: the same detector at a larger input (small and lone numerals),
its new lines read the same way.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from device.config import VisionSection
from device.contract.domain import Verdict
from device.vision import ocr_models as om
from device.vision.backend import TFLiteBackend
from device.vision.errors import ExpectedNumberError
from device.vision.image import DEFAULT_MAX_MEGAPIXELS, ImageSource, LoadedImage, load_image
from device.vision.ocr import Box, Char, DetectParams, SceneText, greedy_decode, load_head
from device.vision.quality import Quality, QualityThresholds, assess

log = logging.getLogger(__name__)

MAX_LABEL = 6
JOIN_GAP = 2.5  # text boxes on one line closer than this many heights are one line
NUMBER = re.compile(r"[1-9][0-9]{0,4}[A-Z]?")  # a house number: 1-5 digits, no leading 0, maybe one letter
# Digits with at most one letter after them; a letter that starts a word ("12 Main", "5th") is not a suffix.
IN_TEXT = re.compile(r"(?<![0-9])[0-9]{1,5}(?:[A-Z](?![A-Z]))?")


def default_model_dir() -> Path:
    return Path(str(resources.files("device.vision") / "models"))


@dataclass(frozen=True)
class CheckThresholds:
    locate_min: float = 0.5  # mean text probability of a detected region (DB box threshold)
    match_min_confidence: float = 0.75  # every character of the expected number at least this sure
    mismatch_min_confidence: float = 0.7  # a different number read this surely is "mismatch" (else unreadable)
    max_candidates: int = 6  # text lines read per photo
    widen: tuple[float, ...] = (0.25, 0.6, 1.0)  # the second looks: the box wider by this many box heights each
    # side, wider only while the reading is a part of the expected number (the other glyphs of a widely spaced
    # number can lie outside the box, or be missed by the detector)
    widen_expected: int = 3  # of those looks, how many a reading of the expected number itself takes: all, so
    # that the "9" the detector found of a sticker "79" is read as 79 through a wider box, never a match for 9
    same_line: float = 0.15  # a finer-look line is read unless each of its edges is within this many heights of a
    # line already read: the finer detector's box often shows more of the glyphs ("63" whose first box cut the
    # top of the 6 off and read "03")
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    work_side: int = 1152  # 2304x1296 camera frames decode at exactly 1/2 scale (libjpeg DCT scaling)


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
    """'12 a' -> '12A'. Raises ExpectedNumberError for what is not a house number."""
    text = "".join(str(expected).split()).upper()
    if not NUMBER.fullmatch(text):
        raise ExpectedNumberError(f"expected house number {expected!r} must be 1-5 digits (no leading 0), "
                                  f"optionally followed by one letter")
    return text


@dataclass(frozen=True)
class Reading:
    text: str  # the house number in a text box ("" when none)
    confidence: float  # its least sure character
    raw: str = ""  # everything the recogniser read in the box


def house_numbers(chars: list[Char]) -> list[Reading]:
    """The house numbers in one decoded text box, each with its least sure character. Spaces are dropped
    (numbers in separate tiles read as '4 8 0'); lower-case suffixes count as upper-case."""
    kept = [c for c in chars if c.char != " "]
    text = "".join(c.char.upper() for c in kept)
    raw = "".join(c.char for c in chars)
    return [Reading(m.group(), min(c.prob for c in kept[m.start():m.end()]), raw)
            for m in IN_TEXT.finditer(text) if NUMBER.fullmatch(m.group())]


def best_number(chars: list[Char]) -> Reading:
    found = house_numbers(chars)
    raw = "".join(c.char for c in chars)
    return max(found, key=lambda r: (len(r.text), r.confidence)) if found else Reading("", 0.0, raw)


def join_lines(boxes: list[Box]) -> list[Box]:
    """Boxes on one text line (heights alike, overlapping vertically, gap under 1.5 heights) joined: the
    separate glyph regions of tiled, stickered or widely spaced numerals become one box."""
    lines: list[list[int]] = []
    for box in sorted(boxes):
        x0, y0, x1, y1 = box
        h = y1 - y0
        for line in lines:
            lx0, ly0, lx1, ly1 = line
            lh = ly1 - ly0
            overlap = min(y1, ly1) - max(y0, ly0)
            if overlap >= 0.5 * min(h, lh) and max(h, lh) <= 1.6 * min(h, lh) and x0 - lx1 <= JOIN_GAP * max(h, lh):
                line[:] = [min(lx0, x0), min(ly0, y0), max(lx1, x1), max(ly1, y1)]
                break
        else:
            lines.append(list(box))
    return [(a, b, c, d) for a, b, c, d in lines]


def widened(box: Box, size: tuple[int, int], by: float) -> Box:
    x0, y0, x1, y1 = box
    h = y1 - y0
    w_img, h_img = size
    return (max(0, int(x0 - by * h)), max(0, int(y0 - 0.4 * by * h)), min(w_img, int(x1 + by * h)),
            min(h_img, int(y1 + 0.4 * by * h)))


DEFAULT_QUALITY = QualityThresholds()
SMALL_BOX = 30  # text boxes lower than this (working pixels) are read from the photo at full resolution


@dataclass
class Frame:
    """The photo at working scale, and on demand at full resolution (small text reads better from there)."""
    rgb: np.ndarray
    source: ImageSource | None = None  # None: no finer pixels than rgb
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    _fine: np.ndarray | None = None

    def pixels_for(self, box: Box) -> tuple[np.ndarray, Box]:
        if self.source is None or box[3] - box[1] >= SMALL_BOX:
            return self.rgb, box
        if self._fine is None:
            full = load_image(self.source, max_megapixels=self.max_megapixels, work_side=1 << 30)
            self._fine = full.rgb
        ratio = self._fine.shape[1] / self.rgb.shape[1]
        if ratio <= 1.0:
            return self.rgb, box
        return self._fine, tuple(int(round(v * ratio)) for v in box)  # type: ignore[return-value]


def same_box(a: Box, b: Box, within: float) -> bool:
    """Two boxes alike: each edge of one within `within` heights (the taller's) of the other's."""
    h = max(a[3] - a[1], b[3] - b[1])
    return max(abs(u - v) for u, v in zip(a, b)) <= within * h


class HouseNumberChecker:
    def __init__(self, text: SceneText, thresholds: CheckThresholds = CheckThresholds(),
                 quality: QualityThresholds = DEFAULT_QUALITY, fine: SceneText | None = None) -> None:
        """fine: the same models with a detector of a larger input, for a second look at a photo the first
        pass finds nothing sure in (small and lone numerals the detector misses at the first scale)."""
        self.text = text
        self.fine = fine
        self.thresholds = thresholds
        self.quality_thresholds = quality

    @property
    def backend(self) -> TFLiteBackend:
        return self.text.rec  # type: ignore[return-value]

    @classmethod
    def default(cls, model_dir: Path | None = None, thresholds: CheckThresholds = CheckThresholds(),
                quality: QualityThresholds = DEFAULT_QUALITY, num_threads: int = 1) -> HouseNumberChecker:
        folder = Path(model_dir) if model_dir else default_model_dir()
        if folder.is_file():  # a model file given: its folder holds the set
            folder = folder.parent
        rec = TFLiteBackend(folder / om.REC_FILE, num_threads)
        head = load_head(folder / om.REC_HEAD_FILE)
        params = DetectParams(box_min=thresholds.locate_min)

        def scene_text(det_file: str) -> SceneText:
            det = TFLiteBackend(folder / det_file, num_threads)
            _, det_h, det_w, _ = det.input_shape  # NHWC, fixed when converted (tools/convert_ppocr.py --det-size)
            return SceneText(det, rec, head, params, (det_w, det_h))

        fine = scene_text(om.DET_FINE_FILE) if (folder / om.DET_FINE_FILE).is_file() else None
        return cls(scene_text(om.DET_FILE), thresholds, quality, fine)

    def release(self) -> None:
        """Give back the text detectors' buffers (about 130 MB, and more for the fine one) until the next check,
        which takes them again (tens of ms more): for a unit that checks a photo now and then and idles between."""
        for text in (self.text, self.fine):
            if text is not None:
                text.det.release()  # type: ignore[attr-defined]

    def candidates(self, rgb: np.ndarray, text: SceneText | None = None) -> list[Box]:
        lines = join_lines([t.box for t in (text or self.text).detect(rgb)])
        lines.sort(key=lambda b: b[3] - b[1], reverse=True)  # taller text first: a house number is big
        return lines[: self.thresholds.max_candidates]

    def read(self, frame: Frame, box: Box) -> Reading:
        pixels, at = frame.pixels_for(box)
        return best_number(greedy_decode(self.text.step_probs(pixels, at)))

    def read_box(self, frame: Frame, box: Box, want: str) -> Reading:
        """The number in a box. When it is, contains or is part of the expected number, a second look through
        a wider box settles what the box may have cut off: "310A" is never taken for "310", and "310" read
        in a box that cut the A off becomes "310A" when the wider look reads that. A reading that is the expected
        number or one end of it ("5" of "54") looks wider still, step by step: the detector often finds only
        one glyph of a widely spaced sticker number, so "9" may be all it found of "79"."""
        rgb = frame.rgb
        first = self.read(frame, box)
        if not first.text or not (first.text in want or want in first.text):
            return first
        size = (rgb.shape[1], rgb.shape[0])
        looks = [first]
        t = self.thresholds
        steps = t.widen[:t.widen_expected] if first.text == want else \
            t.widen if want.startswith(first.text) or want.endswith(first.text) else t.widen[:1]
        for by in steps:
            wider = widened(box, size, by)
            wide = self.read(frame, wider)
            longer = len(wide.text) > len(first.text) and first.text in wide.text
            if longer and wide.text == want:
                box, looks = wider, [wide]
                break
            if longer and wide.confidence >= t.mismatch_min_confidence:
                # a longer number only beyond the detector's own box: the glyphs the box cut off, or a plaque's
                # edge read as a leading "1" ("54" as "154"); never a match, and no mismatch on it either
                log.debug("line %s reads %s only wider: unreadable", first.text, wide.text)
                return Reading("", wide.confidence, wide.raw)
            looks.append(wide)
        if looks[0].text == want and looks[0].confidence < self.thresholds.match_min_confidence:
            return self.look_again(frame, box, *looks)
        return looks[0]

    def look_again(self, frame: Frame, box: Box, *looks: Reading) -> Reading:
        """The expected number read, but not surely: two more looks (the box a little tighter, and moved down
        a little); the reading is the expected number only as sure as the second-surest look that reads it,
        so one lucky crop never decides."""
        x0, y0, x1, y1 = box
        h = y1 - y0
        size = (frame.rgb.shape[1], frame.rgb.shape[0])
        tight = (x0 + int(0.1 * h), y0 + int(0.08 * h), max(x0 + int(0.1 * h) + 2, x1 - int(0.1 * h)),
                 max(y0 + int(0.08 * h) + 2, y1 - int(0.08 * h)))
        lower = widened((x0, y0 + int(0.1 * h), x1, min(size[1], y1 + int(0.1 * h))), size, 0.1)
        readings = list(looks) + [self.read(frame, tight), self.read(frame, lower)]
        text = looks[0].text
        sure = sorted((r.confidence for r in readings if r.text == text), reverse=True)
        return Reading(text, sure[1] if len(sure) >= 2 else 0.0, looks[0].raw)

    def check(self, image: ImageSource | LoadedImage, expected: str) -> CheckResult:
        """Raises ImageError for a bad photo, ExpectedNumberError for an impossible expected number."""
        started = time.perf_counter()
        want = normalise_expected(expected)
        loaded = image if isinstance(image, LoadedImage) else load_image(
            image, max_megapixels=self.thresholds.max_megapixels, work_side=self.thresholds.work_side)
        quality = assess(loaded.gray, self.quality_thresholds)
        boxes = self.candidates(loaded.rgb)
        frame = Frame(loaded.rgb, None if isinstance(image, LoadedImage) else image, self.thresholds.max_megapixels)
        readings = self.read_lines(frame, boxes, want)
        verdict, read, confidence, order = self._decide(want, readings)
        if verdict is Verdict.UNREADABLE and self.fine is not None:  # nothing sure: look again, finer
            # the first detector keeps its buffers: in int8 both fit (peak 486 MB with the photo taker's release
            # after each photo, 415 MB freeing them here), and the next photo does not pay their allocation again
            within = self.thresholds.same_line
            more = [b for b in self.candidates(loaded.rgb, self.fine) if not any(same_box(b, a, within) for a in boxes)]
            if more:
                boxes += more
                readings += self.read_lines(frame, more, want)
                verdict, read, confidence, order = self._decide(want, readings)
        to_photo = 1.0 / loaded.scale
        photo_boxes = [tuple(int(round(v * to_photo)) for v in box) for box in boxes]
        if order:  # the box that decided goes first
            photo_boxes.insert(0, photo_boxes.pop(order))
        ms = (time.perf_counter() - started) * 1000
        log.debug("check expected=%s verdict=%s read=%s confidence=%.3f candidates=%d ms=%.1f", want, verdict, read,
                  confidence, len(boxes), ms)
        return CheckResult(verdict, read, confidence, tuple(photo_boxes), ms, quality)  # type: ignore[arg-type]

    def read_lines(self, frame: Frame, boxes: list[Box], want: str) -> list[Reading]:
        """The readings of the lines in order, up to the first sure reading of the expected number: a match,
        which no other line's reading can change (_decide), so the lines after it are not read."""
        readings = []
        for box in boxes:
            readings.append(self.read_box(frame, box, want))
            if self._matches(want, readings[-1]):
                break
        return readings

    def _matches(self, want: str, reading: Reading) -> bool:
        return reading.text == want and reading.confidence >= self.thresholds.match_min_confidence

    def _decide(self, want: str, readings: list[Reading]) -> tuple[Verdict, str | None, float, int]:
        t = self.thresholds
        for index, reading in enumerate(readings):
            if self._matches(want, reading):
                return Verdict.MATCH, want, reading.confidence, index
        sure = [(r.confidence, i, r.text) for i, r in enumerate(readings)
                if r.text and r.text != want and r.confidence >= t.mismatch_min_confidence]
        if sure:
            confidence, index, text = max(sure)
            return Verdict.MISMATCH, text, confidence, index
        best = max((r.confidence for r in readings if r.text), default=0.0)
        return Verdict.UNREADABLE, None, best, 0


def checker_from_config(section: VisionSection) -> HouseNumberChecker:
    thresholds = CheckThresholds(locate_min=section.locate_min, match_min_confidence=section.match_min_confidence,
                                 mismatch_min_confidence=section.mismatch_min_confidence,
                                 max_megapixels=section.max_megapixels)
    quality = QualityThresholds(min_sharpness=section.min_sharpness, min_brightness=section.min_brightness,
                                max_brightness=section.max_brightness,
                                max_clipped_fraction=section.max_clipped_fraction)
    return HouseNumberChecker.default(Path(section.model) if section.model else None, thresholds, quality)
