"""The check's second look: a closer locator pass (tighter box) and reading by agreement of several boxes.

Pure helpers on hand-made values; the refinement and the check with the shipped model in the real TFLite
interpreter on synthetic photos from device/vision/synth.py (no mocks).
"""
from __future__ import annotations

import numpy as np
import pytest

from device.vision import preprocess as pp
from device.vision.check import CheckThresholds, HouseNumberChecker, Verdict
from device.vision.image import load_image
from device.vision.synth import jpeg_bytes, render_photo

LOOKS_SEED = 4242  # not a training seed (training uses 1.. with photos seed*100003+i), not the bench's 424242


def area(box: pp.Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def intersection(a: pp.Box, b: pp.Box) -> int:
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: pp.Box, b: pp.Box) -> float:
    union = area(a) + area(b) - intersection(a, b)
    return intersection(a, b) / union if union else 0.0


@pytest.fixture(scope="module")
def photos() -> list:
    rng = np.random.default_rng(LOOKS_SEED)
    return [render_photo(rng) for _ in range(40)]


def test_percentiles_equal_numpys() -> None:
    rng = np.random.default_rng(1)
    for values in (rng.integers(0, 256, (32, 77), dtype=np.uint8), rng.random((120, 160), dtype=np.float32),
                   np.array([[7]], np.uint8), np.array([3, 200], np.uint8)):
        assert pp.percentiles(values, (2, 50, 98)) == pytest.approx(np.percentile(values, (2, 50, 98)), abs=1e-5)


def test_jittered_boxes_start_with_the_box_and_stay_in_the_photo() -> None:
    boxes = pp.jittered_boxes((600, 10, 640, 40), (640, 480))
    assert boxes[0] == (600, 10, 640, 40) and len(boxes) == len(pp.BOX_JITTER) == len(set(boxes))
    assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 for x0, y0, x1, y1 in boxes)
    tiny = pp.jittered_boxes((0, 0, 1, 1), (640, 480))  # never an empty crop
    assert all(x1 > x0 and y1 > y0 for x0, y0, x1, y1 in tiny)


def test_zoom_window_keeps_the_locator_aspect_around_the_box() -> None:
    x0, y0, x1, y1 = pp.zoom_window((300, 200, 340, 230), (640, 480), 5.0)
    assert (y1 - y0) == 150 and (x1 - x0) == 200  # 5 box heights, 4:3 like the locator input
    assert x0 <= 300 and y0 <= 200 and x1 >= 340 and y1 >= 230
    wide = pp.zoom_window((100, 200, 500, 230), (640, 480), 5.0)
    assert wide[0] <= 100 and wide[2] >= 500  # a wide number fits the window
    assert pp.zoom_window((0, 0, 40, 30), (640, 480), 5.0)[:2] == (0, 0)  # clipped to the photo


def test_union_of_overlapping_merges_a_split_number_only() -> None:
    digits, suffix, lamp = (100, 100, 160, 130), (165, 102, 180, 130), (400, 50, 420, 90)
    assert pp.union_of_overlapping([digits, suffix, lamp], (95, 95, 185, 135)) == (100, 100, 180, 130)
    assert pp.union_of_overlapping([lamp], (95, 95, 185, 135)) is None


def test_consensus_needs_agreeing_looks() -> None:
    r = pp.Reading
    assert pp.consensus([r("12", 0.99), r("17", 0.6), r("12", 0.8)], agree=2, longer_min=0.7) == r("12", 0.8)
    lone = pp.consensus([r("4", 0.98), r("1", 0.5), r("7", 0.4)], agree=2, longer_min=0.7)
    assert lone.confidence == 0.0  # one sure look alone decides nothing
    # the text whose second-best look is surest wins, not the single most confident look
    mixed = [r("64", 0.99), r("64E", 0.9), r("64E", 0.85), r("64", 0.3)]
    assert pp.consensus(mixed, agree=2, longer_min=0.95) == r("64E", 0.85)
    assert pp.consensus([], agree=2, longer_min=0.7) == r("", 0.0)


