"""`tools/train_housenumbers.py --real DIR` fine-tunes the reader head on labelled photos (small run, real
TFLite features and real TensorFlow CTC training). Marked `train`: `make test` deselects it, `make test-train`
installs the `train` extra and runs it; there a missing TensorFlow is a failure, not a skip."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.doorgen import DoorGenerator
from device.vision.ocr import load_head

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.train


def test_fine_tune_on_real_photos_small(tmp_path: Path) -> None:
    assert importlib.util.find_spec("tensorflow") is not None, "no TensorFlow: `make test-train` installs it"
    photos = tmp_path / "photos"
    photos.mkdir()
    gen = DoorGenerator(77)
    rows = []
    for i in range(6):
        photo = gen.photo()
        (photos / f"{i}.jpg").write_bytes(photo.jpeg)
        box = "\t" + ",".join(str(v) for v in photo.box) if i % 2 else ""  # half with a box, half found
        rows.append(f"{i}.jpg\t{photo.text}{box}")
    (photos / "labels.tsv").write_text("# file\tnumber\n" + "\n".join(rows) + "\nmissing.jpg\t12\n")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "train_housenumbers.py"), "--real", str(photos),
                             "--synthetic", "8", "--epochs", "3", "--out-dir", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["real_crops"] >= 3 and report["synthetic_crops"] == 8 and report["epochs"] == 3
    assert json.loads((out / "fine_tune.json").read_text()) == report
    if report["written"]:
        weight, bias = load_head(out / "text_rec_head.npz")
        assert weight.shape[1] == bias.shape[0]
