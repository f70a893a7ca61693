"""The outcome of the last update attempt as an event: `update.applied` or `update.rolled_back` (version, previous
version, command id, reason). Whichever agent runs after the attempt reports it: the new one once its gate
passed, the previous one after a rollback. The `update` command's own `command.result` comes from the command
framework (device/update/command.py)."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from device.contract.domain import Event, EventType
from device.store import StoreError
from device.update.layout import APPLIED, Outcome, Releases

log = logging.getLogger(__name__)

Append = Callable[[list[Event]], Awaitable[object]]


def outcome_event(outcome: Outcome) -> Event:
    kind = EventType.UPDATE_APPLIED if outcome.result == APPLIED else EventType.UPDATE_ROLLED_BACK
    return Event(kind, {"version": outcome.version, "previous_version": outcome.previous_version,
                        "command_id": outcome.command_id, "reason": outcome.reason}, id=outcome.event_id)


async def report_outcome(releases: Releases, append: Append) -> Outcome | None:
    """Commit the last attempt's event once; returns the last attempt's outcome (reported or not)."""
    outcome = releases.outcome()
    if outcome is None or outcome.reported:
        return outcome
    try:
        await append([outcome_event(outcome)])
    except StoreError as exc:
        if "already stored" not in str(exc):
            raise  # not noted: reported at the next start
        log.info("update outcome %s was committed before a stop: not reported twice", outcome.event_id)
    releases.note_reported(outcome)
    log.warning("update to %s reported: %s (%s)", outcome.version, outcome.result, outcome.reason)
    return outcome
