#!/usr/bin/env python3
"""Train the house-number model: a locator (where is the number) and a reader (characters by position).

Both networks go into one TFLite file with two signatures, `locate` and `read`
(device/vision/models/housenumber.tflite), next to a JSON model card. Needs the `train` extra
(`pip install -e '.[train]'`, TensorFlow); the runtime needs only the TFLite interpreter.

Data: synthetic photos rendered by device/vision/synth.py from Debian fonts (seeded), plus optional real
photos (`--real DIR`: DIR/labels.tsv with `file<TAB>number[<TAB>x0,y0,x1,y1]` per line; without a box the
shipped model's locator finds it). Nothing is downloaded.

    nice -n 10 .venv/bin/python tools/train_housenumbers.py --photos 9000 --seed 1
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device.vision import preprocess as pp  # noqa: E402
from device.vision import synth  # noqa: E402

log = logging.getLogger("train_housenumbers")
MODELS = REPO / "device" / "vision" / "models"
NO_NUMBER_FRACTION = 0.08  # photos without a number teach the locator to stay quiet
CROPS_PER_PHOTO = 3  # reader crops per photo, each with its own box jitter


def jitter_box(rng: np.random.Generator, box: tuple[int, int, int, int], size: tuple[int, int]
               ) -> tuple[int, int, int, int]:
    """Imitate the locator's box error: each edge moves by up to ~15% of the box height."""
    x0, y0, x1, y1 = box
    h = max(1, y1 - y0)
    d = rng.normal(0, 0.07, 4) * h
    w_img, h_img = size
    return (int(np.clip(x0 + d[0], 0, w_img - 2)), int(np.clip(y0 + d[1], 0, h_img - 2)),
            int(np.clip(x1 + d[2], x0 + 2, w_img)), int(np.clip(y1 + d[3], y0 + 2, h_img)))


def render_chunk(args: tuple[int, int]) -> dict[str, np.ndarray]:
    import cv2
    seed, count = args
    rng = np.random.default_rng(seed)
    loc_x, loc_y, read_x, read_y, photos = [], [], [], [], []
    for _ in range(count):
        photo = synth.render_photo(rng, with_number=rng.random() >= NO_NUMBER_FRACTION)
        gray = cv2.cvtColor(photo.image, cv2.COLOR_RGB2GRAY)
        image, letterbox = pp.locator_input(gray)
        loc_x.append((image * 255).astype(np.uint8))
        loc_y.append(pp.locator_target(photo.box, letterbox).astype(np.uint8))
        if photo.box is None:
            continue
        label = pp.encode_label(photo.text)
        ok, jpeg = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 95])
        photos.append((len(loc_x) - 1, jpeg.tobytes(), photo.box, label))
        for _ in range(CROPS_PER_PHOTO):
            crop = pp.reader_input(gray, jitter_box(rng, photo.box, synth.PHOTO_SIZE))
            read_x.append((crop * 255).astype(np.uint8))
            read_y.append(label + [-1] * (pp.MAX_LABEL - len(label)))
    return {"loc_x": np.array(loc_x), "loc_y": np.array(loc_y), "read_x": np.array(read_x),
            "read_y": np.array(read_y, np.int32), "photos": photos}


