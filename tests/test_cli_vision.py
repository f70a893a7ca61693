"""`flexedge check-photo` and `flexedge decode` as a user runs them (real subprocess, real model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.vision.synth import jpeg_bytes, render_photo


def flexedge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "FLEXEDGE_CONFIG": ""}, timeout=120)


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(2024)
    files = []
    for i in range(4):
        photo = render_photo(rng)
        path = folder / f"p{i}.jpg"
        path.write_bytes(jpeg_bytes(photo))
        files.append((path, photo.text))
    return files


def test_check_photo_json(photo_files: list[tuple[Path, str]]) -> None:
    path, number = photo_files[0]
    result = flexedge("check-photo", str(path), "--expect", number, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] in ("match", "mismatch", "unreadable")
    assert set(doc) >= {"verdict", "read", "confidence", "boxes", "ms", "quality"}
    human = flexedge("check-photo", str(path), "--expect", number)
    assert human.returncode == 0 and human.stdout.split()[0] in ("match", "mismatch", "unreadable")


def test_check_photo_batch(photo_files: list[tuple[Path, str]], tmp_path: Path) -> None:
    listing = tmp_path / "list.tsv"
    rows = [f"{p}\t{n}" for p, n in photo_files] + ["# a comment", f"{photo_files[0][0]}\t9999"]
    listing.write_text("\n".join(rows) + "\n")
    result = flexedge("check-photo", "--batch", str(listing), "--json")
    assert result.returncode == 0, result.stderr
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["expected"] for d in docs] == [n for _, n in photo_files] + ["9999"]
    assert all(d["path"] for d in docs)
    assert sum(d["verdict"] == "match" for d in docs[:-1]) >= 2
    assert docs[-1]["verdict"] != "match"


def test_batch_reports_bad_rows_and_goes_on(photo_files: list[tuple[Path, str]], tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(photo_files[2][0].read_bytes()[:5000])
    listing = tmp_path / "list.tsv"
    good, number = photo_files[1]
    listing.write_text(f"junk.jpg\t12\nno tab here\n{good}\t12-14\n{good}\t{number}\n")
    result = flexedge("check-photo", "--batch", str(listing), "--json")
    assert result.returncode == 1
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d.get("error") for d in docs] == ["corrupt", "bad_line", "bad_expected", None]
    assert docs[-1]["verdict"] in ("match", "mismatch", "unreadable")


@pytest.mark.parametrize("case, error", [("truncated", "corrupt"), ("text", "not_an_image")])
def test_check_photo_bad_image_exits_cleanly(photo_files: list[tuple[Path, str]], tmp_path: Path, case: str,
                                             error: str) -> None:
    good = photo_files[0][0].read_bytes()
    path = tmp_path / "bad.jpg"
    path.write_bytes(good[: len(good) // 2] if case == "truncated" else b"just some text, not a photo\n" * 10)
    result = flexedge("check-photo", str(path), "--expect", "12", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"] == error
    assert "Traceback" not in result.stderr and "bad.jpg" in result.stderr


def test_check_photo_usage_errors(photo_files: list[tuple[Path, str]]) -> None:
    assert flexedge("check-photo", str(photo_files[0][0])).returncode == 2
    assert flexedge("check-photo").returncode == 2


def test_decode_json(testdata: Path) -> None:
    image = testdata / "barcodes" / "zxing-blackbox" / "datamatrix-2" / "08.png"
    result = flexedge("decode", str(image), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [(d["symbology"], d["data"], d["decoder"]) for d in doc] == [
        ("Data Matrix", "http://google.com/m", "zxing-cpp")]
    human = flexedge("decode", str(testdata / "barcodes" / "zbar-examples" / "code-39.png"))
    assert human.stdout.strip() == "Code 39: ZBAR-9876543210"
