"""Driver feedback: what the agent core calls after a scan or an event, mapped to MCU LED/buzzer patterns.

Fire and forget: a call returns at once (the agent must not wait on a serial round trip to go on). With
no MCU, or its link down, the signal becomes a log line, so a bench without hardware still shows it.
"""
from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from firmware_bridge.errors import LinkError
from firmware_bridge.mcu.bridge import McuBridge
from firmware_bridge.mcu.commands import BuzzerPattern, Color, Led, LedPattern

log = logging.getLogger(__name__)

BEEP_HZ = 2700  # the usual piezo resonance: loudest for the least current


class Signal(enum.StrEnum):
    GOOD_SCAN = "good_scan"  # the package belongs here
    WRONG_PACKAGE = "wrong_package"  # wrong van, wrong route, not on the manifest
    ATTENTION = "attention"  # the driver must look at the screen (instruction, access code)
    ERROR = "error"  # something on the unit needs a technician
    ALL_DONE = "all_done"  # loading complete / block complete
    CLEAR = "clear"  # LED off, buzzer quiet


@dataclass(frozen=True)
class Pattern:
    led: LedPattern
    buzzer: BuzzerPattern | None = None


PATTERNS: dict[Signal, Pattern] = {
    Signal.GOOD_SCAN: Pattern(LedPattern(Led.STATUS, Color.GREEN, 150, 100, 1), BuzzerPattern(BEEP_HZ, 60, 0, 1)),
    Signal.WRONG_PACKAGE: Pattern(LedPattern(Led.STATUS, Color.RED, 250, 150, 4),
                                  BuzzerPattern(BEEP_HZ // 2, 800, 0, 1)),
    Signal.ATTENTION: Pattern(LedPattern(Led.STATUS, Color.AMBER, 300, 300, 0), BuzzerPattern(BEEP_HZ, 80, 120, 2)),
    Signal.ERROR: Pattern(LedPattern(Led.STATUS, Color.RED, 1000, 0, 0), BuzzerPattern(BEEP_HZ // 2, 200, 200, 3)),
    Signal.ALL_DONE: Pattern(LedPattern(Led.STATUS, Color.GREEN, 1000, 0, 1), BuzzerPattern(BEEP_HZ, 60, 60, 3)),
    Signal.CLEAR: Pattern(LedPattern(Led.STATUS, Color.OFF, 0, 0, 0), BuzzerPattern(0, 0, 0, 1)),
}


class Feedback:
    def __init__(self, bridge: McuBridge | None = None) -> None:
        self._bridge = bridge
        self.shown = 0  # signals sent to the MCU
        self.logged_only = 0  # signals that became a log line (no MCU, link down)

    def good_scan(self) -> asyncio.Future[list[None]] | None:
        return self.signal(Signal.GOOD_SCAN)

    def wrong_package(self) -> asyncio.Future[list[None]] | None:
        return self.signal(Signal.WRONG_PACKAGE)

    def attention(self) -> asyncio.Future[list[None]] | None:
        return self.signal(Signal.ATTENTION)

    def error(self) -> asyncio.Future[list[None]] | None:
        return self.signal(Signal.ERROR)

    def all_done(self) -> asyncio.Future[list[None]] | None:
        return self.signal(Signal.ALL_DONE)

    def clear(self) -> asyncio.Future[list[None]] | None:
        return self.signal(Signal.CLEAR)

    def signal(self, signal: Signal) -> asyncio.Future[list[None]] | None:
        """Show `signal`; returns a future done when the MCU acknowledged it, or None if only logged."""
        pattern = PATTERNS[signal]
        if self._bridge is None or not self._bridge.is_up:
            self.logged_only += 1
            log.info("feedback %s (no MCU attached: shown as this log line only)", signal.value)
            return None
        try:
            parts = [self._bridge.post(pattern.led)]
            if pattern.buzzer is not None:
                parts.append(self._bridge.post(pattern.buzzer))
        except LinkError as exc:
            self.logged_only += 1
            log.info("feedback %s (MCU unavailable: %s)", signal.value, exc)
            return None
        self.shown += 1
        done = asyncio.gather(*parts)
        done.add_done_callback(lambda f: _log_failure(signal, f))
        return done


def _log_failure(signal: Signal, future: asyncio.Future[list[None]]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("feedback %s not confirmed by the MCU: %s", signal.value, future.exception())