def render_dataset(seed: int, photos: int, workers: int) -> dict[str, np.ndarray]:
    chunk = 250
    jobs = [(seed * 100_003 + i, min(chunk, photos - i * chunk)) for i in range((photos + chunk - 1) // chunk)]
    with multiprocessing.Pool(workers) as pool:
        parts = pool.map(render_chunk, jobs)
    data = {key: np.concatenate([p[key] for p in parts if len(p[key])]) for key in parts[0] if key != "photos"}
    offsets = np.cumsum([0] + [len(p["loc_x"]) for p in parts])
    data["photos"] = [(offset + i, jpeg, box, label) for p, offset in zip(parts, offsets)
                      for i, jpeg, box, label in p["photos"]]
    return data


def locator_crops(locator, data: dict) -> tuple[np.ndarray, np.ndarray]:
    """Reader crops cut where the trained locator found the number (IoU >= 0.3 with the truth), so the reader
    learns the boxes it will get at run time, not only jittered true boxes."""
    import cv2
    heat = locator.predict((data["loc_x"].astype(np.float32) / 255.0)[..., None], batch_size=128, verbose=0)
    _, letterbox = pp.locator_input(np.zeros(synth.PHOTO_SIZE[::-1], np.uint8))
    xs, ys = [], []
    for index, jpeg, box, label in data["photos"]:
        gray = None
        for cand in pp.candidates(heat[index], letterbox, synth.PHOTO_SIZE):
            if iou(cand.box, box) < 0.3:
                continue
            if gray is None:
                gray = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
            xs.append((pp.reader_input(gray, cand.box) * 255).astype(np.uint8))
            ys.append(label + [-1] * (pp.MAX_LABEL - len(label)))
    return np.array(xs), np.array(ys, np.int32)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def real_crops(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reader crops from labelled real photos (fleet retraining)."""
    from device.vision.check import HouseNumberChecker
    from device.vision.image import load_image
    checker = HouseNumberChecker.default()
    xs, ys = [], []
    for line in (folder / "labels.tsv").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or line.startswith("#"):
            continue
        number = parts[1].strip().upper()
        if not number or any(ch not in pp.ALPHABET for ch in number) or len(number) > pp.MAX_LABEL:
            log.warning("skipping %s: label %r not readable by this alphabet", parts[0], number)
            continue
        gray = load_image(folder / parts[0]).gray
        if len(parts) >= 3:
            box = tuple(int(v) for v in parts[2].split(","))
        else:
            found = checker.locate(gray)
            if not found:
                log.warning("skipping %s: no number located", parts[0])
                continue
            box = found[0].box
        label = pp.encode_label(number)
        xs.append((pp.reader_input(gray, box) * 255).astype(np.uint8))
        ys.append(label + [-1] * (pp.MAX_LABEL - len(label)))
    return np.array(xs), np.array(ys, np.int32)


def build_locator(keras):
    layers = keras.layers

    def conv(x, filters, dilation=1):
        x = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inp = keras.Input((pp.LOC_H, pp.LOC_W, 1))
    x = conv(inp, 8)
    x = layers.MaxPooling2D()(x)
    x = conv(x, 16)
    x = conv(x, 16)
    x = layers.MaxPooling2D()(x)
    x = conv(x, 24)
    for dilation in (2, 4, 8):
        x = conv(x, 24, dilation)
    out = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inp, layers.Reshape((pp.LOC_H // pp.LOC_STRIDE, pp.LOC_W // pp.LOC_STRIDE))(out))


def build_reader(keras):
    """Per-position classifier (like Goodfellow et al.'s multi-digit SVHN net): MAX_LABEL slots, each one of
    the characters or END. Cross-entropy converges in minutes here, where CTC sat on its blank plateau."""
    layers = keras.layers

    def conv(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inp = keras.Input((pp.READ_H, pp.READ_W, 1))
    x = conv(inp, 16)
    x = layers.MaxPooling2D()(x)  # 16 x 64
    x = conv(x, 32)
    x = layers.MaxPooling2D()(x)  # 8 x 32
    x = conv(x, 48)
    x = conv(x, 48)
    x = layers.MaxPooling2D()(x)  # 4 x 16
    x = conv(x, 64)
    x = layers.MaxPooling2D((4, 2))(x)  # 1 x 8
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    logits = layers.Dense(pp.MAX_LABEL * pp.CLASSES)(x)
    return keras.Model(inp, layers.Reshape((pp.MAX_LABEL, pp.CLASSES))(logits))


def position_targets(labels: np.ndarray) -> np.ndarray:
    """-1 padding becomes END."""
    return np.where(labels < 0, pp.END, labels).astype(np.int32)


def locator_loss(tf):
    def loss(y_true, y_pred):
        y_pred = tf.clip_by_value(y_pred, 1e-6, 1 - 1e-6)
        bce = -(3.0 * y_true * tf.math.log(y_pred) + (1 - y_true) * tf.math.log(1 - y_pred))
        return tf.reduce_mean(bce, axis=[1, 2])
    return loss


def sequence_accuracy(reader, x: np.ndarray, y: np.ndarray) -> float:
    logits = reader.predict(x, batch_size=256, verbose=0)
    probs = np.exp(logits - logits.max(axis=2, keepdims=True))
    probs /= probs.sum(axis=2, keepdims=True)
    right = 0
    for p, label in zip(probs, y):
        truth = "".join(pp.ALPHABET[i] for i in label if i >= 0)
        right += pp.decode_positions(p).text == truth
    return right / len(y)


def export(keras, tf, locator, reader, path: Path) -> int:
    """Both networks in one .tflite with signatures `locate` and `read` (Keras' ExportArchive tracks the
    variables, so the converter freezes them into constants)."""
    archive = keras.export.ExportArchive()
    archive.track(locator)
    archive.track(reader)
    archive.add_endpoint("locate", lambda image: {"heatmap": locator(image, training=False)},
                         input_signature=[tf.TensorSpec([1, pp.LOC_H, pp.LOC_W, 1], tf.float32, name="image")])
    archive.add_endpoint("read", lambda crop: {"probs": tf.nn.softmax(reader(crop, training=False), axis=-1)},
                         input_signature=[tf.TensorSpec([None, pp.READ_H, pp.READ_W, 1], tf.float32, name="crop")])
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["locate", "read"])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights: 4x smaller
        data = converter.convert()
    path.write_bytes(data)
    return len(data)


def verify_export(path: Path, reader, x: np.ndarray, y: np.ndarray) -> float:
    """Run the written file in LiteRT (the runtime's interpreter) and measure the reader's accuracy there."""
    from device.vision.backend import TFLiteBackend
    backend = TFLiteBackend(path)
    probs = np.concatenate([backend.run("read", crop=x[i:i + 64])["probs"] for i in range(0, len(x), 64)])
    if not np.isfinite(probs).all():
        raise SystemExit(f"{path}: the converted model gives non-finite outputs")
    right = sum(pp.decode_positions(p).text == "".join(pp.ALPHABET[i] for i in label if i >= 0)
                for p, label in zip(probs, y))
    return right / len(y)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=9000, help="synthetic photos to render")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs-locator", type=int, default=6)
    parser.add_argument("--epochs-reader", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--real", type=Path, help="folder of real photos with labels.tsv")
    parser.add_argument("--resume", action="store_true",
                        help="load the locator and reader kept in --keep: fine-tune the reader only")
    parser.add_argument("--tune-locator", type=int, default=0, metavar="EPOCHS",
                        help="with --resume: also fine-tune the locator for this many epochs")
    parser.add_argument("--out", type=Path, default=MODELS / "housenumber.tflite")
    parser.add_argument("--keep", type=Path, default=REPO / "build" / "housenumber",
                        help="folder for the trained Keras models")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(args.seed)

    started = time.monotonic()
    data = render_dataset(args.seed, args.photos, args.workers)
    validation = render_dataset(args.seed + 500, max(300, args.photos // 20), args.workers)
    render_s = time.monotonic() - started
    log.info("rendered %d photos, %d reader crops in %.0f s", args.photos, len(data["read_x"]), render_s)
    read_x, read_y = data["read_x"], data["read_y"]
    real_count = 0
    if args.real:
        rx, ry = real_crops(args.real)
        real_count = len(rx)
        if real_count:
            read_x = np.concatenate([read_x] + [rx] * 5)  # oversampled: real photos are few but precious
            read_y = np.concatenate([read_y] + [ry] * 5)
        log.info("added %d real crops from %s", real_count, args.real)

    def as_input(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) / 255.0)[..., None]

    if args.resume:  # start from the kept models: skip the locator, fine-tune the reader
        locator = keras.models.load_model(args.keep / "locator.keras", compile=False)
        reader = keras.models.load_model(args.keep / "reader.keras", compile=False)
        if args.tune_locator:
            locator.compile(optimizer=keras.optimizers.Adam(1e-3), loss=locator_loss(tf))
            locator.fit(as_input(data["loc_x"]), data["loc_y"].astype(np.float32), batch_size=64,
                        epochs=args.tune_locator, verbose=2,
                        validation_data=(as_input(validation["loc_x"]), validation["loc_y"].astype(np.float32)))
    else:
        locator = build_locator(keras)
        locator.compile(optimizer=keras.optimizers.Adam(3e-3), loss=locator_loss(tf))
        locator.fit(as_input(data["loc_x"]), data["loc_y"].astype(np.float32), batch_size=64,
                    epochs=args.epochs_locator, verbose=2,
                    validation_data=(as_input(validation["loc_x"]), validation["loc_y"].astype(np.float32)))
        reader = build_reader(keras)
    lx, ly = locator_crops(locator, data)
    log.info("added %d reader crops from the locator's boxes", len(lx))
    read_x, read_y = np.concatenate([read_x, lx]), np.concatenate([read_y, ly])
    steps = args.epochs_reader * (len(read_x) // 64 + 1)
    rate = 7e-4 if args.resume else 2e-3
    reader.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(rate, steps)),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reader.fit(as_input(read_x), position_targets(read_y), batch_size=64, epochs=args.epochs_reader, verbose=2,
               shuffle=True)
    crop_accuracy = sequence_accuracy(reader, as_input(validation["read_x"]), validation["read_y"])
    train_s = time.monotonic() - started
    log.info("reader crop sequence accuracy on validation: %.4f; total %.0f s", crop_accuracy, train_s)

    args.keep.mkdir(parents=True, exist_ok=True)  # the Keras models, to re-export without retraining
    locator.save(args.keep / "locator.keras")
    reader.save(args.keep / "reader.keras")
    size = export(keras, tf, locator, reader, args.out)
    tflite_accuracy = verify_export(args.out, reader, as_input(validation["read_x"]), validation["read_y"])
    log.info("TFLite reader crop accuracy %.4f (Keras %.4f)", tflite_accuracy, crop_accuracy)
    card_path = args.out.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    if args.resume and "training" in card:  # a fine-tuning run: keep how the starting point was made
        card["training_history"] = card.get("training_history", []) + [card["training"]]
    elif not args.resume:
        card.pop("training_history", None)
    card["training"] = {
        "command": " ".join(["tools/train_housenumbers.py"] + sys.argv[1:]),
        "seed": args.seed,
        "synthetic_photos": args.photos,
        "reader_crops": int(len(data["read_x"])),
        "real_photos": real_count,
        "epochs": {"locator": args.tune_locator if args.resume else args.epochs_locator, "reader": args.epochs_reader},
        "resumed_from_kept_models": args.resume,
        "reader_crops_from_locator": int(len(lx)),
        "tensorflow": tf.__version__,
        "seconds": round(train_s),
        "validation_crop_sequence_accuracy": round(crop_accuracy, 4),
        "validation_crop_sequence_accuracy_tflite": round(tflite_accuracy, 4),
        "locator_params": int(locator.count_params()),
        "reader_params": int(reader.count_params()),
    }
    card["bytes"] = size
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s (%d bytes) and %s", args.out, size, card_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
