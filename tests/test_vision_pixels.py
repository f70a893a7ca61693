"""The check's pixel operations (Pillow, numpy, cc3d) against OpenCV as the reference implementation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.vision.pixels import laplacian_variance, regions, resize, to_gray
from device.vision.synth import render_photo


@pytest.fixture(scope="module")
def grays() -> list[np.ndarray]:
    rng = np.random.default_rng(77)
    photos = [cv2.cvtColor(render_photo(rng).image, cv2.COLOR_RGB2GRAY) for _ in range(4)]
    edge_cases = [np.zeros((32, 40), np.uint8), np.full((33, 50), 255, np.uint8),
                  rng.integers(0, 256, (100, 640), dtype=np.uint8)]
    return photos + edge_cases


def test_laplacian_variance_is_opencvs_exactly(grays: list[np.ndarray]) -> None:
    for gray in grays:
        want = cv2.Laplacian(gray, cv2.CV_64F).var()
        assert laplacian_variance(gray) == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_gray_is_opencvs_luma() -> None:
    rgb = render_photo(np.random.default_rng(5)).image
    assert np.array_equal(to_gray(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_shrinking_averages_and_enlarging_interpolates() -> None:
    block = np.array([[0, 0, 100, 100], [0, 0, 100, 100], [40, 40, 200, 200], [40, 40, 200, 200]], np.uint8)
    assert resize(block, (2, 2)).tolist() == [[0, 100], [40, 200]]
    small = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    big = resize(small, (160, 120))
    assert big.dtype == np.float32 and big.shape == (120, 160)
    np.testing.assert_allclose(big, cv2.resize(small, (160, 120), interpolation=cv2.INTER_LINEAR), atol=1e-6)
    assert resize(block, (4, 4)) is block


def test_regions_match_opencv_connected_components() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.random((120, 160)).astype(np.float32)
        mask = values >= rng.uniform(0.5, 0.95)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        want = sorted((int(x), int(y), int(w), int(h), int(a), float(values[labels == k].mean()))
                      for k, (x, y, w, h, a) in enumerate(stats) if k > 0)
        got = sorted((r.x, r.y, r.width, r.height, r.area, r.mean) for r in regions(mask, values))
        assert [g[:5] for g in got] == [w[:5] for w in want]
        np.testing.assert_allclose([g[5] for g in got], [w[5] for w in want], rtol=1e-5)
    assert regions(np.zeros((10, 10), bool), np.zeros((10, 10), np.float32)) == []
