"""The outcome of the last update attempt, as events: `update.applied` or `update.rolled_back`, and the
`command.result` of the `update` command that asked for it (status ok, or failed with the reason). Whichever
agent runs after the attempt reports it: the new one once its gate passed, the previous one after a rollback.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from device.contract.domain import Event, EventType
from device.store import StoreError
from device.update.layout import APPLIED, Outcome, Releases

log = logging.getLogger(__name__)

Append = Callable[[list[Event]], Awaitable[object]]


def outcome_events(outcome: Outcome) -> list[Event]:
    applied = outcome.result == APPLIED
    detail = {"version": outcome.version, "previous_version": outcome.previous_version,
              "command_id": outcome.command_id, "reason": outcome.reason}
    events = [Event(EventType.UPDATE_APPLIED if applied else EventType.UPDATE_ROLLED_BACK, detail,
                    id=outcome.event_ids[0])]
    if outcome.command_id is not None:
        status = "ok" if applied else "failed"
        text = (f"running {outcome.version}" if applied
                else f"rolled back to {outcome.previous_version}: {outcome.reason}")
        events.append(Event(EventType.COMMAND_RESULT,
                            {"id": outcome.command_id, "name": "update", "status": status, "detail": text,
                             "data": {**detail, "result": outcome.result}}, id=outcome.event_ids[1]))
    return events


async def report_outcome(releases: Releases, append: Append) -> Outcome | None:
    """Commit the last attempt's events, then forget it (a crash in between reports it again, same ids)."""
    outcome = releases.outcome()
    if outcome is None:
        return None
    try:
        await append(outcome_events(outcome))
    except StoreError as exc:
        if "already stored" not in str(exc):
            raise  # kept: reported at the next start
        log.info("update outcome %s was committed before a stop: not reported twice", outcome.event_ids[0])
    releases.clear_outcome()
    log.warning("update to %s reported: %s (%s)", outcome.version, outcome.result, outcome.reason)
    return outcome
