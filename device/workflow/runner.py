"""Applies inputs to the workflow with the store's rule: the event is in the store first, then feedback,
then sync.

The workflow's durable state is a snapshot (under `STATE_KEY`) and a journal of numbered entries after it. Per
accepted input the runner drains the state's changes (changes.py: what the input touched, not the whole
state) into one journal entry and commits it in the same transaction as the input's events: both or neither,
one fsync. When the journal since the snapshot outgrows the snapshot (and `SNAPSHOT_MIN_BYTES`), a new snapshot
replaces both, so a van's writes per input and its replay at start stay bounded whatever the route's size.

`open()` restores the snapshot and replays the entries. An entry may also carry events it still owes the
outbox (`_write_journal(pending)`, a journal written alone): they are appended at open unless already stored
(same ids), so state and events never disagree after a kill -9.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime
from typing import Any, Callable, Sequence

import orjson

from device.contract.domain import Event, Role, utc_now
from device.contract.position import Position
from device.store import EventStore, StoreError
from device.store.state import JournalEntry
from device.workflow import Workflow, new_workflow, restore, snapshot
from device.workflow.changes import apply_delta
from device.workflow.outputs import Feedback, Notice, NoticeKind, Outcome, Rejection, RejectReason

log = logging.getLogger(__name__)

STATE_KEY = "workflow"  # the snapshot's key; the journal has the same name
CURRENT_BLOCK_KEY = "current_block"  # read by `flexedge status`
RECOVERY_PAGE = 500  # events read per page while looking for a journal's events after a crash
SNAPSHOT_MIN_BYTES = 64 * 1024  # journal bytes below which a new snapshot is never worth writing


class WorkflowRunner:
    def __init__(self, store: EventStore, workflow: Workflow, *, seq_floor: int = 0,
                 state_key: str = STATE_KEY, journal_n: int = 0,
                 snapshot_min_bytes: int = SNAPSHOT_MIN_BYTES) -> None:
        self.store = store
        self.workflow = workflow
        self._state_key = state_key
        self._seq_floor = seq_floor  # no event of a later journal entry can have a seq at or below this
        self._journal_n = journal_n  # the number of the last journal entry written
        self._journaled = 0  # journal bytes since the snapshot
        self._snapshot_bytes = 0
        self._snapshot_min_bytes = snapshot_min_bytes
        self._current_block = self._block()
        self._lock = asyncio.Lock()  # one input at a time: its commit must finish before the next is handled

    @classmethod
    async def open(cls, store: EventStore, role: Role, *, clock: Callable[[], datetime] = utc_now,
                   state_key: str = STATE_KEY, snapshot_min_bytes: int = SNAPSHOT_MIN_BYTES) -> WorkflowRunner:
        """Resume the stored workflow (finishing an interrupted commit), or start a new one for `role`."""
        doc = await asyncio.to_thread(store.state.get, state_key)
        upto = int(doc.get("journal_upto", 0)) if isinstance(doc, dict) else 0
        entries = await asyncio.to_thread(store.state.journal, state_key, upto)
        floor = (await asyncio.to_thread(store.stats)).last_seq
        journal_n = entries[-1][0] if entries else upto
        workflow, pending, pending_floor = None, [], 0
        if doc is not None or entries:
            try:
                workflow = restore(doc["workflow"], clock) if doc is not None else new_workflow(role, clock)
                if doc is not None:  # a snapshot written before journals existed may owe events itself
                    pending, pending_floor = list(doc.get("pending") or []), int(doc.get("seq_floor", 0))
                for _, entry in entries:
                    if "snapshot" in entry:
                        workflow = restore(entry["snapshot"], clock)
                    else:
                        apply_delta(workflow.state, entry["delta"])
                    if entry.get("pending"):
                        pending_floor = pending_floor if pending else int(entry.get("seq_floor", 0))
                        pending.extend(entry["pending"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error("stored workflow state unreadable (%r): starting a fresh %s workflow", exc, role.value)
                workflow = None
        if workflow is not None and snapshot(workflow)["role"] != role.value:
            log.warning("stored workflow is for role %s, configured role is %s: starting fresh",
                        snapshot(workflow)["role"], role.value)
            workflow = None
        if workflow is None:
            workflow, pending = new_workflow(role, clock), []
        runner = cls(store, workflow, seq_floor=floor, state_key=state_key, journal_n=journal_n,
                     snapshot_min_bytes=snapshot_min_bytes)
        if pending:
            await runner._finish_journal([Event.from_dict(e) for e in pending], pending_floor)
        await runner._snapshot()
        # A crash after a journal entry that changed the block (a withdrawal, a grant) left the key behind.
        runner._current_block = await asyncio.to_thread(store.state.get, CURRENT_BLOCK_KEY)
        await runner._note_block()
        if doc is not None or entries:
            log.info("workflow resumed in phase %s (block %s): snapshot and %d journal entries",
                     workflow.phase, runner._block(), len(entries))
        return runner

    def _block(self) -> str | None:
        return getattr(self.workflow.state, "block_id", None)

    async def apply(self, item: object, fix: Position | None = None) -> Outcome:
        """Run one input; its events are committed when this returns, so its feedback may go out."""
        async with self._lock:
            return await self._apply(item, fix)

    async def _apply(self, item: object, fix: Position | None) -> Outcome:
        outcome = self.workflow.handle(item)
        events = [dataclasses.replace(e, fix=fix) if fix is not None and e.fix is None else e
                  for e in outcome.events]
        if not events and not outcome.accepted:
            return outcome
        entry = self._entry(()) if outcome.accepted else None
        try:
            if events or entry is not None:
                stored = await self.store.append_async(events, journal=entry)
            else:
                stored = []
        except StoreError as exc:
            self.workflow.undo_last()  # nothing of this input was committed: memory follows the disk
            log.error("workflow input %s not committed, state rolled back: %s", type(item).__name__, exc)
            return Outcome(outcome.phase_before, outcome.phase_before, (), (Feedback.ATTENTION,),
                           (Notice(NoticeKind.REJECTED, "could not save: storage problem",
                                   {"reason": RejectReason.STORE_UNAVAILABLE.value}),), (),
                           Rejection(RejectReason.STORE_UNAVAILABLE, str(exc)))
        seqs = [s.seq for s in stored if s is not None]
        if seqs:
            self._seq_floor = max(self._seq_floor, max(seqs))
        if entry is not None:
            self._journaled += len(entry.body)
            if self._journaled > max(self._snapshot_min_bytes, self._snapshot_bytes):
                await self._snapshot()
        await self._note_block()
        return dataclasses.replace(outcome, events=tuple(events))

    def _entry(self, pending: Sequence[Event]) -> JournalEntry | None:
        """The next journal entry: the state's changes since the last one (or a whole snapshot when the state
        was replaced) and the events it owes; None when there is nothing to record."""
        delta = self.workflow.drain_changes()
        body: dict[str, Any] = {"snapshot": snapshot(self.workflow)} if delta is None else {"delta": delta}
        if pending:
            body.update(pending=[e.to_dict() for e in pending], seq_floor=self._seq_floor)
        elif delta == {}:
            return None
        self._journal_n += 1
        return JournalEntry(self._state_key, self._journal_n, orjson.dumps(body).decode())

    def _write_journal(self, pending: Sequence[Event]) -> None:
        """Commit a journal entry alone, with the events it owes the outbox (appended by `open()` if missing)."""
        entry = self._entry(pending)
        if entry is not None:
            self.store.state.write_journal(entry)

    async def _snapshot(self) -> None:
        """Replace the snapshot and the journal so far with a snapshot of the state now, in one transaction."""
        doc = {"workflow": snapshot(self.workflow), "journal_upto": self._journal_n, "seq_floor": self._seq_floor}
        try:
            await asyncio.to_thread(self.store.state.compact_journal, self._state_key, self._state_key, doc,
                                    self._journal_n)
        except StoreError as exc:  # the journal still holds every change: try again after the next entries
            log.error("workflow snapshot not written: %s", exc)
            return
        self.workflow.drain_changes()  # the snapshot holds them
        self._journaled, self._snapshot_bytes = 0, len(orjson.dumps(doc))

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
