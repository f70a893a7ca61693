#!/usr/bin/env python3
"""Convert the PP-OCRv4 text detection and recognition models to the TFLite files the check ships.

Source: the ONNX files inside the `rapidocr-onnxruntime` 1.4.4 wheel (PaddleOCR models, Apache-2.0),
fetched with `pip download --no-deps` (or given with --wheel). Steps:
1. recognition: cut before the classifier (the TFLite file outputs per-column features) and keep the
   classifier columns of device.vision.ocr_models.REC_CHARSET only (blank, digits, Latin letters, a few
   signs, out of 6625) as a small numpy head (REC_HEAD_FILE); input fixed to 1x3xREC_HxREC_W;
2. detection: input fixed to 1x3xDET_HxDET_W, and a second file of the same weights at DET_FINE_H x DET_FINE_W
   (the check's finer look; `--fine-size none` leaves it out); `--compress` (not used for the shipped
   files: see the model card's changes_round_7) factorises the heaviest 3x3 convolutions into a 1x1
   convolution to fewer channels and a 3x3 one, fitted by least squares to the original layer's outputs on
   calibration photos (no training; both detector files get the same factors);
   in all three models the one-element constants (PP-LCNetV3's learnable affines) become scalars, which keeps
   onnx2tf's graph in NHWC (without it every activation runs between two TRANSPOSEs of a full feature map);
3. onnx-simplifier with the fixed shapes (folds the Shape/Slice/Concat arithmetic before every Reshape into
   constants: without it onnx2tf flattens the SVTR block's tokens on the wrong axes);
4. onnx2tf to TFLite (NHWC input), float16 weights (half the bytes, float32 arithmetic on CPU); both detectors
   (`--int8 both`, the default) in full-integer int8 instead (tools/det_int8.py: two graph rewrites so XNNPACK
   runs every int8 operator, calibration on doorgen/synth photos with least-error activation ranges; float32
   input and output, so device/vision/ocr.py is unchanged): 2.3-2.5x faster here. The finer detector in int8
   reads less than in float16 at the same input (model card changes_round_8_fine_int8: 89.0% against 92.0% on
   the calibration seed, at CPU p95 243 against 428 ms per check); `--int8 det` builds the float16 one;
5. check each TFLite file against onnxruntime on the ONNX it came from (same inputs, outputs compared; an int8
   detector by the text pixels of its probability map on a rendered text sample).

Needs the `convert` extra in a venv of its own (onnx2tf pins its TensorFlow, onnx and numpy):
    python3 -m venv build/convert-venv && build/convert-venv/bin/pip install -e '.[convert]'
    build/convert-venv/bin/python tools/convert_ppocr.py
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# the repository instead of this script's folder (whose bench.py would hide the bench/ folder's modules)
sys.path[0] = str(REPO)

from device.vision import ocr_models as om  # noqa: E402
from tools import det_compress, det_int8  # noqa: E402

log = logging.getLogger("convert_ppocr")
WHEEL = "rapidocr-onnxruntime==1.4.4"
MODELS = REPO / "device" / "vision" / "models"
DET_ONNX = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
REC_ONNX = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
INT8_FILES = {"none": (), "det": (om.DET_FILE,), "fine": (om.DET_FINE_FILE,), "both": (om.DET_FILE, om.DET_FINE_FILE)}
INT8_TEXT_PIXELS = 0.1  # an int8 detector may lose or add this share of the float model's text pixels (2-3% measured)
REC_CLASSIFIER = ("linear_85.w_0", "linear_85.b_0")  # the last MatMul + Add before the softmax


def fetch_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), WHEEL], check=True)
    return next(folder.glob("rapidocr_onnxruntime-*.whl"))


def rec_columns(model) -> list[int]:
    """Classifier column of each REC_CHARSET character: 0 is the blank, then the wheel's dictionary (in the
    ONNX metadata, one character a line), then a space as the last class."""
    meta = {p.key: p.value for p in model.metadata_props}
    classes = ["<blank>"] + meta["character"].split("\n") + [" "]
    return [0] + [classes.index(ch) for ch in om.REC_CHARSET[1:]]


def split_rec(model) -> dict[str, np.ndarray]:
    """Cut the recogniser before its classifier (the graph then outputs the 120-d feature of each of the
    REC_STEPS columns) and return the classifier's weights for the REC_CHARSET columns only: the head the
    check applies (device/vision/ocr.py) and that `tools/train_housenumbers.py --real` fine-tunes."""
    from onnx import helper, numpy_helper
    columns = rec_columns(model)
    weights = {}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in REC_CLASSIFIER:
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)[..., columns].astype(np.float32)
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul" and REC_CLASSIFIER[0] in n.input)
    feature = next(name for name in matmul.input if name != REC_CLASSIFIER[0])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(feature, 1, [1, om.REC_STEPS, om.REC_FEATURES]))  # FLOAT
    return {"weight": weights[REC_CLASSIFIER[0]], "bias": weights[REC_CLASSIFIER[1]],
            "charset": np.array(om.REC_CHARSET)}


def fix_input(model, shape: tuple[int, int, int, int]) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape):
        dim.Clear()
        dim.dim_value = value


def offline_sample_images() -> np.ndarray:
    """Stands in for onnx2tf's sample images, which it would otherwise fetch from the network (this machine
    has none): 20 seeded noise images, NHWC 128x128x3 in 0..1, for its dummy-inference shape checks."""
    return np.random.default_rng(0).uniform(0, 1, (20, 128, 128, 3)).astype(np.float32)


def convert(onnx_path: Path, work: Path, calibration: list[np.ndarray] | None = None) -> Path:
    """The float16 TFLite file of an ONNX model, or with calibration inputs (NHWC) the int8 one
    (tools/det_int8.py), quantised from the saved model onnx2tf writes (with a signature, for the converter)."""
    import onnx2tf
    import onnx2tf.onnx2tf as core
    core.download_test_image_data = offline_sample_images
    out = work / onnx_path.stem
    onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out), non_verbose=True,
                    output_signaturedefs=calibration is not None)
    tflite = out / f"{onnx_path.stem}_float16.tflite"
    if calibration is not None:
        tflite = out / f"{onnx_path.stem}_int8.tflite"
        tflite.write_bytes(det_int8.quantise(out, calibration))
    drop_signatures(tflite)
    return tflite


def drop_signatures(tflite: Path) -> None:
    """Remove the file's signature defs: onnx2tf writes a 'serving_default' one when its Keras route converts
    (after the scalar constants, the detector's does) and none when it falls back to a concrete function. The
    check runs every file as one plain input and output (device/vision/backend.py), and frees the detector's
    buffers between photos, which a signature runner would keep."""
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model(str(tflite))
    model.signatureDefs = []
    flatbuffer_utils.write_model(model, str(tflite))


def text_sample(shape: tuple[int, int, int, int]) -> np.ndarray:
    """A normalised NCHW picture of digits (dark on light) the size of the model's input: both models must
    agree on text, where their outputs are large, not only on noise."""
    import cv2
    _, _, h, w = shape
    img = np.full((h, w, 3), 225, np.uint8)
    scale = h / 48 * 1.1 if h <= 64 else h / 200
    for row, y in enumerate(range(int(40 * scale), h, max(1, int(60 * scale)))):
        cv2.putText(img, f"{12 + row}A 3{row}0", (int(8 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, scale, (30, 30, 30),
                    max(1, int(2 * scale)))
    return (img.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]


def compare(onnx_path: Path, tflite_path: Path, sample: np.ndarray) -> tuple[float, float, float]:
    """Largest and mean difference between onnxruntime (NCHW) and the TFLite file (NHWC) on one input,
    relative to the largest output value, and the share of outputs off by more than 0.1. Float16 weights move a
    few detection pixels at a region's edge by up to ~0.1-0.3 (more pixels, more such edges) while the mean stays
    ~1e-5."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: sample})[0]
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample.transpose(0, 2, 3, 1))
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    diff = np.abs(want.reshape(got.shape) - got) / max(1e-6, float(np.abs(want).max()))
    return float(diff.max()), float(diff.mean()), float((diff > 0.1).mean())


