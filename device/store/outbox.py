"""The durable event store's outbox: events in seq order with their hash chain, the cloud's acks, retention and
the disk's condition. It owns the database and its one writer (writer.py); the state kept beside the outbox (key/value,
routes, photo index) is `EventStore.state` (state.py), on the same writer."""
from __future__ import annotations

import enum
import json
import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence, TypeVar, overload

import sqlite_utils

from device.contract.chain import GENESIS_HASH, canonical_bytes, hash_body, link
from device.contract.domain import Event, EventType, Lane, lane_of
from device.store.database import Recovery, open_database
from device.store.errors import StoreError, StoreFull
from device.store.state import JournalEntry, StoreState, insert_journal
from device.store.writer import AppendJob, Writer

log = logging.getLogger(__name__)

T = TypeVar("T")

_EVENT_COLUMNS = "INSERT INTO events (seq, id, type, lane, ts, mono, block, stop, body, hash, acked, stored_at) VALUES "
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
INSERT_EVENT = _EVENT_COLUMNS + _EVENT_VALUES
# A group's rows go in by blocks of this many in one statement, the last block too (whatever its size): sqlite
# runs one statement instead of one per row (about a tenth less CPU per event in a burst of 100);
# 64 x 10 parameters stay far below SQLite's limit.
INSERT_BLOCK = 64
_ROW_PARAMS = 10  # a row's own parameters (seq .. hash); stored_at, the same for the whole group, is bound once


def _insert_block_sql(rows: int) -> str:
    """The statement for a block of `rows` rows: row j binds ?(10j+1) .. ?(10j+10), every row's stored_at is
    the one parameter after them (so the list bound is the rows' parameters, then stored_at)."""
    stored_at = rows * _ROW_PARAMS + 1
    return _EVENT_COLUMNS + ", ".join(
        "(" + ", ".join(f"?{j * _ROW_PARAMS + c}" for c in range(1, _ROW_PARAMS + 1)) + f", 0, ?{stored_at})"
        for j in range(rows))


# The statement for a block of n rows is _INSERT_EVENTS[n]; sqlite3's statement cache keeps the ones in use prepared.
_INSERT_EVENTS = [""] + [_insert_block_sql(n) for n in range(1, INSERT_BLOCK + 1)]


# Per event type, its columns as plain str/int (an enum member binds to sqlite several times slower) and its lane.
_COLUMNS = {t: (t.value, int(lane_of(t)), lane_of(t)) for t in EventType}


class DiskCondition(enum.StrEnum):
    """What the store knows about its disk, for the agent's status and the operator."""

    OK = "ok"
    LOW = "low"  # under RetentionPolicy.min_free_bytes: acked events pruned at once, GPS track thinned
    FULL = "full"  # the last commit failed for lack of space: events are being refused


@dataclass(frozen=True)
class RetentionPolicy:
    acked_max_age_s: float = 7 * 86400.0  # acked events older than this are pruned
    min_free_bytes: int = 200 * 1024 * 1024  # under this, low-disk measures start
    low_disk_track_interval_s: float = 30.0  # under low disk, keep at most one GPS point per interval
    disk_check_interval_s: float = 2.0  # statvfs is cheap, but not per event at 10 Hz


class StoredEvent(NamedTuple):
    """An event as committed: its place in the device's sequence and its link in the hash chain.

    A NamedTuple rather than a dataclass: one is made per event read (pending) and it is 3x cheaper.
    """

    seq: int
    id: str
    type: EventType
    lane: Lane
    body: str  # canonical JSON with seq: exactly what the cloud receives and hashes
    hash: str


