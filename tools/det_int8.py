"""Full-integer (int8) post-training quantisation of the PP-OCRv4 text detector for XNNPACK's int8 kernels.

Weights int8 per output channel, activations int8, the input and output float32 (a QUANTIZE and a DEQUANTIZE
at the ends: device/vision/ocr.py feeds and reads the file as before). Two rewrites of the ONNX graph first,
without which XNNPACK leaves int8 operators to TFLite's own kernels and splits the graph (37 partitions instead
of 9; the int8 file then ran 1.5x slower than float16 here):
- hard-swish x * clip(x + 3, 0, 6) / 6: the constant 3 becomes 3.001, so the converter does not fuse the
  pattern into HARD_SWISH, which XNNPACK runs in float only; its ADD (with a fused RELU6) and MULs run in int8
  (the output moves by at most x/6000);
- scalar Adds of a constant smaller than TINY_BIAS (PP-LCNetV3's learnable affine biases that ended near 0):
  dropped. They are small against the activations they shift (int8 steps of 0.04-0.13 over their calibrated
  min..max), and XNNPACK rejects an int8 ADD whose two scales are that far apart (the probability maps' agreement
  with the float16 file, in the model card, includes their removal).
Calibration: tools/det_compress.calibration_photos (bench/doorgen.py seed 7 and device/vision/synth.py seed
4242: neither the evaluation seed nor the calibration seed the check is tuned on), letterboxed at the file's
input size exactly as the check prepares them; TensorFlow's TFLiteConverter on the saved model onnx2tf writes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("det_int8")

TINY_BIAS = 0.02  # in the detector: the largest of the 14 dropped is 0.0198, the smallest scalar kept 0.057
HARDSWISH_SHIFT = 3.001  # instead of 3.0: keeps the converter from fusing HARD_SWISH
RANGE_SAMPLE_EVERY = 3  # least-error ranges from every third calibration photo (19 of 56); from all 56 the calibration
# seed read one photo fewer and one more part false accept ('480' as '80'): equal within a photo or two
RANGE_FRACTIONS = (1.0, 0.8, 0.65, 0.5, 0.4, 0.32, 0.25, 0.2, 0.16, 0.125, 0.1, 0.08, 0.06)


def prepare(model) -> tuple[int, int]:
    """Rewrite a simplified detector (constants as initializers) in place for int8; returns how many
    hard-swishes were unfused and how many tiny biases dropped."""
    from onnx import numpy_helper
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    shift = "int8.hardswish_shift"
    graph.initializer.append(numpy_helper.from_array(np.array(HARDSWISH_SHIFT, np.float32), shift))
    unfused, dropped = 0, 0
    for node in list(graph.node):
        scalar = [name for name in node.input if name in consts and consts[name].size == 1]
        if node.op_type != "Add" or len(scalar) != 1 or len(node.input) != 2:
            continue
        value = float(consts[scalar[0]].reshape(()))
        after = users.get(node.output[0], [])
        if value == 3.0 and [n.op_type for n in after] == ["Clip"]:
            node.input[list(node.input).index(scalar[0])] = shift
            unfused += 1
        elif abs(value) < TINY_BIAS and node.output[0] not in {o.name for o in graph.output}:
            source = next(name for name in node.input if name != scalar[0])
            for user in after:
                user.input[:] = [source if name == node.output[0] else name for name in user.input]
            graph.node.remove(node)
            dropped += 1
    return unfused, dropped


def quantise(saved_model: Path, inputs: list[np.ndarray]) -> bytes:
    """The int8 TFLite file of a saved model (one NHWC float32 input) calibrated on inputs (NHWC, float32):
    TensorFlow's calibration records each tensor's min and max; each range is then shrunk to the one whose
    256-level quantisation of the calibration values has the least squared error (clip_ranges), and the model
    quantised with those ranges."""
    import tensorflow as tf
    from tensorflow.lite.python import convert
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in inputs)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # min/max per tensor, not yet quantised
    calibrated = clip_ranges(converter.convert(), inputs[::RANGE_SAMPLE_EVERY])
    data: bytes = convert.mlir_quantize(calibrated, input_data_type=tf.float32, output_data_type=tf.float32)
    return data


def best_range(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """[low, high] scaled by the one of RANGE_FRACTIONS (zero kept inside) with the least squared error of
    uniform 256-level quantisation of values."""
    best, least = (low, high), np.inf
    for fraction in RANGE_FRACTIONS:
        a, b = min(low * fraction, 0.0), max(high * fraction, 0.0)
        step = max((b - a) / 255, 1e-12)
        error = float(np.mean((np.clip(np.round((values - a) / step), 0, 255) * step + a - values) ** 2))
        if error < least:
            best, least = (a, b), error
    return best


def clip_ranges(calibrated: bytes, inputs: list[np.ndarray], per_input: int = 4000, seed: int = 0) -> bytes:
    """The calibrated model with each activation's recorded [min, max] replaced by best_range over a sample of
    its values on the inputs. The detector's activations are heavy-tailed (the neck's outputs reach +-2700 where
    most values are within +-100): quantised over min..max their int8 step is ~22 and most of the signal is lost."""
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    ranged = [i for i, t in enumerate(graph.tensors) if i not in set(graph.inputs) and t.quantization is not None
              and t.quantization.min is not None and len(t.quantization.min) == 1]
    interpreter = tf.lite.Interpreter(
        model_content=calibrated, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    samples: dict[int, list[np.ndarray]] = {i: [] for i in ranged}
    for x in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        for i in ranged:
            values = interpreter.get_tensor(i).ravel()
            samples[i].append(values[rng.integers(0, values.size, per_input)] if values.size > per_input
                              else values.copy())
    shrunk = 0
    for i in ranged:
        q = graph.tensors[i].quantization
        low, high = best_range(np.concatenate(samples[i]), float(q.min[0]), float(q.max[0]))
        shrunk += (low, high) != (float(q.min[0]), float(q.max[0]))
        q.min, q.max = [low], [high]
    log.info("calibration ranges shrunk for %d of %d tensors", shrunk, len(ranged))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
