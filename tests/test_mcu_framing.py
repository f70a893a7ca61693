"""MCU frame codec, message payloads and the bounded splitter: pure, no I/O (hypothesis round trips)."""
from __future__ import annotations

import pytest
from cobs import cobs
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from firmware_bridge.delimited import BoundedSplitter
from firmware_bridge.errors import CommandError, FrameError
from firmware_bridge.mcu.commands import (
    BuzzerPattern,
    Color,
    Input,
    InputEvent,
    Led,
    LedPattern,
    MessageType,
    parse_message,
)
from firmware_bridge.mcu.framing import (
    ACK_WIRE,
    MAX_ENCODED,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameKind,
    crc16,
    parse_frame,
)

frames = st.builds(Frame, st.sampled_from(FrameKind), st.integers(0, 255), st.integers(0, 255),
                   st.binary(max_size=MAX_PAYLOAD))


def test_crc_is_crc16_ccitt_false() -> None:
    # The catalogue check value of CRC-16/CCITT-FALSE (CRC-16/IBM-3740): firmware must match it.
    assert crc16(b"123456789") == 0x29B1


def reference_crc16(data: bytes) -> int:
    """PROTOCOL.md 3.1's bitwise C reference (what the firmware runs), line for line."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@given(st.binary(max_size=300))
def test_crc_matches_the_firmware_reference(data: bytes) -> None:
    assert crc16(data) == reference_crc16(data)


@pytest.mark.parametrize("frame, body, wire", [
    (Frame(FrameKind.DATA, 5, MessageType.LED_PATTERN, LedPattern(Led.STATUS, Color.GREEN, 150, 100, 1).to_payload()),
     "01 05 10 00 01 00 96 00 64 01 b7 6d", "04 01 05 10 02 01 02 96 05 64 01 b7 6d 00"),
    (Frame(FrameKind.ACK, 5), "02 05 00 5d 09", "03 02 05 03 5d 09 00"),
    (Frame(FrameKind.HEARTBEAT, payload=(1000).to_bytes(4, "big")), "06 00 00 00 00 03 e8 79 9e",
     "02 06 01 01 01 05 03 e8 79 9e 00"),
])
def test_worked_examples(frame: Frame, body: str, wire: str) -> None:
    # PROTOCOL.md 3.2, byte for byte (CRC included).
    assert frame.to_bytes() == bytes.fromhex(body)
    assert frame.encode() == bytes.fromhex(wire)


@given(frames)
def test_round_trip(frame: Frame) -> None:
    wire = frame.encode()
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert parse_frame(wire[:-1]) == frame
    assert FrameDecoder().feed(wire) == [frame]


@given(st.lists(frames, max_size=20), st.integers(1, 17))
def test_round_trip_in_pieces(sent: list[Frame], piece: int) -> None:
    stream = b"".join(f.encode() for f in sent)
    decoder = FrameDecoder()
    got = [f for i in range(0, len(stream), piece) for f in decoder.feed(stream[i:i + piece])]
    assert got == sent and decoder.rejected == 0


def _valid_bodies(stream: bytes) -> set[bytes]:
    bodies = set()
    for chunk in stream.split(b"\x00")[:-1]:
        try:
            body = cobs.decode(chunk)
        except cobs.DecodeError:
            continue
        if len(body) >= 5 and crc16(body[:-2]) == int.from_bytes(body[-2:], "big"):
            bodies.add(body)
    return bodies


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_any_bytes_never_raise_and_never_yield_a_bad_crc(stream: bytes, piece: int) -> None:
    decoder = FrameDecoder()
    got = [f for i in range(0, len(stream), piece) for f in decoder.feed(stream[i:i + piece])]
    valid = _valid_bodies(stream)
    for frame in got:
        body = frame.to_bytes()
        assert body in valid  # it was really on the wire, CRC intact


@given(st.lists(st.one_of(frames, st.binary(min_size=1, max_size=80).filter(lambda b: b"\x00" not in b)),
                max_size=30))
def test_garbage_between_frames_is_counted_and_skipped(items: list[Frame | bytes]) -> None:
    for item in items:
        if isinstance(item, bytes):
            try:
                parse_frame(item)
            except FrameError:
                continue
            assume(False)  # a random chunk that happens to be a valid frame
    stream = b"".join(i.encode() if isinstance(i, Frame) else i + b"\x00" for i in items)
    decoder = FrameDecoder()
    assert decoder.feed(stream) == [i for i in items if isinstance(i, Frame)]
    assert decoder.rejected == sum(isinstance(i, bytes) for i in items)


@pytest.mark.parametrize(("chunk", "reason"), [
    (b"\x01\x01", "short frame"),
    (cobs.encode(b"\x01\x00\x00\x00\x00"), "bad CRC"),
    (cobs.encode(b"\x09\x00\x00" + crc16(b"\x09\x00\x00").to_bytes(2, "big")), "unknown frame kind 0x09"),
    (b"\x05\x01", "bad COBS"),
    (b"\x01" * (MAX_ENCODED + 1), "oversized frame"),
])
def test_bad_frames_are_named(chunk: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(chunk)
    assert info.value.reason.startswith(reason)
    assert "raw=" in repr(info.value)


def test_decoder_caps_a_stream_without_delimiter() -> None:
    decoder = FrameDecoder()
    frame = Frame(FrameKind.HEARTBEAT, payload=b"\x00\x00\x00\x01")
    for _ in range(1000):
        assert decoder.feed(b"\x55" * 1000) == []
    assert decoder.oversize == 1 and decoder._chunks.buffered <= 2 * MAX_ENCODED
    assert decoder.feed(b"\x00" + frame.encode()) == [frame]


def test_splitter_cr_lf_crlf_and_cap() -> None:
    splitter = BoundedSplitter(b"\r\n", 8)
    assert splitter.feed(b"ab\rcd\nef\r\n") == [b"ab", b"cd", b"ef", b""]
    assert splitter.feed(b"123456789") == [] and splitter.oversize_chunks == 1
    assert splitter.feed(b"more\nok\n") == [b"ok"]
    assert splitter.discarded_bytes == 13


@given(st.sampled_from(Led), st.sampled_from(Color), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.integers(0, 255))
def test_led_pattern_round_trip(led: Led, color: Color, on_ms: int, off_ms: int, repeat: int) -> None:
    message = LedPattern(led, color, on_ms, off_ms, repeat)
    assert parse_message(MessageType.LED_PATTERN, message.to_payload()) == message


def test_messages_round_trip_and_bad_payloads() -> None:
    for message in (BuzzerPattern(2700, 60, 0, 1), InputEvent(Input.DOOR, True, 70000)):
        assert parse_message(message.TYPE, message.to_payload()) == message
    with pytest.raises(CommandError, match="unknown message type"):
        parse_message(0x7F, b"")
    with pytest.raises(CommandError, match="payload length"):
        parse_message(MessageType.BUZZER_PATTERN, b"\x00")
    with pytest.raises(CommandError, match="unknown Color 9"):
        parse_message(MessageType.LED_PATTERN, bytes([0, 9, 0, 0, 0, 0, 0]))
    with pytest.raises(CommandError, match="input state 2"):
        parse_message(MessageType.INPUT_EVENT, bytes([1, 2, 0, 0, 0, 0]))
    with pytest.raises(ValueError):
        LedPattern(Led.STATUS, Color.RED, 70000, 0, 0)


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=MAX_PAYLOAD))
def test_the_send_paths_shortcuts_give_the_same_bytes(seq: int, msg_type: int, payload: bytes) -> None:
    assert Frame.encode_data(seq, msg_type, payload) == Frame(FrameKind.DATA, seq, msg_type, payload).encode()
    assert ACK_WIRE[seq] == Frame(FrameKind.ACK, seq).encode()
    assert parse_frame(ACK_WIRE[seq][:-1]) == Frame(FrameKind.ACK, seq)  # the looked-up ACK
