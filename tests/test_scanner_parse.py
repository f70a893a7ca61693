"""Scanner line parsing (AIM prefixes, GS1 via biip, rejections) and double-read suppression: no I/O."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.errors import ScanRejected
from firmware_bridge.scanner import DoubleReadFilter, Scan, ScannerConfig, ScannerStats, Symbology, parse_line
from firmware_bridge.scanner.reader import ScannerProtocol
from firmware_bridge.transport import PortSettings


def test_ean13() -> None:
    scan = parse_line(b"]E05901234123457")
    assert (scan.symbology, scan.aim, scan.data, scan.gtin) == (Symbology.EAN_13, "]E0", "5901234123457",
                                                               "5901234123457")


def test_gs1_128_sscc() -> None:
    scan = parse_line(b"]C100376104250021234569")
    assert scan.symbology is Symbology.GS1_128
    assert scan.sscc == "376104250021234569" and scan.raw == "]C100376104250021234569"
    assert scan.to_dict()["fields"] == {"00": "376104250021234569"}
    assert [(f.ai, f.value, f.title) for f in scan.fields] == [("00", "376104250021234569", "SSCC")]


def test_gs1_with_group_separator_and_dates() -> None:
    scan = parse_line(b"]C10109501101530003\x1d10ABC123\x1d17250131")
    assert scan.gtin == "09501101530003"
    assert scan.field_value("10") == "ABC123" and scan.field_value("17") == "250131"


def test_gs1_datamatrix_and_qr_and_code39() -> None:
    assert parse_line(b"]d2010950110153000317260101").symbology is Symbology.GS1_DATAMATRIX
    qr = parse_line("]Q1https://flex.example/p/ü1".encode())
    assert (qr.symbology, qr.data, qr.fields) == (Symbology.QR, "https://flex.example/p/ü1", ())
    code39 = parse_line(b"]A0PKG-12AB")
    assert (code39.symbology, code39.data) == (Symbology.CODE_39, "PKG-12AB")


def test_without_aim_prefix() -> None:
    scan = parse_line(b"5901234123457")
    assert (scan.symbology, scan.aim, scan.gtin) == (Symbology.UNKNOWN, None, "5901234123457")
    with pytest.raises(ScanRejected, match="no AIM"):
        parse_line(b"5901234123457", require_aim=True)


@pytest.mark.parametrize(("line", "reason"), [
    (b"\xff\xfe\x80", "not UTF-8"),
    (b"\x15\x07ABC", "control character 0x15"),
    (b"   ", "blank line"),
    (b"]E05901234123458", "bad ean13: Invalid GTIN check digit"),
    (b"]E012345", "bad ean13"),
    (b"]C1hello", "bad GS1 data in gs1-128"),
    (b"]A0pkg-lower", "character outside Code 39"),
    (b"]Q1", "AIM prefix without data"),
])
def test_rejections_name_the_reason(line: bytes, reason: str) -> None:
    with pytest.raises(ScanRejected) as info:
        parse_line(line)
    assert info.value.reason.startswith(reason)
    assert info.value.raw == line


def test_double_read_window() -> None:
    dedupe = DoubleReadFilter(window_s=0.5)
    a, b = parse_line(b"]A0AAA"), parse_line(b"]A0BBB")
    assert not dedupe.is_double(a, now=10.0)
    assert dedupe.is_double(a, now=10.3)  # the scanner read it twice
    assert not dedupe.is_double(b, now=10.4)
    assert not dedupe.is_double(a, now=11.0)  # a deliberate rescan after the window
    assert dedupe.is_double(a, now=11.2)


def test_double_read_memory_is_bounded() -> None:
    dedupe = DoubleReadFilter(window_s=100.0, memory=10)
    scans = [parse_line(f"]A0C{i}".encode()) for i in range(50)]
    for scan in scans:
        assert not dedupe.is_double(scan, now=1.0)
    assert len(dedupe._seen) == 10


AIM_LIKE = st.sampled_from([b"", b"]", b"]C1", b"]d2", b"]Q3", b"]E0", b"]E4", b"]A0", b"]X9"])
GS1_LIKE = st.text(alphabet="0123456789\x1d()AB", max_size=60).map(str.encode)


@given(AIM_LIKE, st.one_of(st.binary(max_size=300), GS1_LIKE))
def test_any_line_is_a_scan_or_a_named_rejection(prefix: bytes, body: bytes) -> None:
    line = prefix + body
    try:
        scan = parse_line(line)
    except ScanRejected as exc:
        assert exc.reason and exc.raw == line
    else:
        assert scan.data and "\r" not in scan.data and "\n" not in scan.data


@given(st.lists(st.binary(max_size=64), max_size=30))
def test_protocol_survives_any_bytes(chunks: list[bytes]) -> None:
    scans: list[Scan] = []
    stats = ScannerStats()
    protocol = ScannerProtocol(ScannerConfig(PortSettings("/dev/null")), stats, DoubleReadFilter(1.0), scans.append)
    for chunk in chunks:
        protocol.data_received(chunk)
    protocol.connection_lost(None)
    assert stats.scans == len(scans) and stats.lines == stats.scans + stats.rejected + stats.double_reads