def test_consensus_prefers_the_reading_that_was_not_cut_off() -> None:
    r = pp.Reading
    # seed 560 photo 172: crops of a loose first box cut the suffix off "310A" and read "310" surely
    cut = [r("310", 0.999), r("310", 0.998), r("310A", 0.997), r("310A", 0.991), r("310", 0.4)]
    assert pp.consensus(cut, agree=2, longer_min=0.7) == r("310A", 0.991)
    lead = [r("2A", 1.0), r("2A", 0.999), r("12A", 0.998), r("12A", 0.983)]  # a thin first digit cut off
    assert pp.consensus(lead, agree=2, longer_min=0.7) == r("12A", 0.983)
    # a longer reading from one look only, or a weak one, does not spoil a clear reading
    assert pp.consensus([r("12", 0.99), r("12", 0.98), r("12A", 0.99)], agree=2, longer_min=0.7) == r("12", 0.98)
    assert pp.consensus([r("12", 0.99), r("12", 0.98), r("12A", 0.6), r("12A", 0.5)], agree=2,
                        longer_min=0.7) == r("12", 0.98)


def test_a_cut_off_suffix_never_matches_the_shorter_number(checker: HouseNumberChecker) -> None:
    rng = np.random.default_rng(LOOKS_SEED + 2)
    for text in ("310A", "27B", "908F", "3C", "45D"):
        photo = render_photo(rng, text=text)
        assert checker.check(photo.image, text[:-1]).verdict is not Verdict.MATCH, text


def test_refinement_tightens_located_boxes(checker: HouseNumberChecker, photos: list) -> None:
    first, refined = [], []
    for photo in photos:
        gray = load_image(photo.image).gray
        found = checker.locate(gray)
        if not found:
            continue
        tight = checker.refine(gray, found[0].box)
        first.append(iou(found[0].box, photo.box))
        refined.append(iou(tight, photo.box) if tight else iou(found[0].box, photo.box))
    assert len(first) >= 36
    assert np.mean(refined) > np.mean(first) + 0.03, (np.mean(first), np.mean(refined))


def test_refinement_keeps_the_suffix(checker: HouseNumberChecker) -> None:
    rng = np.random.default_rng(LOOKS_SEED + 1)
    for text in ("461E", "27B", "908F", "3C"):
        photo = render_photo(rng, text=text)
        gray = load_image(photo.image).gray
        found = checker.locate(gray)
        assert found, text
        tight = checker.refine(gray, found[0].box)
        assert tight is not None and tight[2] >= photo.box[2] - 0.15 * (photo.box[2] - photo.box[0]), \
            (text, photo.box, tight)


def test_refinement_off_when_zoom_is_zero(photos: list, checker: HouseNumberChecker) -> None:
    plain = HouseNumberChecker(checker.backend, CheckThresholds(refine_zoom=0))
    gray = load_image(photos[0].image).gray
    assert plain.refine(gray, (100, 100, 160, 130)) is None


def test_second_look_reads_more_and_still_refuses_near_misses(checker: HouseNumberChecker, photos: list) -> None:
    plain = HouseNumberChecker(checker.backend, CheckThresholds(refine_zoom=0))
    looked = [checker.check(jpeg_bytes(p), p.text) for p in photos]
    first_only = [plain.check(jpeg_bytes(p), p.text) for p in photos]
    matches = sum(r.verdict is Verdict.MATCH for r in looked)
    assert matches >= sum(r.verdict is Verdict.MATCH for r in first_only)
    assert matches >= 33, [(p.text, r.verdict, r.read) for p, r in zip(photos, looked)]
    for photo, result in zip(photos, looked):
        if result.verdict is Verdict.MATCH:  # the deciding (refined) box is centred on the number
            (x0, y0, x1, y1), (tx0, ty0, tx1, ty1) = result.boxes[0], photo.box
            assert tx0 <= (x0 + x1) / 2 <= tx1 and ty0 <= (y0 + y1) / 2 <= ty1, (photo.text, result.boxes[0], photo.box)
        digits = photo.text.rstrip("ABCDEF")
        for wrong in (digits if digits != photo.text else digits + "A", str(int(digits) + 1)):
            assert checker.check(photo.image, wrong).verdict is not Verdict.MATCH, (photo.text, wrong)
