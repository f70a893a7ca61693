"""MCU frames: bytes <-> `Frame`, COBS with a 0x00 delimiter and CRC-16/CCITT-FALSE (no I/O).

Frame body (before COBS): kind u8 | seq u8 | type u8 | payload (0..64 bytes) | CRC-16 big-endian.
The CRC is CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740): poly 0x1021, init 0xFFFF, no reflection,
xorout 0x0000, check value 0x29B1 for b"123456789"; it covers kind..payload. See PROTOCOL.md.
"""
from __future__ import annotations

import binascii
import enum
import logging
from typing import NamedTuple

from cobs import cobs

from firmware_bridge.delimited import BoundedSplitter
from firmware_bridge.errors import FrameError

log = logging.getLogger(__name__)

DELIMITER = b"\x00"
HEADER_LEN = 3
CRC_LEN = 2
MAX_PAYLOAD = 64
MAX_BODY = HEADER_LEN + MAX_PAYLOAD + CRC_LEN
# COBS adds one byte per started 254-byte block; anything longer between delimiters is noise.
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 1

CRC16_INIT = 0xFFFF  # CRC-16/CCITT-FALSE starts from all ones; crc_hqx is poly 0x1021, unreflected, no xorout


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data` (the standard library's C implementation)."""
    return binascii.crc_hqx(data, CRC16_INIT)


def crc16_intact(body: bytes) -> bool:
    """`body` ends with the right CRC of what comes before it: an unreflected CRC with no xorout leaves a
    remainder of 0 over data + its CRC (big-endian), so one pass over the whole body checks it."""
    return binascii.crc_hqx(body, CRC16_INIT) == 0


class FrameKind(enum.IntEnum):
    DATA = 0x01  # a sequenced message, acknowledged by the receiver
    ACK = 0x02  # seq = the last DATA seq received in order (cumulative)
    NACK = 0x03  # seq = the DATA seq the receiver expects next (resend from there)
    HELLO = 0x04  # version handshake; resets sequence numbers (payload: see link.Hello)
    HELLO_ACK = 0x05  # answer to HELLO, same payload layout
    HEARTBEAT = 0x06  # liveness, not sequenced, not acknowledged


_KINDS = {int(kind): kind for kind in FrameKind}  # a dict lookup: FrameKind(byte) costs as much as the CRC
_DATA_BYTE = int(FrameKind.DATA)  # a plain int: bytes() of an IntEnum member calls its __index__


class _FrameFields(NamedTuple):
    kind: FrameKind
    seq: int = 0
    msg_type: int = 0
    payload: bytes = b""


class Frame(_FrameFields):
    """One frame, immutable. A named tuple rather than a frozen dataclass: a receiver makes one per frame,
    and a tuple is made several times faster (the parser, whose values are in range by construction,
    skips the checks)."""

    __slots__ = ()

    def __new__(cls, kind: FrameKind, seq: int = 0, msg_type: int = 0, payload: bytes = b"") -> Frame:
        if not 0 <= seq <= 0xFF or not 0 <= msg_type <= 0xFF:
            raise ValueError(f"seq and type are bytes: {seq}, {msg_type}")
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        return super().__new__(cls, kind, seq, msg_type, payload)

    def to_bytes(self) -> bytes:
        """The frame body with its CRC, before COBS."""
        body = bytes((self.kind, self.seq, self.msg_type)) + self.payload
        return body + crc16(body).to_bytes(CRC_LEN, "big")

    @staticmethod
    def encode_data(seq: int, msg_type: int, payload: bytes) -> bytes:
        """`Frame(DATA, seq, msg_type, payload).encode()` for values the link already checked (the send path)."""
        body = bytes((_DATA_BYTE, seq, msg_type)) + payload
        encoded: bytes = cobs.encode(body + binascii.crc_hqx(body, CRC16_INIT).to_bytes(CRC_LEN, "big"))
        return encoded + DELIMITER

    @classmethod
    def from_bytes(cls, body: bytes) -> Frame:
        """Parse a frame body (after COBS decoding); raises FrameError."""
        if len(body) < HEADER_LEN + CRC_LEN:
            raise FrameError("short frame", body)
        if len(body) > MAX_BODY:
            raise FrameError("oversized frame", body)
        if not crc16_intact(body):
            raise FrameError("bad CRC", body)
        kind = _KINDS.get(body[0])
        if kind is None:
            raise FrameError(f"unknown frame kind 0x{body[0]:02x}", body)
        # seq and type are single bytes and the length was checked above: no need for __new__'s checks
        return tuple.__new__(cls, (kind, body[1], body[2], bytes(body[HEADER_LEN:-CRC_LEN])))

    def encode(self) -> bytes:
        """What goes on the wire: COBS(body) followed by the 0x00 delimiter."""
        encoded: bytes = cobs.encode(self.to_bytes())
        return encoded + DELIMITER


# Every ACK frame as it goes on the wire, by seq: a receiver sends one per DATA frame, so a sender reads as many.
ACK_WIRE: tuple[bytes, ...] = tuple(Frame(FrameKind.ACK, seq).encode() for seq in range(256))
_ACK_BY_CHUNK = {wire[:-1]: Frame(FrameKind.ACK, seq) for seq, wire in enumerate(ACK_WIRE)}


def parse_frame(encoded: bytes) -> Frame:
    """One chunk between delimiters (COBS encoded, delimiter removed) → Frame; raises FrameError."""
    known = _ACK_BY_CHUNK.get(encoded)  # an intact ACK: the same bytes every time, decoded once
    if known is not None:
        return known
    if len(encoded) > MAX_ENCODED:
        raise FrameError("oversized frame", encoded)
    try:
        body = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise FrameError(f"bad COBS: {exc}", encoded) from exc
    return Frame.from_bytes(body)


class FrameDecoder:
    """Feed any bytes, get valid frames; every rejected chunk is logged and counted, never raised."""

    def __init__(self) -> None:
        # Twice the longest frame: a longer run without a delimiter is noise and is cut off.
        self._chunks = BoundedSplitter(DELIMITER, 2 * MAX_ENCODED)
        self.frames = 0
        self.rejected = 0
        self.last_error: FrameError | None = None

    @property
    def oversize(self) -> int:
        return self._chunks.oversize_chunks

    def reset(self) -> None:
        self._chunks.reset()

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        for chunk in self._chunks.feed(data):
            if not chunk:
                continue  # back-to-back delimiters: senders may flush the line with a leading 0x00
            try:
                frames.append(parse_frame(chunk))
            except FrameError as exc:
                self.rejected += 1
                self.last_error = exc
                log.debug("rejected frame: %r", exc)
        self.frames += len(frames)
        return frames
