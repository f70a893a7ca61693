"""Clock checks on a device's event stream (pure functions, no I/O).

Every event carries `ts` (the device's wall clock, UTC) and `mono` (its monotonic clock: immune to wall-clock
steps, reset by a reboot). Between two consecutive events of one device (seq n-1, n) both clocks advance by the
same amount unless the wall clock was stepped; the difference is the size of the step. Seq order stays the
truth for ordering; a flagged `ts` tells the operator which timestamps to distrust.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Mapping

JUMP_TOLERANCE_S = 2.0  # wall vs monotonic drift below this is scheduling noise, not a step
FUTURE_TOLERANCE_S = 300.0  # a device clock this far ahead of the cloud's is wrong, not merely unsynced


class ClockFlagKind(StrEnum):
    JUMP = "clock_jump"  # the wall clock stepped between seq-1 and seq; jump_s = Δts - Δmono
    FUTURE = "ts_future"  # the first of a run of events stamped ahead of the cloud's receive time; jump_s = ahead by


@dataclass(frozen=True)
class ClockStamp:
    """The two clocks of one event."""

    seq: int
    ts: float  # wall clock, seconds since the epoch
    mono: float
    type: str

    @classmethod
    def of(cls, seq: int, doc: Mapping[str, Any]) -> ClockStamp | None:
        """From an event document; None if its clocks are unreadable (nothing to compare, nothing to flag)."""
        ts, mono = doc.get("ts"), doc.get("mono")
        if not isinstance(ts, str) or isinstance(mono, bool) or not isinstance(mono, (int, float)):
            return None
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        return cls(seq, moment.timestamp(), float(mono), str(doc.get("type", "")))


@dataclass(frozen=True)
class ClockFlag:
    seq: int
    kind: ClockFlagKind
    jump_s: float

    def detail(self) -> str:
        if self.kind is ClockFlagKind.JUMP:
            return f"wall clock stepped {self.jump_s:+.1f} s against the monotonic clock"
        return f"ts {self.jump_s:.0f} s ahead of the cloud's receive time"


def check_clock(prev: ClockStamp | None, cur: ClockStamp, received_at: float, *,
                jump_tolerance_s: float = JUMP_TOLERANCE_S,
                future_tolerance_s: float = FUTURE_TOLERANCE_S) -> list[ClockFlag]:
    """Flags for `cur`, given its predecessor in seq order (None: the first event, or the predecessor's clocks
    are unreadable) and the time the cloud received it."""
    flags = []
    if prev is not None and prev.seq == cur.seq - 1 and cur.mono >= prev.mono:  # mono going back: a reboot
        step = (cur.ts - prev.ts) - (cur.mono - prev.mono)
        # The agent's start after a reboot whose uptime passed the old one looks like a forward step by the
        # downtime: not a step of the clock.
        rebooted = cur.type == "agent.started" and step > 0
        if abs(step) > jump_tolerance_s and not rebooted:
            flags.append(ClockFlag(cur.seq, ClockFlagKind.JUMP, round(step, 3)))
    ahead = cur.ts - received_at
    prev_ahead = prev is not None and prev.seq == cur.seq - 1 and prev.ts - received_at > future_tolerance_s
    if ahead > future_tolerance_s and not prev_ahead:
        flags.append(ClockFlag(cur.seq, ClockFlagKind.FUTURE, round(ahead, 3)))
    return flags