class StoredEvents(Sequence[StoredEvent | None]):
    """What one append stored, one item per event given (None for a GPS point thinned under low disk).

    The StoredEvents are made from the committed rows when first read: most appends are never read back (the
    agent awaits the commit, not the rows), and one StoredEvent per event was a tenth of the append's CPU.
    Compares equal to the list of its items.
    """

    __slots__ = ("_events", "_params", "_start", "_thinned", "_items")

    def __init__(self, events: Sequence[Event], params: list[Any], start: int, thinned: list[int]) -> None:
        self._events = events
        self._params = params  # the group's row parameters, this append's rows from `start` on (_ROW_PARAMS each)
        self._start = start
        self._thinned = thinned  # indexes in `events` of the points not stored
        self._items: list[StoredEvent | None] | None = None

    def _list(self) -> list[StoredEvent | None]:
        if self._items is None:
            items: list[StoredEvent | None] = []
            params, at, thinned = self._params, self._start, self._thinned
            for i, event in enumerate(self._events):
                if thinned and i in thinned:
                    items.append(None)
                    continue
                items.append(StoredEvent(params[at], params[at + 1], event.type, _COLUMNS[event.type][2],
                                         params[at + 8], params[at + 9]))
                at += _ROW_PARAMS
            self._items, self._params = items, []
        return self._items

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, index: int) -> StoredEvent | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[StoredEvent | None]: ...

    def __getitem__(self, index: int | slice) -> StoredEvent | None | list[StoredEvent | None]:
        return self._list()[index]

    def __iter__(self) -> Iterator[StoredEvent | None]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StoredEvents):
            other = other._list()
        return self._list() == other

    __hash__ = None  # type: ignore[assignment]  # mutable-looking like the list it stands for

    def __repr__(self) -> str:
        return f"StoredEvents({self._list()!r})"


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    depth_by_lane: dict[str, int]
    oldest_pending_age_s: float | None
    last_acked_seq: int | None
    last_seq: int


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class PruneReport:
    deleted: int
    upto_seq: int | None


