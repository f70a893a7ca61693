"""Typed MCU messages: what travels inside DATA frames (no I/O). Byte layouts are in PROTOCOL.md.

All multi-byte integers are big-endian. `parse_message` is the one way in; anything unknown or
malformed raises CommandError (logged and counted by the bridge).
"""
from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from firmware_bridge.errors import CommandError

E = TypeVar("E", bound=enum.IntEnum)


class MessageType(enum.IntEnum):
    LED_PATTERN = 0x10  # agent → MCU
    BUZZER_PATTERN = 0x11  # agent → MCU
    INPUT_EVENT = 0x20  # MCU → agent


class Led(enum.IntEnum):
    STATUS = 0  # the RGB LED on the scanner cradle / dash unit
    DOCK = 1  # the dock's stack light


class Color(enum.IntEnum):
    OFF = 0
    GREEN = 1
    RED = 2
    AMBER = 3
    BLUE = 4
    WHITE = 5


class Input(enum.IntEnum):
    DOOR = 1  # cargo door contact: active = open
    IGNITION = 2  # active = ignition on
    BUTTON = 3  # the driver's button: active = pressed


def _u16(value: int, name: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must fit in 16 bits: {value}")
    return value


@dataclass(frozen=True, slots=True)
class LedPattern:
    """Blink `led` in `color`: `on_ms` on, `off_ms` off, `repeat` times (0 = until the next pattern);
    off_ms 0 with repeat 0 = steady. Color OFF turns the LED off."""

    led: Led
    color: Color
    on_ms: int
    off_ms: int
    repeat: int
    TYPE: ClassVar[MessageType] = MessageType.LED_PATTERN
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBHHB")

    def __post_init__(self) -> None:
        _u16(self.on_ms, "on_ms")
        _u16(self.off_ms, "off_ms")
        if not 0 <= self.repeat <= 0xFF:
            raise ValueError(f"repeat must fit in 8 bits: {self.repeat}")

    def to_payload(self) -> bytes:
        return self._LAYOUT.pack(self.led, self.color, self.on_ms, self.off_ms, self.repeat)

    @classmethod
    def from_payload(cls, payload: bytes) -> LedPattern:
        led, color, on_ms, off_ms, repeat = _unpack(cls._LAYOUT, cls.TYPE, payload)
        return cls(_enum(Led, led, cls.TYPE, payload), _enum(Color, color, cls.TYPE, payload), on_ms, off_ms, repeat)


@dataclass(frozen=True, slots=True)
class BuzzerPattern:
    """Beep at `tone_hz`: `on_ms` on, `off_ms` off, `repeat` times (at least once; tone 0 = silence)."""

    tone_hz: int
    on_ms: int
    off_ms: int
    repeat: int
    TYPE: ClassVar[MessageType] = MessageType.BUZZER_PATTERN
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct(">HHHB")

    def __post_init__(self) -> None:
        for name in ("tone_hz", "on_ms", "off_ms"):
            _u16(getattr(self, name), name)
        if not 0 <= self.repeat <= 0xFF:
            raise ValueError(f"repeat must fit in 8 bits: {self.repeat}")

    def to_payload(self) -> bytes:
        return self._LAYOUT.pack(self.tone_hz, self.on_ms, self.off_ms, self.repeat)

    @classmethod
    def from_payload(cls, payload: bytes) -> BuzzerPattern:
        return cls(*_unpack(cls._LAYOUT, cls.TYPE, payload))


@dataclass(frozen=True, slots=True)
class InputEvent:
    """An input changed (or its state after a handshake). `count` counts this input's changes since boot,
    so the agent can tell a missed change from a bounce."""

    input: Input
    active: bool
    count: int
    TYPE: ClassVar[MessageType] = MessageType.INPUT_EVENT
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct(">BBI")

    def to_payload(self) -> bytes:
        return self._LAYOUT.pack(self.input, int(self.active), self.count)

    @classmethod
    def from_payload(cls, payload: bytes) -> InputEvent:
        which, active, count = _unpack(cls._LAYOUT, cls.TYPE, payload)
        if active not in (0, 1):
            raise CommandError(f"input state {active} is not 0 or 1", cls.TYPE, payload)
        return cls(_enum(Input, which, cls.TYPE, payload), bool(active), count)


Message = LedPattern | BuzzerPattern | InputEvent
_BY_TYPE: dict[int, type[LedPattern] | type[BuzzerPattern] | type[InputEvent]] = {
    MessageType.LED_PATTERN: LedPattern, MessageType.BUZZER_PATTERN: BuzzerPattern,
    MessageType.INPUT_EVENT: InputEvent,
}


def _unpack(layout: struct.Struct, msg_type: int, payload: bytes) -> tuple[int, ...]:
    if len(payload) != layout.size:
        raise CommandError(f"payload length {len(payload)}, expected {layout.size}", msg_type, payload)
    return layout.unpack(payload)


def _enum(cls: type[E], value: int, msg_type: int, payload: bytes) -> E:
    members: dict[int, E] = _members(cls)  # a dict lookup: calling the enum class costs 15x more
    member = members.get(value)
    if member is None:
        raise CommandError(f"unknown {cls.__name__} {value}", msg_type, payload)
    return member


@functools.cache
def _members(cls: type[E]) -> dict[int, E]:
    return {int(member): member for member in cls}


def parse_message(msg_type: int, payload: bytes) -> Message:
    cls = _BY_TYPE.get(msg_type)
    if cls is None:
        raise CommandError("unknown message type", msg_type, payload)
    return cls.from_payload(payload)
