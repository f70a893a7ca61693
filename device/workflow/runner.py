"""Applies inputs to the workflow with the store's rule: the event is in the store first, then feedback,
then sync.

Per accepted input the runner writes a journal entry (the new workflow state plus the events it is about to
append) and then appends the events. A kill -9 between the two leaves a journal whose events are not stored;
`open()` finds that and appends them (same ids), so state and events never disagree after a restart.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime
from typing import Any, Callable

from device.contract.domain import Event, Role, utc_now
from device.contract.position import Position
from device.store import EventStore, StoreError
from device.workflow import Workflow, new_workflow, restore, snapshot
from device.workflow.outputs import Feedback, Notice, NoticeKind, Outcome, Rejection, RejectReason

log = logging.getLogger(__name__)

STATE_KEY = "workflow"
CURRENT_BLOCK_KEY = "current_block"  # read by `flexedge status`
RECOVERY_PAGE = 500  # events read per page while looking for a journal's events after a crash


class WorkflowRunner:
    def __init__(self, store: EventStore, workflow: Workflow, *, seq_floor: int = 0,
                 state_key: str = STATE_KEY) -> None:
        self.store = store
        self.workflow = workflow
        self._state_key = state_key
        self._seq_floor = seq_floor  # no event of a later journal can have a seq at or below this
        self._current_block = self._block()
        self._lock = asyncio.Lock()  # one input at a time: its commit must finish before the next is handled

    @classmethod
    async def open(cls, store: EventStore, role: Role, *, clock: Callable[[], datetime] = utc_now,
                   state_key: str = STATE_KEY) -> WorkflowRunner:
        """Resume the stored workflow (finishing an interrupted commit), or start a new one for `role`."""
        doc = await asyncio.to_thread(store.state.get, state_key)
        floor = (await asyncio.to_thread(store.stats)).last_seq
        workflow = None
        if doc is not None:
            try:
                workflow = restore(doc["workflow"], clock)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("stored workflow state unreadable (%r): starting a fresh %s workflow", exc, role.value)
        if workflow is not None and snapshot(workflow)["role"] != role.value:
            log.warning("stored workflow is for role %s, configured role is %s: starting fresh",
                        doc["workflow"]["role"], role.value)
            workflow = None
        if workflow is None:
            return cls(store, new_workflow(role, clock), seq_floor=floor, state_key=state_key)
        runner = cls(store, workflow, seq_floor=floor, state_key=state_key)
        pending = doc.get("pending") or []
        if pending:
            await runner._finish_journal([Event.from_dict(e) for e in pending], int(doc.get("seq_floor", 0)))
        log.info("workflow resumed in phase %s (block %s)", workflow.phase, runner._block())
        return runner

    def _block(self) -> str | None:
        return getattr(self.workflow.state, "block_id", None)

    async def apply(self, item: object, fix: Position | None = None) -> Outcome:
        """Run one input; its events are committed when this returns, so its feedback may go out."""
        async with self._lock:
            return await self._apply(item, fix)

    async def _apply(self, item: object, fix: Position | None) -> Outcome:
        before = self.workflow.state
        outcome = self.workflow.handle(item)
        events = [dataclasses.replace(e, fix=fix) if fix is not None and e.fix is None else e
                  for e in outcome.events]
        if not events and not outcome.accepted:
            return outcome
        try:
            if outcome.accepted:
                await asyncio.to_thread(self._write_journal, events)
            stored = await self.store.append_async(events) if events else []
        except StoreError as exc:
            self.workflow.state = before
            log.error("workflow input %s not committed, state rolled back: %s", type(item).__name__, exc)
            await self._rewrite_journal_quietly()
            return Outcome(outcome.phase_before, outcome.phase_before, (), (Feedback.ATTENTION,),
                           (Notice(NoticeKind.REJECTED, "could not save: storage problem",
                                   {"reason": RejectReason.STORE_UNAVAILABLE.value}),), (),
                           Rejection(RejectReason.STORE_UNAVAILABLE, str(exc)))
        seqs = [s.seq for s in stored if s is not None]
        if seqs:
            self._seq_floor = max(self._seq_floor, max(seqs))
        await self._note_block()
        return dataclasses.replace(outcome, events=tuple(events))

    def _journal(self, pending: list[Event]) -> dict[str, Any]:
        return {"workflow": snapshot(self.workflow), "pending": [e.to_dict() for e in pending],
                "seq_floor": self._seq_floor}

    def _write_journal(self, pending: list[Event]) -> None:
        self.store.state.set(self._state_key, self._journal(pending))

    async def _rewrite_journal_quietly(self) -> None:
        try:
            await asyncio.to_thread(self._write_journal, [])
        except StoreError as exc:  # the journal then replays the failed input at restart: state and events agree
            log.error("workflow journal not rewritten: %s", exc)

    async def _note_block(self) -> None:
        block = self._block()
        if block != self._current_block:
            await asyncio.to_thread(self.store.state.set, CURRENT_BLOCK_KEY, block)
            self._current_block = block

    async def _finish_journal(self, pending: list[Event], seq_floor: int) -> None:
        """Append the journal's events unless the crash came after they were stored."""
        wanted = {e.id for e in pending}
        after = seq_floor
        while wanted:
            page = await asyncio.to_thread(self.store.events, after, RECOVERY_PAGE)
            if not page:
                break
            wanted -= {doc["id"] for doc in page}
            after = page[-1]["seq"]
        missing = [e for e in pending if e.id in wanted]
        if missing:
            log.warning("restart after an interrupted commit: appending %d journaled workflow events", len(missing))
            await self.store.append_async(missing)
        await asyncio.to_thread(self._write_journal, [])
