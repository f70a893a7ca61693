"""The two scene-text networks the house-number check runs, and what their inputs and outputs mean.

Both are PaddleOCR PP-OCRv4 mobile models (Apache-2.0, from the `rapidocr-onnxruntime` 1.4.4 wheel),
converted to TFLite by tools/convert_ppocr.py (see models/NOTICE and models/housenumber.json):

- `text_det` (DB text detection): BGR letterboxed to DET_W x DET_H, (x/255 - 0.5)/0.5, NHWC; output a
  per-pixel text probability map of the same size. `text_det_fine`: the same network at DET_FINE_W x DET_FINE_H
  (the check reads the input size from the file).
- `text_rec` (SVTR-LCNet recognition, CTC): one text line, BGR, height REC_H, width REC_W (aspect kept,
  padded right with 0 = mid grey after normalisation), (x/255 - 0.5)/0.5, NHWC; output REC_STEPS feature
  rows; the head (REC_HEAD_FILE, numpy) turns them into softmax rows over REC_CHARSET (index 0 is the CTC
  blank). The original classifier has 6625 classes (Chinese, Latin, digits, punctuation); the converter keeps
  only the columns below: digits and the Latin letters and signs a house-number plate carries.
"""
from __future__ import annotations

DET_FILE = "text_det.tflite"
DET_FINE_FILE = "text_det_fine.tflite"  # the same detector at a larger input: the check's second look, when present
REC_FILE = "text_rec.tflite"
REC_HEAD_FILE = "text_rec_head.npz"  # the classifier, REC_FEATURES x len(REC_CHARSET), applied in numpy
REC_FEATURES = 120

DET_W, DET_H = 960, 544  # 16:9 (and 4:3) photos letterbox into this with little padding; multiples of 32
DET_FINE_W, DET_FINE_H = 1920, 1088  # the second look's detector: small and lone numerals it still finds
REC_H, REC_W = 48, 256
REC_STEPS = REC_W // 8

BLANK = "\x00"
# Index 0 is the CTC blank; the rest in the order of the sliced classifier's columns.
REC_CHARSET = BLANK + "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-/.,:#' "