def check_int8(name: str, onnx_path: Path, tflite_path: Path, shape: tuple[int, int, int, int]) -> None:
    """The int8 detector against onnxruntime on the float ONNX model (before det_int8's rewrites), on the
    rendered text sample: the text pixels (probability > 0.2) it loses or adds, as fractions of onnxruntime's."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter
    sample = text_sample(shape)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: sample})[0].reshape(shape[2:]) > 0.2
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample.transpose(0, 2, 3, 1))
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(shape[2:]) > 0.2
    lost, added = (int(n) / max(1, int(want.sum())) for n in ((want & ~got).sum(), (got & ~want).sum()))
    log.info("%s: %d bytes, int8; text pixels of onnxruntime's map on a text sample lost %.1f%%, added %.1f%%",
             name, tflite_path.stat().st_size, 100 * lost, 100 * added)
    if lost > INT8_TEXT_PIXELS or added > INT8_TEXT_PIXELS:
        raise SystemExit(f"{name}: the int8 detector's text regions differ from the ONNX model's")


def det_shape(size: str) -> tuple[int, int]:
    """'960x544' -> (544, 960): a detector input, height and width, multiples of 32."""
    width, height = (int(v) for v in size.lower().split("x"))
    if width % 32 or height % 32:
        raise SystemExit(f"detector size {size}: both sides must be multiples of 32")
    return height, width


def compress_ranks(spec: str) -> dict[str, int]:
    """'p2o.Conv.61=24,p2o.Conv.58=40' -> {node: input rank}; 'none' -> {}."""
    if spec == "none":
        return {}
    try:
        return {name: int(k) for name, k in (item.split("=") for item in spec.split(","))}
    except ValueError:
        raise SystemExit(f"--compress {spec}: give NODE=RANK,... or 'none'") from None


def compress_detector(det_bytes: bytes, shape: tuple[int, int, int, int],
                      ranks: dict[str, int]) -> list[det_compress.Factor]:
    """Fit the factors on calibration photos at the first detector's input size and log how far the
    compressed network's probability maps are from the original's there."""
    import onnx
    teacher = onnx.load_from_string(det_bytes)
    fix_input(teacher, shape)
    photos = det_compress.calibration_photos()
    inputs = [det_compress.letterbox(p, shape) for p in photos]
    factors = det_compress.factorise(teacher, ranks, inputs)
    student = onnx.load_from_string(det_bytes)
    fix_input(student, shape)
    det_compress.apply(student, factors)
    log.info("compressed detector against the original on the calibration photos: %s",
             det_compress.map_agreement(teacher, student, inputs[::4]))
    return factors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help=f"the {WHEEL} wheel (default: pip download it)")
    parser.add_argument("--out", type=Path, default=MODELS)
    parser.add_argument("--det-size", default=f"{om.DET_W}x{om.DET_H}",
                        help="the detector's fixed input, WIDTHxHEIGHT, multiples of 32 (default %(default)s)")
    parser.add_argument("--fine-size", default=f"{om.DET_FINE_W}x{om.DET_FINE_H}",
                        help=f"the second-look detector ({om.DET_FINE_FILE}), WIDTHxHEIGHT or 'none' "
                             "(default %(default)s)")
    parser.add_argument("--compress", nargs="?", default="none",
                        const=",".join(f"{k}={v}" for k, v in det_compress.DEFAULT_RANKS.items()),
                        help="detector convolutions to factorise, NODE=INPUT_RANK,... (alone: %(const)s); the "
                             "shipped files are not factorised: it cost reads on the calibration seed (default "
                             "%(default)s)")
    parser.add_argument("--int8", choices=sorted(INT8_FILES), default="both",
                        help="detector files quantised to int8 (tools/det_int8.py): the first ('det'), the finer "
                             "look's, both or none; the finer detector in int8 trades calibration reads for time "
                             "(model card changes_round_8_fine_int8) (default %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import onnx
    import onnxsim
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wheel = args.wheel or fetch_wheel(work)
        with zipfile.ZipFile(wheel) as archive:
            det_bytes = archive.read(DET_ONNX)
            rec = onnx.load_from_string(archive.read(REC_ONNX))
        det_input = (1, 3, *det_shape(args.det_size))
        ranks = compress_ranks(args.compress)
        factors = compress_detector(det_bytes, det_input, ranks) if ranks else []
        jobs = [(onnx.load_from_string(det_bytes), om.DET_FILE, det_input)]
        if args.fine_size != "none":
            jobs.append((onnx.load_from_string(det_bytes), om.DET_FINE_FILE, (1, 3, *det_shape(args.fine_size))))
        fix_input(rec, (1, 3, om.REC_H, om.REC_W))
        jobs.append((rec, om.REC_FILE, (1, 3, om.REC_H, om.REC_W)))
        head = split_rec(rec)
        np.savez(args.out / om.REC_HEAD_FILE, **head)
        photos: list[np.ndarray] = []
        for model, name, shape in jobs:
            fix_input(model, shape)
            if name != om.REC_FILE:
                det_compress.apply(model, factors)
                if det_compress.split_concat(model, det_compress.HEAD_PROJECTION):
                    log.info("%s: the head's projection split over the upsampled parts of its Concat", name)
            log.info("%s: %d one-element constants made scalars", name, det_compress.scalar_constants(model))
            onnx_path = work / Path(name).with_suffix(".onnx").name
            simplified, ok = onnxsim.simplify(model)
            if not ok:
                raise SystemExit(f"{name}: onnx-simplifier could not check the simplified model")
            onnx.save(simplified, str(onnx_path))
            if name in INT8_FILES[args.int8]:
                log.info("%s: int8: %d hard-swishes unfused, %d tiny biases dropped", name,
                         *det_int8.prepare(simplified))
                onnx.save(simplified, str(work / f"{onnx_path.stem}_int8.onnx"))
                photos = photos or det_compress.calibration_photos()
                tflite = convert(work / f"{onnx_path.stem}_int8.onnx", work,
                                 [det_compress.letterbox(p, shape).transpose(0, 2, 3, 1) for p in photos])
                check_int8(name, onnx_path, tflite, shape)
            else:
                tflite = convert(onnx_path, work)
                largest, mean, off = compare(onnx_path, tflite, text_sample(shape))
                log.info("%s: %d bytes, difference to onnxruntime on a text sample (relative): largest %.2e, "
                         "mean %.2e, share over 0.1 %.1e", name, tflite.stat().st_size, largest, mean, off)
                if largest > 0.5 or mean > 1e-3 or off > 1e-3:
                    raise SystemExit(f"{name}: TFLite differs from the ONNX model (largest {largest}, mean {mean}, "
                                     f"share over 0.1 {off})")
            (args.out / name).write_bytes(tflite.read_bytes())
    log.info("converted in %.0f s into %s", time.perf_counter() - started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
