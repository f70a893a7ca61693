"""Which fixes to believe: drop no-fix and poor fixes, reject impossible jumps, hold still when parked.

Timestamps come from the fixes themselves, never the wall clock, so a replay or a simulation faster
than real time behaves exactly like the road.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from device.positioning.geo import distance_m
from firmware_bridge.fix import Fix, FixMode

log = logging.getLogger(__name__)


class Rejected(StrEnum):
    NO_FIX = "no_fix"
    NO_TIME = "no_time"
    MODE = "mode"  # below min_mode
    ACCURACY = "accuracy"  # eph worse than max_eph_m
    NOT_NEWER = "not_newer"  # same or earlier epoch than the last accepted one
    JUMP = "jump"  # implied speed above max_speed_mps


@dataclass(frozen=True)
class FilterConfig:
    min_mode: FixMode = FixMode.FIX_2D
    max_eph_m: float = 50.0  # horizontal 95% error; worse fixes are dropped
    max_speed_mps: float = 55.0  # 200 km/h: a delivery van never moves faster
    jump_slack_m: float = 30.0  # allowed on top of max_speed * dt, for the receiver's own noise
    max_jump_rejects: int = 5  # after this many jumps in a row the receiver is believed (re-anchor)
    stationary_speed_mps: float = 1.0  # below this the van is parked: hold the position
    hold_release_m: float = 60.0  # a held position is released once fixes are this far away


@dataclass(frozen=True)
class Located:
    """A fix with a time and a position, typed as such: what the filter accepts."""

    fix: Fix
    time: datetime
    lat: float
    lon: float

    @classmethod
    def of(cls, fix: Fix) -> Located | None:
        if fix.time is None or fix.lat is None or fix.lon is None or not fix.has_position:
            return None
        return cls(fix, fix.time, fix.lat, fix.lon)


@dataclass(frozen=True)
class Filtered:
    """The filter's verdict on one fix: the fix to use (possibly held), or the rejection reason."""

    fix: Fix | None
    rejected: Rejected | None = None
    held: bool = False


class FixFilter:
    def __init__(self, config: FilterConfig | None = None) -> None:
        self.config = config or FilterConfig()
        self.counts: dict[str, int] = {r.value: 0 for r in Rejected} | {"accepted": 0, "held": 0}
        self._last: Located | None = None  # last accepted (raw) fix
        self._hold: Located | None = None  # position held while parked
        self._jump_rejects = 0

    def feed(self, fix: Fix) -> Filtered:
        here = Located.of(fix)
        reason = self._check(fix, here)
        if reason is not None or here is None:
            reason = reason or Rejected.NO_FIX
            self.counts[reason.value] += 1
            log.debug("fix rejected (%s): %s", reason.value, fix)
            return Filtered(None, reason)
        self._last = here
        self._jump_rejects = 0
        self.counts["accepted"] += 1
        held = self._held(here)
        if held is not None:
            self.counts["held"] += 1
            return Filtered(held, held=True)
        return Filtered(fix)

    def _check(self, fix: Fix, here: Located | None) -> Rejected | None:
        cfg = self.config
        if not fix.has_position:
            return Rejected.NO_FIX
        if here is None:
            return Rejected.NO_TIME  # a position without a time (Fix requires lat/lon from 2D on)
        if fix.mode < cfg.min_mode:
            return Rejected.MODE
        if fix.eph is not None and fix.eph > cfg.max_eph_m:
            return Rejected.ACCURACY
        last = self._last
        if last is None:
            return None
        dt = (here.time - last.time).total_seconds()
        if dt <= 0:
            return Rejected.NOT_NEWER
        moved = distance_m(last.lat, last.lon, here.lat, here.lon)
        if moved > cfg.max_speed_mps * dt + cfg.jump_slack_m:
            self._jump_rejects += 1
            if self._jump_rejects <= cfg.max_jump_rejects:
                return Rejected.JUMP
            log.info("accepting a position %.0f m away after %d rejected jumps", moved, cfg.max_jump_rejects)
            self._hold = None
        return None

    def _held(self, here: Located) -> Fix | None:
        """While slow, report the position where the van stopped, so parked jitter does not move it."""
        cfg = self.config
        fix = here.fix
        slow = fix.speed is not None and fix.speed < cfg.stationary_speed_mps
        if not slow:
            self._hold = None
            return None
        if self._hold is None:
            self._hold = here
            return None
        if distance_m(self._hold.lat, self._hold.lon, here.lat, here.lon) > cfg.hold_release_m:
            self._hold = here  # crept away slowly: re-anchor where it is now
            return None
        return replace(fix, lat=self._hold.lat, lon=self._hold.lon, speed=0.0)
