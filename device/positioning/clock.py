"""System clock vs GPS time. The store stamps events with the wall clock; a Pi without an RTC boots with
a wrong one until NTP or GPS sets it, so the skew is recorded as an event the cloud can correct with.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from device.contract.domain import Event, EventType, iso_utc, utc_now
from device.positioning.wire import position
from firmware_bridge.fix import Fix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClockConfig:
    threshold_s: float = 2.0  # a skew beyond this is recorded
    change_s: float = 1.0  # re-record only when the skew moved by more than this (a jump, or a fix)


class ClockSkewDetector:
    """Compare each valid fix's time with the system clock; return a CLOCK_SKEW event when it matters."""

    def __init__(self, config: ClockConfig | None = None, now: Callable[[], datetime] = utc_now) -> None:
        self.config = config or ClockConfig()
        self._now = now
        self.last_skew_s: float | None = None
        self._recorded_skew_s: float | None = None

    def check(self, fix: Fix) -> Event | None:
        if fix.time is None or not fix.has_position:
            return None  # a receiver without a fix may report any time (1980, a week rollover)
        system = self._now()
        skew = (system - fix.time).total_seconds()
        self.last_skew_s = skew
        outside = abs(skew) > self.config.threshold_s
        reported = self._recorded_skew_s
        if reported is None and not outside:
            return None
        if reported is not None and abs(skew - reported) <= self.config.change_s:
            return None
        self._recorded_skew_s = skew if outside else None
        log.warning("system clock is %+.3f s from GPS time", skew)
        return Event(EventType.CLOCK_SKEW, data={"skew_s": round(skew, 3), "gps_time": iso_utc(fix.time),
                                                  "system_time": iso_utc(system), "corrected": not outside},
                     fix=position(fix))
