"""The exception family of firmware_bridge: one base, one branch per layer.

Third-party errors (pyserial, cobs, biip) are converted at the layer boundary with `raise ... from exc`.
"""
from __future__ import annotations


class BridgeError(Exception):
    """Base of every error raised by firmware_bridge."""


class TransportError(BridgeError):
    """A serial port could not be opened or was lost."""


class FrameError(BridgeError):
    """Bytes between two delimiters are not a valid MCU frame; `raw` holds them (shown as hex)."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = bytes(raw)

    def __repr__(self) -> str:
        return f"FrameError({self.reason!r}, raw={self.raw[:32].hex()}{'...' if len(self.raw) > 32 else ''})"


class CommandError(BridgeError):
    """A well-framed MCU message whose type or payload is not valid."""

    def __init__(self, reason: str, msg_type: int, payload: bytes = b"") -> None:
        super().__init__(f"{reason} (type 0x{msg_type:02x}, payload {payload.hex()})")
        self.reason = reason
        self.msg_type = msg_type
        self.payload = bytes(payload)


class LinkError(BridgeError):
    """The MCU link could not get a message across."""


class LinkDown(LinkError):
    """The link is not up (no handshake yet, heartbeats stopped, port unplugged)."""


class NotAcked(LinkError):
    """A message was retransmitted the maximum number of times without an acknowledgement."""

    def __init__(self, seq: int, attempts: int) -> None:
        super().__init__(f"frame seq {seq} not acknowledged after {attempts} attempts")
        self.seq = seq
        self.attempts = attempts


class ScanRejected(BridgeError):
    """A scanner line that is not a valid scan (garbage, bad encoding, bad check digit)."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(f"{reason}: {raw[:64]!r}")
        self.reason = reason
        self.raw = bytes(raw)
