#!/usr/bin/env python3
"""Fine-tune the house-number reader on a fleet's own labelled photos (`--real DIR`).

The check runs PP-OCRv4 text detection and recognition (tools/convert_ppocr.py makes the TFLite files);
what is learned here is the recogniser's head: the last layer (REC_FEATURES -> REC_CHARSET, in
device/vision/models/text_rec_head.npz) that turns each CTC step's features into character probabilities.
The TFLite recogniser gives the features of each crop; the head is trained with CTC loss in TensorFlow
(the `train` extra) from the shipped weights, at a low learning rate, on:
- crops of the real photos: DIR/labels.tsv, `file<TAB>number[<TAB>x0,y0,x1,y1]` per line; without a box,
  the check's own text detection finds the line that reads closest to the label;
- crops of synthetic photos (device/vision/synth.py, seeded) so the head does not forget other numbers.
The new head is written only if it reads the held-back real crops at least as well as the shipped one.

    .venv/bin/python tools/train_housenumbers.py --real DIR [--epochs 30] [--out-dir device/vision/models]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device.vision import ocr_models as om  # noqa: E402
from device.vision.check import Frame, HouseNumberChecker, best_number, default_model_dir  # noqa: E402
from device.vision.errors import ImageError  # noqa: E402
from device.vision.image import load_image  # noqa: E402
from device.vision.ocr import greedy_decode  # noqa: E402

log = logging.getLogger("train_housenumbers")
LABEL_MAX = 8  # CTC label length padded to this


def features(checker: HouseNumberChecker, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    return checker.text.rec.run("main", input=checker.text.rec_input(rgb, box))["output"].reshape(
        om.REC_STEPS, om.REC_FEATURES)


def closest_line(checker: HouseNumberChecker, rgb: np.ndarray, number: str) -> tuple[int, int, int, int] | None:
    """The detected text line whose reading is nearest the label (most characters in common, in order)."""
    best, best_score = None, 0.0
    for box in checker.candidates(rgb):
        text = best_number(greedy_decode(checker.text.step_probs(rgb, box))).text
        common = sum(1 for a, b in zip(text, number) if a == b) / max(len(number), len(text), 1)
        if common > best_score:
            best, best_score = box, common
    return best


def real_crops(checker: HouseNumberChecker, folder: Path) -> tuple[list[np.ndarray], list[str]]:
    xs, ys = [], []
    for line in (folder / "labels.tsv").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or line.startswith("#"):
            continue
        number = "".join(parts[1].split()).upper()
        if not number or any(ch not in om.REC_CHARSET[1:] for ch in number) or len(number) > LABEL_MAX:
            log.warning("skipping %s: label %r", parts[0], number)
            continue
        try:
            loaded = load_image(folder / parts[0], work_side=checker.thresholds.work_side)
        except ImageError as exc:
            log.warning("skipping %s: %s", parts[0], exc)
            continue
        if len(parts) >= 3:
            box = tuple(int(round(int(v) * loaded.scale)) for v in parts[2].split(","))
        else:
            box = closest_line(checker, loaded.rgb, number)
            if box is None:
                log.warning("skipping %s: no text found", parts[0])
                continue
        pixels, at = Frame(loaded.rgb, folder / parts[0]).pixels_for(box)  # type: ignore[arg-type]
        xs.append(features(checker, pixels, at))
        ys.append(number)
    return xs, ys


def synthetic_crops(checker: HouseNumberChecker, count: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    from device.vision.synth import render_photo
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(count):
        photo = render_photo(rng)
        x0, y0, x1, y1 = photo.box
        pad = int(0.25 * (y1 - y0))
        h, w = photo.image.shape[:2]
        box = (max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad))
        xs.append(features(checker, photo.image, box))
        ys.append(photo.text)
    return xs, ys


def sequence_accuracy(weight: np.ndarray, bias: np.ndarray, xs: list[np.ndarray], ys: list[str]) -> float:
    right = 0
    for x, y in zip(xs, ys):
        logits = x @ weight + bias
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        right += "".join(c.char for c in greedy_decode(probs / probs.sum(axis=1, keepdims=True))).upper() == y
    return right / max(1, len(xs))


def fine_tune(weight: np.ndarray, bias: np.ndarray, xs: np.ndarray, ys: list[str], epochs: int,
              rate: float) -> tuple[np.ndarray, np.ndarray]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.random.set_seed(0)
    w, b = tf.Variable(weight), tf.Variable(bias)
    labels = np.zeros((len(ys), LABEL_MAX), np.int32)
    lengths = np.array([len(y) for y in ys], np.int32)
    for i, y in enumerate(ys):
        labels[i, :len(y)] = [om.REC_CHARSET.index(ch) for ch in y]
    x = tf.constant(xs, tf.float32)
    optimizer = tf.keras.optimizers.Adam(rate)
    steps = np.full(len(ys), om.REC_STEPS, np.int32)
    for epoch in range(epochs):
        with tf.GradientTape() as tape:
            logits = tf.einsum("nsf,fc->nsc", x, w) + b
            loss = tf.reduce_mean(tf.nn.ctc_loss(labels, logits, lengths, steps, logits_time_major=False,
                                                 blank_index=0))
        optimizer.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
        if epoch % 10 == 0 or epoch == epochs - 1:
            log.info("epoch %d CTC loss %.4f", epoch, float(loss))
    return w.numpy(), b.numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="folder of real photos with labels.tsv")
    parser.add_argument("--synthetic", type=int, default=300, help="synthetic crops mixed in")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rate", type=float, default=1e-3)
    parser.add_argument("--out-dir", type=Path, default=default_model_dir())
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.monotonic()
    checker = HouseNumberChecker.default()
    with np.load(default_model_dir() / om.REC_HEAD_FILE) as head:
        weight, bias = head["weight"], head["bias"]
    rx, ry = real_crops(checker, args.real)
    if not rx:
        raise SystemExit(f"no usable labelled photos in {args.real}")
    held = list(range(0, len(rx), 5)) if len(rx) >= 10 else []  # every fifth real crop judges the result
    train_real = [i for i in range(len(rx)) if i not in held]
    sx, sy = synthetic_crops(checker, args.synthetic, args.seed)
    xs = [rx[i] for i in train_real] * 5 + sx  # real crops are few but precious: oversampled
    ys = [ry[i] for i in train_real] * 5 + sy
    judge_x, judge_y = ([rx[i] for i in held], [ry[i] for i in held]) if held else (rx, ry)
    before = sequence_accuracy(weight, bias, judge_x, judge_y)
    new_w, new_b = fine_tune(weight, bias, np.stack(xs), ys, args.epochs, args.rate)
    after = sequence_accuracy(new_w, new_b, judge_x, judge_y)
    log.info("real crops read exactly: %.3f before, %.3f after (%s)", before, after,
             "held-back fifth" if held else "the training crops: too few photos to hold any back")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["tools/train_housenumbers.py"] + sys.argv[1:]), "real_crops": len(rx),
              "synthetic_crops": len(sx), "epochs": args.epochs, "read_before": round(before, 4),
              "read_after": round(after, 4), "held_back": len(held), "seconds": round(time.monotonic() - started)}
    if after >= before:
        np.savez(args.out_dir / om.REC_HEAD_FILE, weight=new_w.astype(np.float32), bias=new_b.astype(np.float32),
                 charset=np.array(om.REC_CHARSET))
        report["written"] = str(args.out_dir / om.REC_HEAD_FILE)
    else:
        report["written"] = None
        log.warning("the fine-tuned head reads worse than the shipped one: not written")
    (args.out_dir / "fine_tune.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
