"""Scene text on the device: where text is (PP-OCRv4 DB detection) and what a text box says (PP-OCRv4
recognition, CTC), both in TFLite (see ocr_models). Knows nothing about house numbers: check.py does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.vision import ocr_models as om
from device.vision.backend import PLAIN, InferenceBackend
from device.vision.errors import ModelError
from device.vision.pixels import regions, resize

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass(frozen=True)
class DetectParams:
    pixel_min: float = 0.2  # text probability for a pixel to belong to a text region (DB's "thresh")
    box_min: float = 0.5  # mean probability over a region for it to count (DB's "box_thresh")
    unclip: float = 1.6  # DB regions are shrunk text: grow by area * unclip / perimeter
    min_side: int = 3  # regions thinner than this (detector pixels) are noise


@dataclass(frozen=True)
class TextBox:
    box: Box  # pixels of the image given to detect()
    score: float  # mean text probability of the region


@dataclass(frozen=True)
class Letterbox:
    scale: float  # detector pixels per image pixel
    pad_x: int
    pad_y: int


@dataclass(frozen=True)
class Char:
    char: str
    prob: float  # the highest softmax probability over the CTC steps that emitted it
    step: int  # the first of those steps


def _normalise_into(rgb: np.ndarray, out: np.ndarray) -> None:
    """PaddleOCR's input written into out (float32, rgb's shape): BGR (its models were trained on OpenCV-decoded
    images), (x / 255 - 0.5) / 0.5. In place, without float temporaries (the finer detector's input is 17 MB)."""
    np.multiply(rgb[..., ::-1], np.float32(2 / 255), out=out, casting="unsafe")
    out -= np.float32(1.0)


def load_head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as head:
            weight, bias, charset = head["weight"], head["bias"], str(head["charset"])
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"cannot load the recogniser head {path}: {exc}") from exc
    if charset != om.REC_CHARSET or weight.shape != (om.REC_FEATURES, len(om.REC_CHARSET)) or \
            bias.shape != (len(om.REC_CHARSET),):
        raise ModelError(f"{path.name}: head of shape {weight.shape} for another character set")
    return weight.astype(np.float32), bias.astype(np.float32)


class SceneText:
    def __init__(self, det: InferenceBackend, rec: InferenceBackend, head: tuple[np.ndarray, np.ndarray],
                 params: DetectParams = DetectParams(), det_size: tuple[int, int] = (om.DET_W, om.DET_H)) -> None:
        """det_size: the detector file's fixed input (width, height)."""
        self.det, self.rec = det, rec
        self.weight, self.bias = head
        self.params = params
        self.det_w, self.det_h = det_size

    def probability_map(self, rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        h, w = rgb.shape[:2]
        dw, dh = self.det_w, self.det_h
        scale = min(dw / w, dh / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((dh, dw, 3), np.float32)  # 0: mid grey after normalisation
        pad_x, pad_y = (dw - nw) // 2, (dh - nh) // 2
        _normalise_into(resize(rgb, (nw, nh)), canvas[pad_y:pad_y + nh, pad_x:pad_x + nw])
        out = self.det.run(PLAIN, input=canvas[None])["output"]
        if out.size != dw * dh:
            raise ModelError(f"text detection output has shape {out.shape}")
        return out.reshape(dh, dw), Letterbox(scale, pad_x, pad_y)

    def detect(self, rgb: np.ndarray, limit: int = 12) -> list[TextBox]:
        """Text regions of an RGB image, most probable first, as boxes in its pixels."""
        prob, lb = self.probability_map(rgb)
        p = self.params
        h, w = rgb.shape[:2]
        found = []
        for region in regions(prob > p.pixel_min, prob):
            if region.width < p.min_side or region.height < p.min_side or region.mean < p.box_min:
                continue
            grow = region.area * p.unclip / (2 * (region.width + region.height))
            x0 = (region.x - grow - lb.pad_x) / lb.scale
            y0 = (region.y - grow - lb.pad_y) / lb.scale
            x1 = (region.x + region.width + grow - lb.pad_x) / lb.scale
            y1 = (region.y + region.height + grow - lb.pad_y) / lb.scale
            box = (max(0, int(x0)), max(0, int(y0)), min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1))))
            if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
                found.append(TextBox(box, region.mean))
        found.sort(key=lambda t: t.score * (t.box[3] - t.box[1]), reverse=True)
        return found[:limit]

    def rec_input(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        crop = rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
        ch, cw = crop.shape[:2]
        nw = min(om.REC_W, max(1, round(cw * om.REC_H / ch)))
        out = np.zeros((1, om.REC_H, om.REC_W, 3), np.float32)
        _normalise_into(resize(np.ascontiguousarray(crop), (nw, om.REC_H)), out[0, :, :nw])
        return out

    def step_probs(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        """(REC_STEPS, len(REC_CHARSET)) softmax rows for the text in the box."""
        features = self.rec.run(PLAIN, input=self.rec_input(rgb, box))["output"]
        if features.shape[-1] != om.REC_FEATURES:
            raise ModelError(f"text recognition output has shape {features.shape}")
        logits = features.reshape(-1, om.REC_FEATURES) @ self.weight + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return probs


def greedy_decode(probs: np.ndarray) -> list[Char]:
    """CTC best path: the top class of each step, repeats merged, blanks dropped."""
    best = probs.argmax(axis=1)
    top = probs[np.arange(len(best)), best]
    chars: list[Char] = []
    previous = 0
    for step, (index, prob) in enumerate(zip(best, top)):
        if index != 0 and index != previous:
            chars.append(Char(om.REC_CHARSET[index], float(prob), step))
        elif index != 0 and chars:  # the same character over more steps: keep its surest step
            last = chars[-1]
            chars[-1] = Char(last.char, max(last.prob, float(prob)), last.step)
        previous = index
    return chars
