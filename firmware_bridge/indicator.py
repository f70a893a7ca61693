"""The status LED and the buzzer: show a pattern of colours and tones on the MCU.

Fire and forget: a call returns at once (the caller must not wait on a serial round trip to go on). With
no MCU, or its link down, the pattern becomes a log line, so a bench without hardware still shows it. What a
pattern means to the driver is the agent's business (`device.feedback`); this module knows colours and tones.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from firmware_bridge.errors import LinkError
from firmware_bridge.mcu.bridge import McuBridge
from firmware_bridge.mcu.commands import BuzzerPattern, Color, Led, LedPattern

log = logging.getLogger(__name__)

BEEP_HZ = 2700  # the usual piezo resonance: loudest for the least current
LOW_HZ = BEEP_HZ // 2  # bad news sounds lower


@dataclass(frozen=True)
class Pattern:
    led: LedPattern
    buzzer: BuzzerPattern | None = None


def pattern(color: Color, on_ms: int, off_ms: int, blinks: int,
            beep: tuple[int, int, int, int] | None = None) -> Pattern:
    """The status LED blinking `color` (`blinks` 0 = until the next pattern); `beep` = (tone_hz, on_ms, off_ms,
    count)."""
    return Pattern(LedPattern(Led.STATUS, color, on_ms, off_ms, blinks), BuzzerPattern(*beep) if beep else None)


OFF = pattern(Color.OFF, 0, 0, 0, (0, 0, 0, 1))  # LED off, buzzer quiet


class Indicator:
    def __init__(self, bridge: McuBridge | None = None) -> None:
        self._bridge = bridge
        self.shown = 0  # patterns sent to the MCU
        self.logged_only = 0  # patterns that became a log line (no MCU, link down)

    def clear(self) -> asyncio.Future[list[None]] | None:
        return self.show(OFF, "clear")

    def show(self, pattern: Pattern, name: str) -> asyncio.Future[list[None]] | None:
        """Show `pattern` (`name` is what the log says); returns a future done when the MCU acknowledged it, or
        None if only logged."""
        if self._bridge is None or not self._bridge.is_up:
            self.logged_only += 1
            log.info("indicator %s (no MCU attached: shown as this log line only)", name)
            return None
        try:
            parts = [self._bridge.post(pattern.led)]
            if pattern.buzzer is not None:
                parts.append(self._bridge.post(pattern.buzzer))
        except LinkError as exc:
            self.logged_only += 1
            log.info("indicator %s (MCU unavailable: %s)", name, exc)
            return None
        self.shown += 1
        done = asyncio.gather(*parts)
        done.add_done_callback(lambda f: _log_failure(name, f))
        return done


def _log_failure(name: str, future: asyncio.Future[list[None]]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("indicator %s not confirmed by the MCU: %s", name, future.exception())