def _full(exc: Exception) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def _insert_rows(cursor: sqlite3.Cursor, params: list[Any], stored_at: float) -> None:
    """Insert rows given as one flat list of their own parameters (no tuple per row to build and flatten again),
    all stored at `stored_at`."""
    step = INSERT_BLOCK * _ROW_PARAMS
    if not params:  # nothing to insert (every event of the group a thinned GPS point)
        return
    if len(params) <= step:  # the usual group: one block, bound from the list itself (no copy)
        params.append(stored_at)
        cursor.execute(_INSERT_EVENTS[len(params) // _ROW_PARAMS], params)
        return
    for start in range(0, len(params), step):
        block = params[start:start + step]
        block.append(stored_at)
        cursor.execute(_INSERT_EVENTS[len(block) // _ROW_PARAMS], block)


class EventStore:
    """Thread-safe; every call is served by the one writer (writer.py). Appends return after the commit."""

    def __init__(self, path: Path | str, policy: RetentionPolicy = RetentionPolicy(), *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.policy = policy
        self._clock = clock
        self.recovery: Recovery | None = None
        self.thinned_track_points = 0
        self.group_commits = 0  # transactions that carried appends (fewer than appends under load)
        self._head_seq = 0
        self._head_digest = bytes.fromhex(GENESIS_HASH)  # the chain head's hash, raw (hex only when stored)
        self._low_disk = False
        self._full = False  # set by a commit refused for lack of space, cleared by the next commit that lands
        self.refused_while_full = 0  # events refused for lack of space in the current (or last) full episode
        self._disk_checked_at = -policy.disk_check_interval_s
        self._last_track_mono: float | None = None
        self._writer = Writer(self._open, self._commit_group, name=f"store-writer:{self.path.name}")
        self.state = StoreState(self._call, clock)
        if self.recovery is not None:
            self.append(Event(EventType.STORE_RECOVERED,
                              {"moved_to": self.recovery.moved_to, "reason": self.recovery.reason}))

    # --- lifecycle (writer thread) -----------------------------------------------------------------

    def _open(self) -> sqlite_utils.Database:
        db, self.recovery = open_database(self.path)
        # The chain head is the newest row; when pruning removed every row, the prune anchor.
        row = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            row = (int(meta.get("anchor_seq", 0)), meta.get("anchor_hash", GENESIS_HASH))
        self._head_seq, self._head_digest = row[0], bytes.fromhex(row[1])
        # The append path's statements run on one cursor (Connection.execute makes a new cursor every call).
        self._cursor = db.conn.cursor()
        return db

    def close(self) -> None:
        self._writer.close()

    @property
    def alive(self) -> bool:
        """The writer thread is running (health checks and the watchdog ask this)."""
        return self._writer.alive

    def _note_full(self, refused: int) -> None:
        if not self._full:  # a new episode
            self._full, self.refused_while_full = True, 0
        self.refused_while_full += refused

    def free_bytes(self) -> int:
        """Space left for the store's files (statvfs of its directory)."""
        return shutil.disk_usage(self.path.parent).free

    @property
    def disk_condition(self) -> DiskCondition:
        if self._full:
            return DiskCondition.FULL
        return DiskCondition.LOW if self._low_disk else DiskCondition.OK

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- appending ---------------------------------------------------------------------------------

    def append(self, event: Event) -> StoredEvent | None:
        """Commit one event; returns None only for a GPS point thinned under low disk."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[Event]) -> Sequence[StoredEvent | None]:
        """Commit events in one transaction; raises StoreFull/StoreError and then nothing was stored."""
        return self._writer.run_append(list(events))

    async def append_async(self, events: Sequence[Event], *,
                           journal: JournalEntry | None = None) -> Sequence[StoredEvent | None]:
        """Commit events (and a journal entry, in the same transaction: both or neither)."""
        return await self._writer.submit_append_async(list(events), journal)

    def _track_point_allowed(self, event: Event) -> bool:
        """Under low disk, GPS breadcrumbs are thinned at intake; scans, proofs and blocks never are."""
        if event.type is not EventType.GPS_FIX or not self._low_disk:
            return True
        interval = self.policy.low_disk_track_interval_s
        if self._last_track_mono is not None and event.mono - self._last_track_mono < interval:
            self.thinned_track_points += 1
            return False
        return True

    def _refresh_disk_state(self, db: sqlite_utils.Database) -> None:
        now = time.monotonic()
        if now - self._disk_checked_at < self.policy.disk_check_interval_s:
            return
        self._disk_checked_at = now
        free = self.free_bytes()
        low = free < self.policy.min_free_bytes
        if low:
            if not self._low_disk:
                log.warning("disk low (%d bytes free < %d): pruning acked events, thinning GPS track",
                            free, self.policy.min_free_bytes)
            self._prune(db, max_age_s=0.0)  # while low, acked events go as soon as they are acked
        elif self._low_disk:
            log.warning("disk space back (%d bytes free); GPS track no longer thinned", free)
        self._low_disk = low

    def _commit_group(self, db: sqlite_utils.Database, jobs: list[AppendJob]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        try:
            self._refresh_disk_state(db)
        except (OSError, sqlite3.Error) as exc:
            log.error("disk check failed: %r", exc)
        try:
            self._commit_jobs(db, jobs)
        except sqlite3.IntegrityError:
            if len(jobs) == 1:
                jobs[0].future.set_exception(StoreError("event id (or journal entry) already stored"))
                return
            for job in jobs:  # one bad job must not fail its neighbours: commit each alone
                self._commit_single(db, job)
        except (sqlite3.Error, TypeError, ValueError) as exc:  # TypeError: data that is not JSON
            error = StoreFull(str(exc)) if _full(exc) else StoreError(f"{type(exc).__name__}: {exc}")
            if len(jobs) > 1 and not isinstance(error, StoreFull):
                for job in jobs:  # find the bad job; its neighbours still commit
                    self._commit_single(db, job)
                return
            refused = sum(len(j.events) for j in jobs)
            log.error("event commit failed, %d events not stored: %s", refused, error)
            if isinstance(error, StoreFull):
                self._note_full(refused)
            for job in jobs:
                job.future.set_exception(error)

    def _commit_single(self, db: sqlite_utils.Database, job: AppendJob) -> None:
        try:
            self._commit_jobs(db, [job])
        except (sqlite3.Error, TypeError, ValueError) as exc:
            error = StoreFull(str(exc)) if _full(exc) else StoreError(f"{type(exc).__name__}: {exc}")
            if isinstance(error, StoreFull):
                self._note_full(len(job.events))
            job.future.set_exception(error)

    def _commit_jobs(self, db: sqlite_utils.Database, jobs: list[AppendJob]) -> None:
        stored_at = self._clock()
        seq, prev = self._head_seq, self._head_digest
        last_track = self._last_track_mono
        params: list[Any] = []  # every row's parameters, one after another
        results: list[StoredEvents] = []
        gps_fix, columns, link_to = EventType.GPS_FIX, _COLUMNS, link  # locals: read once per group, not per event
        for job in jobs:
            start = len(params)
            thinned: list[int] = []
            for event in job.events:
                event_type = event.type
                if event_type is gps_fix:
                    if not self._track_point_allowed(event):
                        thinned.append((len(params) - start) // _ROW_PARAMS + len(thinned))
                        continue
                    self._last_track_mono = event.mono
                seq += 1
                body, prev = link_to(prev, event.to_dict(seq))
                type_value, lane_value, _ = columns[event_type]
                params += (seq, event.id, type_value, lane_value, event.ts, event.mono,
                           event.block, event.stop, body.decode(), prev.hex())
            results.append(StoredEvents(job.events, params, start, thinned))
        conn, cursor = db.conn, self._cursor
        # BEGIN/COMMIT as sqlite-utils' atomic() does, without its context manager: this runs once per commit.
        cursor.execute("BEGIN")
        try:
            _insert_rows(cursor, params, stored_at)
            for job in jobs:
                if job.extra is not None:
                    insert_journal(conn, job.extra)
            cursor.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._last_track_mono = last_track
            raise
        self._head_seq, self._head_digest = seq, prev
        self._full = False
        self.group_commits += 1
        for job, out in zip(jobs, results):
            job.future.set_result(out)

    # --- the outbox --------------------------------------------------------------------------------

    def _call(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        try:
            return self._writer.run_call(fn)
        except sqlite3.Error as exc:
            if _full(exc):
                self._note_full(0)  # a state write (the workflow journal) hit the full disk first
                raise StoreFull(str(exc)) from exc
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    def pending(self, limit: int = 500, max_bytes: int = 256 * 1024, lane: Lane | None = None,
                after_seq: int = 0) -> list[StoredEvent]:
        """The oldest unacked events in seq order (of one lane, if given; after `after_seq`, so a sender can
        keep several batches in flight), within both caps.

        At least one event is returned when any is pending, even if it alone exceeds max_bytes.
        """
        def read(db: sqlite_utils.Database) -> list[StoredEvent]:
            where, args = ("acked = 0 AND lane = ?", [int(lane)]) if lane is not None else ("acked = 0", [])
            cursor = db.conn.execute(
                f"SELECT seq, id, type, lane, body, hash FROM events WHERE {where} AND seq > ? ORDER BY seq LIMIT ?",
                [*args, after_seq, limit])
            out: list[StoredEvent] = []
            size = 0
            for seq, event_id, event_type, event_lane, body, digest in cursor:
                size += len(body)
                if out and size > max_bytes:
                    break
                out.append(StoredEvent(seq, event_id, EventType(event_type), Lane(event_lane), body, digest))
            return out
        return self._call(read)

    def newest_pending(self, lane: Lane, event_type: EventType | None = None) -> StoredEvent | None:
        """The newest unacked event of a lane, of one type if given (the live position that goes out first after an
        outage, and that the status carries while breadcrumbs wait for a batch). Walks the pending index back."""
        def read(db: sqlite_utils.Database) -> StoredEvent | None:
            where, args = ("AND type = ?", [event_type.value]) if event_type is not None else ("", [])
            row = db.conn.execute("SELECT seq, id, type, lane, body, hash FROM events WHERE acked = 0 AND lane = ? "
                                  f"{where} ORDER BY seq DESC LIMIT 1", [int(lane), *args]).fetchone()
            return None if row is None else StoredEvent(row[0], row[1], EventType(row[2]), Lane(row[3]), row[4], row[5])
        return self._call(read)

    def mark_acked(self, seqs: Iterable[int]) -> int:
        """Mark exactly these events acked by the cloud; returns how many changed."""
        seq_list = [(int(s),) for s in seqs]

        def write(db: sqlite_utils.Database) -> int:
            with db.atomic():
                changed = db.conn.executemany(
                    "UPDATE events SET acked = 1 WHERE seq = ? AND acked = 0", seq_list).rowcount
                if changed:
                    # Raise the mark to the highest of these that exists: MAX(seq) WHERE acked = 1 over the
                    # whole table would cost a full scan per ack (quadratic over a long drain).
                    db.conn.execute(
                        "INSERT INTO meta (key, value) SELECT 'last_acked_seq', MAX(seq) FROM events "
                        "WHERE seq IN (SELECT value FROM json_each(?)) HAVING MAX(seq) IS NOT NULL "
                        "ON CONFLICT (key) DO UPDATE "
                        "SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                        [json.dumps([s for (s,) in seq_list])])
                return changed
        return self._call(write)

    def has_event(self, event_id: str) -> bool:
        """An event with this id is in the store (acked events are pruned after the retention period)."""
        def read(db: sqlite_utils.Database) -> bool:
            return db.execute("SELECT 1 FROM events WHERE id = ?", [event_id]).fetchone() is not None
        return bool(self._call(read))

    def stats(self) -> OutboxStats:
        def read(db: sqlite_utils.Database) -> OutboxStats:
            by_lane = {Lane(lane).name.lower(): n for lane, n in db.conn.execute(
                "SELECT lane, COUNT(*) FROM events WHERE acked = 0 GROUP BY lane")}
            oldest = db.conn.execute("SELECT MIN(stored_at) FROM events WHERE acked = 0").fetchone()[0]
            last_acked = db.conn.execute("SELECT value FROM meta WHERE key = 'last_acked_seq'").fetchone()
            return OutboxStats(
                depth=sum(by_lane.values()),
                depth_by_lane=by_lane,
                oldest_pending_age_s=None if oldest is None else max(0.0, self._clock() - oldest),
                last_acked_seq=int(last_acked[0]) if last_acked else None,
                last_seq=self._head_seq,
            )
        return self._call(read)

    # --- retention and verification ----------------------------------------------------------------

    def prune(self, max_age_s: float | None = None) -> PruneReport:
        """Delete acked events older than the retention age. Unacked events are never deleted."""
        age = self.policy.acked_max_age_s if max_age_s is None else max_age_s
        return self._call(lambda db: self._prune(db, age))

    def _prune(self, db: sqlite_utils.Database, max_age_s: float) -> PruneReport:
        # Only a contiguous prefix is pruned, so the chain stays verifiable from one anchor.
        cutoff = self._clock() - max_age_s
        with db.atomic():
            keep_from = db.conn.execute(
                "SELECT MIN(seq) FROM events WHERE acked = 0 OR stored_at >= ?", [cutoff]).fetchone()[0]
            upto = (keep_from - 1) if keep_from is not None else self._head_seq
            row = db.conn.execute("SELECT hash FROM events WHERE seq = ?", [upto]).fetchone()
            if row is None:
                return PruneReport(0, None)
            deleted = db.conn.execute("DELETE FROM events WHERE seq <= ?", [upto]).rowcount
            db.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                [("anchor_seq", str(upto)), ("anchor_hash", row[0])])
        if deleted:
            log.info("pruned %d acked events up to seq %d", deleted, upto)
        return PruneReport(deleted, upto)

    def verify_chain(self) -> ChainReport:
        """Recompute every stored event's hash from the anchor; seqs must have no gaps."""
        def read(db: sqlite_utils.Database) -> ChainReport:
            meta = dict(db.conn.execute("SELECT key, value FROM meta").fetchall())
            expected_seq = int(meta.get("anchor_seq", 0)) + 1
            prev = meta.get("anchor_hash", GENESIS_HASH)
            checked = 0
            for seq, body, digest in db.conn.execute("SELECT seq, body, hash FROM events ORDER BY seq"):
                if seq != expected_seq:
                    return ChainReport(False, checked, expected_seq, f"gap: seq {expected_seq} missing")
                try:
                    doc = json.loads(body)
                except ValueError:
                    return ChainReport(False, checked, seq, "body is not JSON")
                if doc.get("seq") != seq:
                    return ChainReport(False, checked, seq, "seq in body differs from row")
                prev = hash_body(prev, canonical_bytes(doc))
                if prev != digest:
                    return ChainReport(False, checked, seq, "hash mismatch")
                expected_seq += 1
                checked += 1
            if expected_seq - 1 != self._head_seq:
                return ChainReport(False, checked, expected_seq, f"events after seq {expected_seq - 1} missing")
            acked = int(meta.get("last_acked_seq") or 0)  # the cloud acked up to here: those events existed
            if expected_seq - 1 < acked:
                return ChainReport(False, checked, expected_seq,
                                   f"events {expected_seq}..{acked} missing (the cloud acked up to seq {acked})")
            return ChainReport(True, checked)
        return self._call(read)

    def integrity_check(self) -> str:
        return self._call(lambda db: str(db.conn.execute("PRAGMA integrity_check").fetchone()[0]))

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored event documents in seq order (for status views and tests)."""
        return self._call(lambda db: [json.loads(b) for (b,) in db.conn.execute(
            "SELECT body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", [after_seq, limit])])
