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


def normalise(gray: np.ndarray) -> np.ndarray:
    """Stretch contrast (2nd..98th percentile) to 0..1 float32: robust to exposure and colour."""
    lo, hi = np.percentile(gray, (2, 98))
    out = (gray.astype(np.float32) - lo) / max(float(hi - lo), 8.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)  # numpy 2: float64 percentiles would promote


def locator_input(gray: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """Letterbox the grey photo to LOC_W x LOC_H (aspect kept); returns (H, W) float32 and the mapping."""
    h, w = gray.shape[:2]
    scale = min(LOC_W / w, LOC_H / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = resize(gray, (nw, nh))
    pad_x, pad_y = (LOC_W - nw) // 2, (LOC_H - nh) // 2
    canvas = np.full((LOC_H, LOC_W), float(np.median(small)), np.float32)
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
    norm = normalise(resized)
    out = np.full((READ_H, READ_W), float(np.median(norm)), np.float32)
    out[:, :nw] = norm  # left-aligned: character k sits at a similar place whatever the length
    return out


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
