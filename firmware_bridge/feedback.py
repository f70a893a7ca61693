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
    """What the driver should notice. The values match device.workflow.Feedback, so the agent maps a
    workflow answer with `Signal(feedback.value)`."""

    OK = "ok"  # acknowledged, nothing special
    GOOD_SCAN = "good_scan"  # the package belongs here
    DUPLICATE_SCAN = "duplicate_scan"
    WRONG_PACKAGE = "wrong_package"  # wrong van, wrong route, not on the manifest
    WRONG_ROUTE = "wrong_route"  # dock: belongs to another route or bag
    ATTENTION = "attention"  # look at the screen (instruction, access code, missing packages)
    REJECTED = "rejected"  # the action is not possible now
    CLAIM_WON = "claim_won"
    CLAIM_LOST = "claim_lost"
    LOADING_COMPLETE = "loading_complete"
    ARRIVED = "arrived"
    RETAKE_PHOTO = "retake_photo"
    WRONG_HOUSE = "wrong_house"
    SIGNATURE_NEEDED = "signature_needed"
    DELIVERED = "delivered"
    EXCEPTION_RECORDED = "exception_recorded"
    ROUTE_STAGED = "route_staged"
    BLOCK_COMPLETE = "block_complete"
    ERROR = "error"  # something on the unit needs a technician
    CLEAR = "clear"  # LED off, buzzer quiet


@dataclass(frozen=True)
class Pattern:
    led: LedPattern
    buzzer: BuzzerPattern | None = None


def _pattern(color: Color, on_ms: int, off_ms: int, blinks: int,
             beep: tuple[int, int, int, int] | None = None) -> Pattern:
    """`blinks` 0 = until the next pattern; `beep` = (tone_hz, on_ms, off_ms, count)."""
    return Pattern(LedPattern(Led.STATUS, color, on_ms, off_ms, blinks), BuzzerPattern(*beep) if beep else None)


LOW_HZ = BEEP_HZ // 2  # bad news sounds lower
PATTERNS: dict[Signal, Pattern] = {
    Signal.OK: _pattern(Color.GREEN, 80, 0, 1),
    Signal.GOOD_SCAN: _pattern(Color.GREEN, 150, 100, 1, (BEEP_HZ, 60, 0, 1)),
    Signal.DUPLICATE_SCAN: _pattern(Color.AMBER, 150, 100, 2, (BEEP_HZ, 40, 60, 2)),
    Signal.WRONG_PACKAGE: _pattern(Color.RED, 250, 150, 4, (LOW_HZ, 800, 0, 1)),
    Signal.WRONG_ROUTE: _pattern(Color.RED, 250, 150, 4, (LOW_HZ, 400, 200, 2)),
    Signal.ATTENTION: _pattern(Color.AMBER, 300, 300, 0, (BEEP_HZ, 80, 120, 2)),
    Signal.REJECTED: _pattern(Color.RED, 200, 0, 1, (LOW_HZ, 150, 0, 1)),
    Signal.CLAIM_WON: _pattern(Color.GREEN, 150, 100, 3, (BEEP_HZ, 60, 60, 2)),
    Signal.CLAIM_LOST: _pattern(Color.AMBER, 300, 200, 2, (LOW_HZ, 300, 0, 1)),
    Signal.LOADING_COMPLETE: _pattern(Color.GREEN, 1000, 0, 1, (BEEP_HZ, 60, 60, 3)),
    Signal.ARRIVED: _pattern(Color.BLUE, 200, 200, 2, (BEEP_HZ, 60, 0, 1)),
    Signal.RETAKE_PHOTO: _pattern(Color.AMBER, 200, 200, 3, (BEEP_HZ, 60, 100, 2)),
    Signal.WRONG_HOUSE: _pattern(Color.RED, 250, 150, 3, (LOW_HZ, 600, 0, 1)),
    Signal.SIGNATURE_NEEDED: _pattern(Color.BLUE, 300, 300, 0, (BEEP_HZ, 80, 120, 2)),
    Signal.DELIVERED: _pattern(Color.GREEN, 600, 0, 1, (BEEP_HZ, 100, 0, 1)),
    Signal.EXCEPTION_RECORDED: _pattern(Color.AMBER, 600, 0, 1, (BEEP_HZ, 100, 0, 1)),
    Signal.ROUTE_STAGED: _pattern(Color.GREEN, 150, 100, 3, (BEEP_HZ, 60, 60, 3)),
    Signal.BLOCK_COMPLETE: _pattern(Color.GREEN, 2000, 0, 1, (BEEP_HZ, 60, 60, 3)),
    Signal.ERROR: _pattern(Color.RED, 1000, 0, 0, (LOW_HZ, 200, 200, 3)),
    Signal.CLEAR: _pattern(Color.OFF, 0, 0, 0, (0, 0, 0, 1)),
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

    def delivered(self) -> asyncio.Future[list[None]] | None:
        return self.signal(Signal.DELIVERED)

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
