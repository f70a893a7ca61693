"""What the workflow answers: events to store, feedback commands, notices for the driver's screen."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from device.contract.domain import Event


class Feedback(StrEnum):
    """Commands for the LED/buzzer; the agent maps them to the MCU's feedback API."""

    OK = "ok"  # acknowledged, nothing special
    GOOD_SCAN = "good_scan"
    DUPLICATE_SCAN = "duplicate_scan"
    WRONG_PACKAGE = "wrong_package"  # not on this route: unknown or another block's
    WRONG_ROUTE = "wrong_route"  # dock: belongs to another route/bag
    ATTENTION = "attention"  # look at the screen (missing packages, a stop left open, ...)
    REJECTED = "rejected"  # the action is not possible now
    CLAIM_WON = "claim_won"
    CLAIM_LOST = "claim_lost"
    LOADING_COMPLETE = "loading_complete"
    ARRIVED = "arrived"
    RETAKE_PHOTO = "retake_photo"  # house number unreadable
    WRONG_HOUSE = "wrong_house"  # house number read and different
    SIGNATURE_NEEDED = "signature_needed"
    DELIVERED = "delivered"
    EXCEPTION_RECORDED = "exception_recorded"
    ROUTE_STAGED = "route_staged"  # dock: every package of a route staged
    BLOCK_COMPLETE = "block_complete"


class NoticeKind(StrEnum):
    OFFERS = "offers"
    CLAIM = "claim"
    ROUTE = "route"
    LOAD_PROGRESS = "load_progress"
    SCAN_PROBLEM = "scan_problem"
    MISSING_PACKAGES = "missing_packages"
    NEXT_STOP = "next_stop"
    STOP_INSTRUCTIONS = "stop_instructions"
    RETAKE_PHOTO = "retake_photo"
    SIGNATURE_NEEDED = "signature_needed"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    STOP_LEFT_OPEN = "stop_left_open"
    ROUTE_REVISED = "route_revised"
    ROUTE_RESEQUENCED = "route_resequenced"  # the van re-ordered its remaining stops itself
    BLOCK_SUMMARY = "block_summary"
    BLOCK_WITHDRAWN = "block_withdrawn"  # the block was taken back: packages to return to the station
    STAGE_RESULT = "stage_result"
    ROUTE_STAGED = "route_staged"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Notice:
    """Something to show the driver or dock worker: a short text and the data behind it."""

    kind: NoticeKind
    text: str
    data: Mapping[str, Any] = field(default_factory=dict)


class RejectReason(StrEnum):
    WRONG_STATE = "wrong_state"  # the input is not accepted in the current phase
    INVALID_INPUT = "invalid_input"  # malformed fields
    UNKNOWN_BLOCK = "unknown_block"
    NOT_CURRENT_BLOCK = "not_current_block"  # a withdrawal of a block that is not the van's
    CLAIM_MISMATCH = "claim_mismatch"
    ROUTE_OTHER_BLOCK = "route_other_block"
    STALE_ROUTE = "stale_route"
    STALE_PLAN = "stale_plan"
    UNKNOWN_STOP = "unknown_stop"
    STOP_FINISHED = "stop_finished"
    NOT_AT_STOP = "not_at_stop"
    ALREADY_AT_STOP = "already_at_stop"
    PACKAGE_NOT_OPEN = "package_not_open"  # not an undelivered, loaded package of that stop
    NOTHING_OPEN = "nothing_open"
    NO_SIGNATURE_NEEDED = "no_signature_needed"
    STORE_UNAVAILABLE = "store_unavailable"  # the runner could not commit: nothing happened
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class SendClaim:
    """A request for the cloud: sent only after the claim-requested event is committed."""

    block_id: str
    request_id: str


@dataclass(frozen=True)
class Outcome:
    """The result of one input. `events` must be committed before `feedback`/`notices`/`requests` go out."""

    phase_before: str
    phase_after: str
    events: tuple[Event, ...] = ()
    feedback: tuple[Feedback, ...] = ()
    notices: tuple[Notice, ...] = ()
    requests: tuple[SendClaim, ...] = ()
    rejection: Rejection | None = None

    @property
    def accepted(self) -> bool:
        return self.rejection is None
