"""Pixels in and out of the two networks, shared by training and inference so both see the same input.

The locator sees the whole photo letterboxed to 160x120 grey and outputs a probability map (stride 4) of
"this pixel is part of the house number". The reader sees one crop around a found number, 128x32 grey, and
outputs, for each of MAX_LABEL positions, the probabilities of each character or END.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.vision.pixels import regions, resize

LOC_W, LOC_H = 160, 120
LOC_STRIDE = 4
READ_W, READ_H = 128, 32
ALPHABET = "0123456789ABCDEF"
END = len(ALPHABET)  # the class "no more characters"
CLASSES = len(ALPHABET) + 1
MAX_LABEL = 6
# Margins around the glyph box in the reader crop, as fractions of the box height.
CROP_PAD_Y = 0.2
CROP_PAD_X = 0.3


@dataclass(frozen=True)
class Letterbox:
    scale: float  # locator pixels per photo pixel
    pad_x: int
    pad_y: int

    def to_photo(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.pad_x) / self.scale, (y - self.pad_y) / self.scale


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile's default (linear) percentiles from one partial sort: the check takes up to three per
    crop over dozens of small crops a photo, and np.percentile's overhead was a quarter of its time."""
    flat = values.ravel()
    last = flat.size - 1
    positions = [q / 100 * last for q in qs]
    ranks = sorted({min(last, int(pos) + step) for pos in positions for step in (0, 1)})
    part = np.partition(flat, ranks)
    out = []
    for pos in positions:
        below, above = float(part[int(pos)]), float(part[min(last, int(pos) + 1)])
        out.append(below + (above - below) * (pos - int(pos)))
    return out


