"""The machinery both roles share: a transition table, one input at a time, all-or-nothing.

A handler works on the state in place and collects its outputs in a `Step`; the state's change log
(changes.py) notes every write, so when the handler is rejected, fails, or lands outside the phases its
table row allows, its writes are undone. A rejection (or a bug) leaves the state exactly as it was, and no
exception leaves `handle()`. Nothing here copies the state: an input costs what it touches.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Callable, Generic, Mapping, TypeVar

from device.contract.domain import Event, EventType, iso_utc, utc_now
from device.workflow.changes import ChangeLog, Delta, Tracked, Undo, adopt, undo
from device.workflow.inputs import PERSON_INPUTS
from device.workflow.outputs import Feedback, Notice, NoticeKind, Outcome, Rejection, RejectReason, SendClaim

log = logging.getLogger(__name__)

MAX_ID_LEN = 200  # longest package/stop/block id accepted from a reading


class Rejected(Exception):
    """Raised inside a handler to reject its input; `handle()` turns it into a `Rejection`, never re-raises."""

    def __init__(self, reason: RejectReason, detail: str, *, record: bool = True) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.record = record  # False for routine noise (a re-sent retained message, geofence jitter)


@dataclass
class Step:
    """The outputs one input produces, collected while its handler runs."""

    now: datetime
    block: str | None
    events: list[Event] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    requests: list[SendClaim] = field(default_factory=list)

    def event(self, event_type: EventType, data: Mapping[str, Any] | None = None, *,
              stop: str | None = None, block: str | None = None) -> Event:
        event = Event(event_type, dict(data or {}), block=block or self.block, stop=stop, ts=iso_utc(self.now))
        self.events.append(event)
        return event

    def notice(self, kind: NoticeKind, text: str, **data: Any) -> None:
        self.notices.append(Notice(kind, text, data))


S = TypeVar("S", bound=Tracked)
P = TypeVar("P", bound=StrEnum)


@dataclass(frozen=True)
class Transition(Generic[S]):
    """One row of a transition table: the handler and every phase it may leave the machine in."""

    handler: Callable[[Any, Step, S, Any], None]
    targets: frozenset[StrEnum]


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN or not value.isprintable():
        raise Rejected(RejectReason.INVALID_INPUT, f"{what}: not a printable id of 1..{MAX_ID_LEN} characters: "
                                                   f"{value!r:.60}")
    return value


def check_ids(values: Any, what: str) -> tuple[str, ...]:
    if not isinstance(values, (tuple, list)):
        raise Rejected(RejectReason.INVALID_INPUT, f"{what}: expected a list of ids")
    return tuple(check_id(v, what) for v in values)


def check_fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise Rejected(RejectReason.INVALID_INPUT, f"{what}: expected a number in [0, 1], got {value!r:.40}")
    return float(value)


class Machine(Generic[S, P]):
    """Subclasses give TABLE {(phase, input type): Transition}, INPUTS, the state and how to read its phase."""

    TABLE: Mapping[tuple[Any, type], Transition[Any]]
    INPUTS: tuple[type, ...]

    def __init__(self, state: S, clock: Callable[[], datetime] = utc_now) -> None:
        self.state = state
        self._clock = clock
        self.rejected = 0  # inputs refused since start (for health counters)

    @property
    def state(self) -> S:
        return self._state

    @state.setter
    def state(self, state: S) -> None:
        """Adopt a state: from now on its writes are tracked (a new state journals as a full snapshot)."""
        self._changes: ChangeLog = adopt(state)
        self._state = state
        self._last_undo: list[Undo] = []

    def drain_changes(self) -> Delta | None:
        """What changed since the last call, as a journal delta (changes.apply_delta replays it); None when
        the state was replaced since, and only a full snapshot describes it."""
        return self._changes.drain(self._state)

    def undo_last(self) -> None:
        """Take back the last accepted input (the runner could not commit its events)."""
        steps, self._last_undo = self._last_undo, []
        undo(steps)

    def phase_of(self, state: S) -> P:
        raise NotImplementedError

    def block_of(self, state: S) -> str | None:
        return None

    @property
    def phase(self) -> P:
        return self.phase_of(self.state)

    def accepts(self, item: object) -> bool:
        """Whether the table has a row for this input in the current phase (for enabling UI actions)."""
        return (self.phase, type(item)) in self.TABLE

    def handle(self, item: object) -> Outcome:
        before = self.phase
        step = Step(now=self._clock(), block=self.block_of(self.state))
        transition = self.TABLE.get((before, type(item)))
        if transition is None:
            if not isinstance(item, self.INPUTS):
                return self._reject(step, item, Rejected(RejectReason.INVALID_INPUT,
                                                         f"{type(item).__name__} is not an input of this role"))
            return self._reject(step, item, Rejected(RejectReason.WRONG_STATE,
                                                     f"{type(item).__name__} not accepted in {before}",
                                                     record=not self._routine(item)))
        changes = self._changes
        self._last_undo = []
        changes.begin()
        try:
            transition.handler(self, step, self._state, item)
        except Rejected as rejected:
            changes.rollback()
            return self._reject(step, item, rejected)
        except Exception as exc:  # a bug must not take the agent down: log it, refuse the input
            changes.rollback()
            log.exception("workflow handler for %s in %s failed", type(item).__name__, before)
            return self._reject(step, item, Rejected(RejectReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))
        after = self.phase_of(self._state)
        if after not in transition.targets:
            changes.rollback()
            log.error("transition %s --%s--> %s is not in the table", before, type(item).__name__, after)
            return self._reject(step, item, Rejected(RejectReason.INTERNAL_ERROR, f"illegal target {after}"))
        self._last_undo = changes.commit()
        return Outcome(before.value, after.value, tuple(step.events), tuple(step.feedback), tuple(step.notices),
                       tuple(step.requests))

    def _routine(self, item: object) -> bool:
        """Inputs whose refusal in the wrong phase is expected noise (not worth an event)."""
        return False

    def _reject(self, step: Step, item: object, rejected: Rejected) -> Outcome:
        self.rejected += 1
        phase = self.phase.value
        log.info("workflow rejected %s in %s: %s (%s)", type(item).__name__, phase, rejected.reason,
                 rejected.detail)
        rejection = Rejection(rejected.reason, rejected.detail)
        events: tuple[Event, ...] = ()
        if rejected.record:
            events = (Event(EventType.INPUT_REJECTED,
                            {"input": type(item).__name__, "reason": rejected.reason.value,
                             "detail": rejected.detail[:300], "phase": phase},
                            block=step.block, ts=iso_utc(step.now)),)
        feedback = (Feedback.REJECTED,) if isinstance(item, PERSON_INPUTS) else ()
        notices = (Notice(NoticeKind.REJECTED, rejected.detail, {"reason": rejected.reason.value}),)
        return Outcome(phase, phase, events, feedback, notices, (), rejection)
