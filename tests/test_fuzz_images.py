"""Fuzzing the photo path: a real photo's bytes mutated (bit flips, cut, spliced, header-only) and arbitrary
bytes go through `load_image`, the house-number check and the barcode decoder. Each input is either checked
or refused with an ImageError naming the reason — never another exception. Inputs that once broke a decoder
are kept in tests/fuzz_corpus/images/ and replayed."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from device.vision.barcodes import decode
from device.vision.check import CheckResult, HouseNumberChecker
from device.vision.errors import ImageError
from device.vision.image import load_image
from device.vision.synth import jpeg_bytes, render_photo

CORPUS = Path(__file__).parent / "fuzz_corpus" / "images"


def _photo() -> bytes:
    return jpeg_bytes(render_photo(np.random.default_rng(11), text="42"))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 180, 160)).save(buf, "PNG")
    return buf.getvalue()


PHOTO = _photo()
PNG = _png()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([PHOTO, PNG])))
    for _ in range(draw(st.integers(0, 8))):  # bit flips anywhere, the headers included
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
    cut = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        data = data[:cut]  # a file cut short (a write interrupted by a power loss)
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))  # trailing junk
    return bytes(data)


@pytest.fixture(scope="module")
def checker() -> HouseNumberChecker:
    return HouseNumberChecker.default()


def _check_or_refuse(checker: HouseNumberChecker, data: bytes) -> None:
    try:
        image = load_image(data)
    except ImageError as exc:
        assert exc.reason, exc  # refused with a named reason
        return
    result = checker.check(image, "42")
    assert isinstance(result, CheckResult)
    assert isinstance(decode(image), list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutated_photos_are_checked_or_refused(checker: HouseNumberChecker, data: bytes) -> None:
    _check_or_refuse(checker, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused(checker: HouseNumberChecker, data: bytes) -> None:
    _check_or_refuse(checker, data)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*")), ids=lambda p: p.name)
def test_corpus_inputs_are_checked_or_refused(checker: HouseNumberChecker, path: Path) -> None:
    _check_or_refuse(checker, path.read_bytes())