def _stretch(gray: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = (gray.astype(np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 8.0))
    return np.clip(out, 0.0, 1.0)


def normalise(gray: np.ndarray) -> np.ndarray:
    """Stretch contrast (2nd..98th percentile) to 0..1 float32: robust to exposure and colour."""
    lo, hi = percentiles(gray, (2, 98))
    return _stretch(gray, lo, hi)


def locator_input(gray: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """Letterbox the grey photo to LOC_W x LOC_H (aspect kept); returns (H, W) float32 and the mapping."""
    h, w = gray.shape[:2]
    scale = min(LOC_W / w, LOC_H / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = resize(gray, (nw, nh))
    pad_x, pad_y = (LOC_W - nw) // 2, (LOC_H - nh) // 2
    canvas = np.full((LOC_H, LOC_W), percentiles(small, (50,))[0], np.float32)
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = small
    return normalise(canvas), Letterbox(scale, pad_x, pad_y)


def locator_target(box: tuple[int, int, int, int] | None, letterbox: Letterbox) -> np.ndarray:
    """Training target: 1 on map cells whose centre lies inside the glyph box."""
    target = np.zeros((LOC_H // LOC_STRIDE, LOC_W // LOC_STRIDE), np.float32)
    if box is None:
        return target
    x0, y0, x1, y1 = (v * letterbox.scale for v in box)
    x0, x1 = x0 + letterbox.pad_x, x1 + letterbox.pad_x
    y0, y1 = y0 + letterbox.pad_y, y1 + letterbox.pad_y
    cx = (np.arange(target.shape[1]) + 0.5) * LOC_STRIDE
    cy = (np.arange(target.shape[0]) + 0.5) * LOC_STRIDE
    inside_x = (cx >= x0) & (cx <= x1)
    inside_y = (cy >= y0) & (cy <= y1)
    target[np.ix_(inside_y, inside_x)] = 1.0
    if not target.any():  # a tiny number still marks its centre cell
        row = min(target.shape[0] - 1, int((y0 + y1) / 2 / LOC_STRIDE))
        col = min(target.shape[1] - 1, int((x0 + x1) / 2 / LOC_STRIDE))
        target[row, col] = 1.0
    return target


@dataclass(frozen=True)
class Candidate:
    box: tuple[int, int, int, int]  # photo pixels
    score: float  # mean locator probability inside the region


def candidates(prob_map: np.ndarray, letterbox: Letterbox, photo_size: tuple[int, int],
               threshold: float = 0.5, limit: int = 3) -> list[Candidate]:
    """Regions of the locator map above threshold, as photo boxes, best first."""
    full = resize(prob_map.astype(np.float32), (LOC_W, LOC_H))
    w, h = photo_size
    found = []
    for region in regions(full >= threshold, full):
        if region.area < 6:
            continue
        px0, py0 = letterbox.to_photo(region.x, region.y)
        px1, py1 = letterbox.to_photo(region.x + region.width, region.y + region.height)
        box = (max(0, int(px0)), max(0, int(py0)), min(w, int(np.ceil(px1))), min(h, int(np.ceil(py1))))
        if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            found.append(Candidate(box, region.mean * float(np.sqrt(region.area))))
    found.sort(key=lambda c: c.score, reverse=True)
    return [Candidate(c.box, min(1.0, c.score)) for c in found[:limit]]


def reader_input(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop the glyph box with margins, scale to READ_H keeping aspect, pad right to READ_W: (H, W) float32."""
    x0, y0, x1, y1 = box
    bh = max(1, y1 - y0)
    h, w = gray.shape[:2]
    cx0 = max(0, int(x0 - CROP_PAD_X * bh))
    cx1 = min(w, int(x1 + CROP_PAD_X * bh))
    cy0 = max(0, int(y0 - CROP_PAD_Y * bh))
    cy1 = min(h, int(y1 + CROP_PAD_Y * bh))
    crop = gray[cy0:max(cy1, cy0 + 1), cx0:max(cx1, cx0 + 1)]
    ch, cw = crop.shape[:2]
    nw = min(READ_W, max(1, round(cw * READ_H / ch)))
    resized = resize(crop, (nw, READ_H))
    lo, median, hi = percentiles(resized, (2, 50, 98))
    out = np.full((READ_H, READ_W), _stretch(np.float32(median), lo, hi), np.float32)
    out[:, :nw] = _stretch(resized, lo, hi)  # left-aligned: character k sits at a similar place whatever the length
    return out


Box = tuple[int, int, int, int]

# Small moves of a located box (dx, dy as fractions of its width/height; grow x, grow y likewise) that the
# reader also looks through: located boxes are quantised to the locator's cells and often a few pixels loose
# or off, and one such crop can turn a sure reading into a doubtful or wrong one.
BOX_JITTER = ((0.0, 0.0, 0.0, 0.0), (-0.08, 0.0, 0.0, 0.0), (0.08, 0.0, 0.0, 0.0), (0.0, -0.1, 0.0, 0.0),
              (0.0, 0.1, 0.0, 0.0), (0.0, 0.0, -0.08, -0.1), (0.0, 0.0, 0.08, 0.1))


def jittered_boxes(box: Box, photo_size: tuple[int, int]) -> list[Box]:
    """The box and its BOX_JITTER moves, clipped to the photo (w, h); the box itself first."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    w, h = photo_size
    out = []
    for dx, dy, gx, gy in BOX_JITTER:
        nx0, nx1 = x0 + (dx - gx) * bw, x1 + (dx + gx) * bw
        ny0, ny1 = y0 + (dy - gy) * bh, y1 + (dy + gy) * bh
        out.append((max(0, int(nx0)), max(0, int(ny0)), min(w, max(int(nx1), int(nx0) + 1)),
                    min(h, max(int(ny1), int(ny0) + 1))))
    return out


def zoom_window(box: Box, photo_size: tuple[int, int], zoom: float) -> Box:
    """A window around the box with the locator's aspect, `zoom` box heights tall (taller for a wide box),
    clipped to the photo: the locator looks again there at several times the first pass's resolution."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    win_h = max(zoom * (y1 - y0), 1.2 * (x1 - x0) * LOC_H / LOC_W)
    win_w = win_h * LOC_W / LOC_H
    w, h = photo_size
    return (int(max(0, cx - win_w / 2)), int(max(0, cy - win_h / 2)), int(min(w, cx + win_w / 2)),
            int(min(h, cy + win_h / 2)))


def union_of_overlapping(boxes: list[Box], box: Box) -> Box | None:
    """The union of the boxes that overlap `box` (all the glyph regions of one number, a suffix included)."""
    hit = [b for b in boxes if min(b[2], box[2]) > max(b[0], box[0]) and min(b[3], box[3]) > max(b[1], box[1])]
    if not hit:
        return None
    return min(b[0] for b in hit), min(b[1] for b in hit), max(b[2] for b in hit), max(b[3] for b in hit)


def encode_label(text: str) -> list[int]:
    return [ALPHABET.index(ch) for ch in text]


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float  # the least certain position's top probability: one doubtful character is enough


def decode_positions(probs: np.ndarray) -> Reading:
    """(MAX_LABEL, CLASSES) softmax -> text up to the first END. A character after END is inconsistent: 0."""
    best = probs.argmax(axis=1)
    confidence = float(probs.max(axis=1).min())
    ends = np.flatnonzero(best == END)
    length = int(ends[0]) if len(ends) else len(best)
    if np.any(best[length:] != END):
        confidence = 0.0
    return Reading("".join(ALPHABET[i] for i in best[:length]), confidence)


def consensus(readings: list[Reading], agree: int, longer_min: float) -> Reading:
    """One reading from several looks at the same number: each text scores the `agree`-th highest confidence
    among the looks that read it (0 when fewer read it), so one lucky or unlucky crop decides nothing. When a
    longer text containing the winner also scores `longer_min` or more, some looks cut characters off (a
    suffix, a thin first digit): the longer text is the reading, never "310" for "310A"."""
    by_text: dict[str, list[float]] = {}
    for reading in readings:
        by_text.setdefault(reading.text, []).append(reading.confidence)
    if not by_text:
        return Reading("", 0.0)
    scored = {text: (sorted(c, reverse=True)[agree - 1] if len(c) >= agree else 0.0) for text, c in by_text.items()}
    text = max(scored, key=lambda t: (scored[t], len(by_text[t])))
    longer = [(score, other) for other, score in scored.items() if text and text in other and other != text
              and score >= longer_min]
    if longer:
        score, text = max(longer)
        return Reading(text, score)
    return Reading(text, scored[text])
