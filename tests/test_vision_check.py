"""The house-number check with the shipped model in the real TFLite interpreter (no mocks)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from device.vision import preprocess as pp
from device.vision.check import CheckResult, HouseNumberChecker, Verdict, default_model_path, normalise_expected
from device.vision.errors import ExpectedNumberError
from device.vision.synth import jpeg_bytes, render_photo

TEST_SEED = 31337  # not a training seed (training uses 1.. and the bench 424242)


@pytest.fixture(scope="module")
def photos() -> list:
    rng = np.random.default_rng(TEST_SEED)
    return [render_photo(rng) for _ in range(24)]


def test_model_file_and_card() -> None:
    model = default_model_path()
    assert model.is_file() and model.stat().st_size <= 4 * 1024 * 1024
    card = json.loads(model.with_suffix(".json").read_text())
    for key in ("inputs", "outputs", "training", "training_data", "accuracy", "limitations"):
        assert key in card, key
    assert card["bytes"] == model.stat().st_size
    assert {s["signature"] for s in card["inputs"]} == {"locate", "read"}


def test_interpreter_signatures_and_shapes(checker: HouseNumberChecker) -> None:
    assert checker.backend.name.startswith("tflite:")
    heat = checker.backend.run("locate", image=np.zeros((1, pp.LOC_H, pp.LOC_W, 1), np.float32))["heatmap"]
    assert heat.shape == (1, pp.LOC_H // pp.LOC_STRIDE, pp.LOC_W // pp.LOC_STRIDE)
    probs = checker.backend.run("read", crop=np.zeros((3, pp.READ_H, pp.READ_W, 1), np.float32))["probs"]
    assert probs.shape == (3, pp.MAX_LABEL, pp.CLASSES)
    assert np.allclose(probs.sum(axis=2), 1.0, atol=1e-3)


def test_reads_numbers_on_full_photos(checker: HouseNumberChecker, photos: list) -> None:
    results = [checker.check(jpeg_bytes(p), p.text) for p in photos]
    matches = sum(r.verdict is Verdict.MATCH for r in results)
    assert matches >= 17, [(p.text, r.verdict, r.read, round(r.confidence, 2)) for p, r in zip(photos, results)]
    for photo, result in zip(photos, results):
        if result.verdict is Verdict.MATCH:  # the deciding box overlaps the true glyph box
            x0, y0, x1, y1 = result.boxes[0]
            tx0, ty0, tx1, ty1 = photo.box
            assert min(x1, tx1) > max(x0, tx0) and min(y1, ty1) > max(y0, ty0)


def test_wrong_expected_number_never_matches(checker: HouseNumberChecker, photos: list) -> None:
    for photo in photos:
        wrong = str(int(photo.text.rstrip("ABCDEF")) + 2)
        result = checker.check(photo.image, wrong)
        assert result.verdict is not Verdict.MATCH, (photo.text, wrong, result)


def test_a_wall_without_a_number_is_not_a_match(checker: HouseNumberChecker) -> None:
    rng = np.random.default_rng(TEST_SEED + 1)
    for _ in range(5):
        photo = render_photo(rng, with_number=False)
        assert checker.check(photo.image, "12").verdict is not Verdict.MATCH


def test_blurred_beyond_reading_is_unreadable_and_flagged(checker: HouseNumberChecker, photos: list) -> None:
    photo = photos[0]
    smeared = cv2.GaussianBlur(photo.image, (0, 0), 12)
    result = checker.check(smeared, photo.text)
    assert result.verdict is not Verdict.MATCH
    assert result.quality is not None and "blurry" in result.to_dict()["quality"]["reasons"]


def test_result_document(checker: HouseNumberChecker, photos: list) -> None:
    result = checker.check(photos[1].image, photos[1].text)
    assert isinstance(result, CheckResult)
    doc = result.to_dict()
    assert set(doc) == {"verdict", "read", "confidence", "boxes", "ms", "quality"}
    assert doc["ms"] > 0 and all(len(b) == 4 for b in doc["boxes"])


def test_expected_number_normalised_or_rejected() -> None:
    assert normalise_expected(" 12 a ") == "12A"
    for bad in ("", "12-14", "Flat 3", "1234567", "12Z"):
        with pytest.raises(ExpectedNumberError):
            normalise_expected(bad)


def test_decode_positions() -> None:
    def onehot(indices: list[int], p: float = 0.9) -> np.ndarray:
        probs = np.full((pp.MAX_LABEL, pp.CLASSES), (1 - p) / (pp.CLASSES - 1), np.float32)
        probs[np.arange(pp.MAX_LABEL), indices] = p
        return probs
    end = pp.END
    assert pp.decode_positions(onehot([1, 2, 10, end, end, end])) == pp.Reading("12A", pytest.approx(0.9))
    assert pp.decode_positions(onehot([1, end, 3, end, end, end])).confidence == 0.0  # char after END
    assert pp.decode_positions(onehot([end] * 6)).text == ""
