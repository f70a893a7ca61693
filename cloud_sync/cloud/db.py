"""The reference cloud's database: idempotent event ingest with per-device hash-chain verification, block
offers and atomic claim grants. SQLite (one file, the default) or PostgreSQL (`postgresql://...`): the same
queries through `cloud_sync.cloud.engine`, the same schema through `cloud_sync.cloud.schema`'s migrations.

One `CloudDb` per worker; many workers in many processes may share one database. Each write is one
transaction that first serialises on what it changes: the device (its chain head, its photos), the device's
claims, or the block. SQLite serialises every write anyway (`BEGIN IMMEDIATE`); PostgreSQL takes
transaction-scoped locks on the device's keys and row locks on the block, so writers of different devices run
in parallel, and a claim never waits for the device's batches. Batches (and claims) are stored several to a
transaction (`ingest_many`, `grant_many`: group commit), their locks taken in device order.
Every event is stored first (unique keys make a resend a no-op) and verified when its predecessor is there:
a device's batches may land on different workers in any order, and whichever transaction closes a gap walks
the chain past it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import orjson

from cloud_sync.cloud.clock import ClockFlag, ClockStamp, check_clock
from cloud_sync.cloud.engine import CloudDbError, Engine, Rows, Tx, is_postgres, open_engine
from cloud_sync.cloud.schema import migrate
from cloud_sync.errors import MessageRejected, RejectReason
from cloud_sync.messages import ClaimStatus, EventBatch, PhotoChunk
from device.contract.chain import GENESIS_HASH, canonical_bytes, hash_body
from device.contract.domain import BLOB_ID_PREFIX, Block, EventType, Route
from device.contract.files import write_atomically

log = logging.getLogger(__name__)
Item = TypeVar("Item")  # an item of a group transaction
R = TypeVar("R")  # its result

PHOTO_EVENT = "photo.checked"  # the event that records a proof photo and the sha256 of its upload copy
BLOB_EVENT = "command.result"  # the event that records a blob (an upload_logs result: data.data.blob_id, .sha256)
INSERT_ROWS = 500  # events per INSERT or UPDATE statement (8 parameters each; SQLite allows 32,766)
# Group commit: events stored in one transaction at most (a batch larger than this still goes whole, alone). The
# group's device locks are held until its commit, so this also bounds how long a claim waits behind a group.
GROUP_MAX_EVENTS = 4000
__all__ = ["Claim", "CloudDb", "CloudDbError", "FlagKind", "Granted", "IngestResult", "PhotoLimits", "PhotoStatus",
           "StoredPhoto"]


def is_blob(upload_id: str) -> bool:
    """An upload through the photo chunk path that is not a proof photo (device logs)."""
    return upload_id.startswith(BLOB_ID_PREFIX)


class FlagKind(StrEnum):
    GAP = "gap"  # a seq below the device's acked floor is missing here
    CHAIN_BREAK = "chain_break"  # an event's hash does not follow from its predecessor's
    SEQ_CONFLICT = "seq_conflict"  # the same device and seq arrived with a different event id
    DEVICE_MISMATCH = "device_mismatch"  # an event id already stored for another device
    PHOTO_CORRUPT = "photo_corrupt"  # every chunk of a photo arrived but the whole does not match its sha256
    PHOTO_SHA_MISMATCH = "photo_sha_mismatch"  # a complete photo differs from the sha256 its event recorded


class PhotoStatus(StrEnum):
    OK = "ok"  # the file's sha256 is the one its photo.checked event recorded
    CORRUPT = "corrupt"  # the reassembled bytes do not hash to the sha256 the chunks announced (flagged, kept)
    SHA_MISMATCH = "sha_mismatch"  # whole, but not the photo its event recorded (flagged, kept)
    AWAITING_EVENT = "awaiting_event"  # complete before its event arrived: checked when the event comes


@dataclass(frozen=True)
class StoredPhoto:
    device: str
    photo_id: str
    status: PhotoStatus
    size: int
    path: str


@dataclass(frozen=True)
class PhotoLimits:
    """What the cloud keeps of photos still coming in, per device: chunks of a photo that never completes
    are dropped after `max_age_s`; a device holding `max_pending_bytes` of incomplete photos gets no more."""

    max_age_s: float = 24 * 3600.0
    max_pending_bytes: int = 128 * 1024 * 1024  # two of the largest photos the contract allows


@dataclass(frozen=True)
class Claim:
    block_id: str
    device: str
    station: str | None  # the device's station (None: a device the cloud does not know)


Granted = tuple[ClaimStatus, Block | None, Route | None]


@dataclass(frozen=True)
class IngestResult:
    stored: int
    duplicates: int
    flagged: int
    verified_seq: int
    clock_flagged: int = 0


def _groups(batches: Sequence[tuple[str, EventBatch]], max_events: int) -> Iterator[Sequence[tuple[str, EventBatch]]]:
    """Consecutive runs of the batches holding at most `max_events` events (a larger batch is a run of its own)."""
    start = events = 0
    for i, (_, batch) in enumerate(batches):
        if i > start and events + len(batch.events) > max_events:
            yield batches[start:i]
            start, events = i, 0
        events += len(batch.events)
    if start < len(batches):
        yield batches[start:]


def _device_of_batch(item: tuple[str, EventBatch]) -> str:
    return item[0]


def default_photo_dir(db_path: Path) -> Path:
    """Photo files live beside the database: cloud.db -> cloud-photos/{device}/{photo_id}.jpg."""
    return db_path.with_name(f"{db_path.stem}-photos")


class CloudDb:
    def __init__(self, target: Path | str, photo_dir: Path | str | None = None) -> None:
        """`target`: a SQLite file, or a `postgresql://` URL (then `photo_dir` is required: no file to sit beside)."""
        if photo_dir is None and is_postgres(target):
            raise CloudDbError("a PostgreSQL cloud database needs a photo directory (--photo-dir)")
        self.target = target
        self.photo_dir = Path(photo_dir) if photo_dir is not None else default_photo_dir(Path(target))
        self.engine: Engine = open_engine(target)
        self.dialect = self.engine.dialect
        try:
            self.schema_version = migrate(self.engine)
        except BaseException:
            self.engine.close()
            raise

    def close(self) -> None:
        self.engine.close()

    def _lock_device(self, tx: Tx, device: str) -> tuple[int, str]:
        """Serialise this transaction with every other write of the device; its (verified seq, verified hash)."""
        if self.dialect.key_lock:
            tx.execute(self.dialect.key_lock, (f"device:{device}",))
        tx.execute("INSERT INTO devices (device, verified_seq, verified_hash) VALUES (?, 0, ?) "
                   "ON CONFLICT (device) DO NOTHING", (device, GENESIS_HASH))
        row = tx.execute("SELECT verified_seq, verified_hash FROM devices WHERE device = ?", (device,)).fetchone()
        return int(row[0]), str(row[1])

    def _send_head(self, tx: Tx, device: str, batch_at: float) -> Rows:
        """`_lock_device` for a batch that arrived at `batch_at` (noted in the device's row by the same statement);
        the (verified seq, verified hash) row is read later."""
        if self.dialect.key_lock:
            tx.execute(self.dialect.key_lock, (f"device:{device}",))
        return tx.execute("INSERT INTO devices (device, verified_seq, verified_hash, last_batch_at) "
                          "VALUES (?, 0, ?, ?) ON CONFLICT (device) DO UPDATE SET last_batch_at = "
                          "excluded.last_batch_at RETURNING verified_seq, verified_hash",
                          (device, GENESIS_HASH, batch_at))

    # --- ingest ------------------------------------------------------------------------------------

    def ingest(self, device: str, batch: EventBatch) -> IngestResult:
        """Store a batch idempotently, advance the device's verified chain head, flag what does not fit."""
        with self.engine.transaction() as tx:
            return self._ingest_all(tx, [(device, batch)])[0]

    def ingest_many(self, batches: Sequence[tuple[str, EventBatch]]) -> list[IngestResult | Exception]:
        """Group commit: (device, batch) pairs stored several to a transaction (at most GROUP_MAX_EVENTS events
        each), every batch as `ingest` stores it, one commit for the group (see `_together`). Returns, in the
        order given, each batch's result or the exception that stopped it. A device's chain is walked once per
        group, after all its batches are in: each of its batches reports the head that walk reached, and its
        last batch the chain breaks and clock flags the walk found."""
        results: list[IngestResult | Exception] = []
        for group in _groups(batches, GROUP_MAX_EVENTS):
            stored = self._together("batches", group, _device_of_batch, self._ingest_all)
            results.extend(stored)
        return results

    def _together(self, what: str, items: Sequence[Item], device_of: Callable[[Item], str],
                  work: Callable[[Tx, Sequence[Item]], Sequence[R]]) -> list[R | Exception]:
        """`work` on all the items in one transaction (pipelined: see `Engine.transaction`), the items in device
        order (so the transaction takes its device locks, and the devices rows, in sorted order: two groups never
        wait for each other in a circle; the sort is stable, so one device's items keep their order). If the
        transaction fails, it is rolled back and each item runs alone in a transaction of its own: an item that
        raises costs only itself. Returns, in the order given, each item's result or the exception that stopped
        it."""
        if len(items) > 1:
            order = sorted(range(len(items)), key=lambda i: device_of(items[i]))
            try:
                with self.engine.transaction(pipelined=True) as tx:
                    results = work(tx, [items[i] for i in order])
                by_index = dict(zip(order, results))
                return [by_index[i] for i in range(len(items))]
            except Exception as exc:  # noqa: BLE001 - any item's failure: each goes alone, and fails alone
                log.warning("group of %d %s failed, taking them one by one: %s: %.300s", len(items), what,
                            type(exc).__name__, str(exc))
        alone = [self._alone(item, work) for item in items]
        return alone

    def _alone(self, item: Item, work: Callable[[Tx, Sequence[Item]], Sequence[R]]) -> R | Exception:
        try:
            with self.engine.transaction() as tx:
                return work(tx, [item])[0]
        except Exception as exc:  # noqa: BLE001 - handed back to the caller's reject path with its item
            # Without its traceback: its frames hold the failed transaction's cursors (SQLite: statements in
            # progress on the one connection, and no commit goes through while any is)
            return exc.with_traceback(None)

    def _ingest_all(self, tx: Tx, batches: Sequence[tuple[str, EventBatch]]) -> list[IngestResult]:
        """The batches (in device order) in one transaction, in phases, so that in pipeline mode the group waits
        for a few round trips in all rather than a few per batch: every device's lock and head and every batch's
        insert are sent before any result is read; then the chain walks of all the devices; then the updates."""
        now = time.time()
        heads: dict[str, Rows] = {}
        sent: list[tuple[str, EventBatch, list[tuple[Any, ...]], list[Rows]]] = []
        for device, batch in batches:
            rows = [(device, event["seq"], event["id"], event["type"],
                     canonical_bytes({k: v for k, v in event.items() if k != "hash"}).decode("utf-8"),
                     event.get("hash", ""), batch.batch_id, now) for event in batch.events]
            if device not in heads:
                heads[device] = self._send_head(tx, device, now)
            sent.append((device, batch, rows, self._send_insert(tx, rows)))
        counted = [self._settle_events(tx, device, batch, rows, {int(seq) for cur in inserts for (seq,) in cur}, now)
                   for device, batch, rows, inserts in sent]
        for device, batch, _, _ in sent:
            self._link_waiting_photos(tx, device, batch.events, now)
        head = {device: (int(row[0]), str(row[1])) for device, cur in heads.items() for row in [cur.fetchone()]}
        walks = {device: tx.execute("SELECT seq, body, hash FROM events WHERE device = ? AND seq >= ? ORDER BY seq",
                                    (device, head[device][0])) for device in heads}
        walked = {device: self._advance_chain(tx, device, head[device], walks[device], now) for device in heads}
        last = {device: i for i, (device, _, _, _) in enumerate(sent)}
        results = []
        for i, ((device, batch, _, _), (stored, duplicates, flagged)) in enumerate(zip(sent, counted)):
            verified_seq, broken, clock_flagged = walked[device] if last[device] == i else (walked[device][0], 0, 0)
            flagged += broken + self._check_floor(tx, device, batch.floor_seq, verified_seq, now)
            results.append(IngestResult(stored, duplicates, flagged, verified_seq, clock_flagged))
        return results

    def _settle_events(self, tx: Tx, device: str, batch: EventBatch, rows: list[tuple[Any, ...]],
                       inserted: set[int], now: float) -> tuple[int, int, int]:
        """(stored, duplicates, flagged) of a batch whose new rows are in: a block completion is noted, an event
        not stored is a resend or flagged."""
        stored = duplicates = flagged = 0
        for event, row in zip(batch.events, rows):
            body = row[4]
            if event["seq"] in inserted:
                inserted.discard(event["seq"])  # a seq twice in one batch: the second is a conflict
                stored += 1
                if event["type"] == EventType.BLOCK_COMPLETED.value and isinstance(event.get("block"), str):
                    tx.execute("INSERT INTO completed_blocks (id, device, at) SELECT id, winner, ? FROM blocks "
                               "WHERE id = ? AND winner = ? ON CONFLICT DO NOTHING", (now, event["block"], device))
                continue
            row = tx.execute("SELECT device, seq FROM events WHERE id = ?", (event["id"],)).fetchone()
            if row is not None and (row[0], row[1]) == (device, event["seq"]):
                duplicates += 1  # a resend: harmless by design
            elif row is not None:
                flagged += self._flag(tx, device, event["seq"], FlagKind.DEVICE_MISMATCH,
                                      f"id {event['id']} already stored as {row[0]}#{row[1]}", now)
            else:
                flagged += self._flag(tx, device, event["seq"], FlagKind.SEQ_CONFLICT,
                                      f"other event id {event['id']}: {body[:2000]}", now)
        return stored, duplicates, flagged

    def _check_floor(self, tx: Tx, device: str, floor_seq: int, verified_seq: int, now: float) -> int:
        """Every seq below the device's floor was acked, so it must be here: a hole there is a real gap."""
        if floor_seq <= verified_seq + 1:
            return 0
        missing = verified_seq + 1
        if tx.execute("SELECT 1 FROM events WHERE device = ? AND seq = ?", (device, missing)).fetchone() is not None:
            return 0
        return self._flag(tx, device, missing, FlagKind.GAP,
                          f"seq {missing} missing below the device's floor {floor_seq}", now)

    @staticmethod
    def _send_insert(tx: Tx, rows: list[tuple[Any, ...]]) -> list[Rows]:
        """Insert what is new in one statement per INSERT_ROWS rows (not one round trip per event); each
        statement's rows are the seqs it stored. A row whose id or (device, seq) is already held is skipped by
        the unique keys."""
        sent = []
        for start in range(0, len(rows), INSERT_ROWS):
            part = rows[start:start + INSERT_ROWS]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(part))
            sent.append(tx.execute("INSERT INTO events (device, seq, id, type, body, hash, batch_id, received_at) "
                                   f"VALUES {values} ON CONFLICT DO NOTHING RETURNING seq",
                                   [v for row in part for v in row]))
        return sent

    def _flag(self, tx: Tx, device: str, seq: int, kind: FlagKind, detail: str, now: float) -> int:
        added = tx.execute("INSERT INTO flags (device, seq, kind, detail, at) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT DO NOTHING", (device, seq, kind.value, detail, now)).rowcount
        if added:
            log.warning("ingest flag %s for %s seq %d: %s", kind.value, device, seq, detail[:200])
        return added

    def _advance_chain(self, tx: Tx, device: str, head: tuple[int, str], walk: Rows, now: float
                       ) -> tuple[int, int, int]:
        """Walk the contiguous run after the verified head. Events of the priority lane arrive ahead of the
        track backlog, and with several workers a device's batches are stored in any order, so a hole here
        usually means 'not yet arrived' and the walk simply waits at it: the transaction that fills it walks on.
        The walk meets every event once, in seq order: the clock check (each event against its predecessor)
        rides on it. Returns (verified seq, chain breaks, clock flags)."""
        expected, prev = head[0] + 1, head[1]
        marks: list[tuple[str, str, str, int]] = []  # (chain state, hash, device, seq)
        broken = 0
        stamps: list[ClockStamp | None] = []
        old_head: ClockStamp | None = None  # the first one's predecessor, for the clock check
        for seq, body, claimed in walk.fetchall():  # the device's events from its verified head on, in seq order
            if seq == head[0]:
                old_head = ClockStamp.of(seq, orjson.loads(body))
                continue
            if seq != expected:
                break
            computed = hash_body(prev, body.encode("utf-8"))
            if not claimed or computed == claimed:  # no claim: checked at the batch's checkpoint
                marks.append(("ok", computed, device, seq))
                prev = computed
            else:
                marks.append(("broken", claimed, device, seq))
                broken += 1
                prev = claimed  # after a break the chain goes on from the claimed hash: one break, one flag
            stamps.append(ClockStamp.of(seq, orjson.loads(body)))
            expected += 1
        for start in range(0, len(marks), INSERT_ROWS):  # one statement per INSERT_ROWS events, not one each
            part = marks[start:start + INSERT_ROWS]
            values = ", ".join(["(?, ?, ?)"] * len(part))  # VALUES columns are column1..3 in both engines
            tx.execute(f"UPDATE events SET chain = v.column1, hash = v.column2 FROM (VALUES {values}) AS v "
                       "WHERE events.device = ? AND events.seq = v.column3",
                       [*(x for state, hash_, _, seq in part for x in (state, hash_, seq)), device])
        for _, _, _, seq in (m for m in marks if m[0] == "broken"):
            self._flag(tx, device, seq, FlagKind.CHAIN_BREAK,
                       "hash does not follow from the events since the previous checkpoint", now)
        if marks:
            tx.execute("UPDATE devices SET verified_seq = ?, verified_hash = ? WHERE device = ?",
                       (expected - 1, prev, device))
        if stamps:
            stamps.insert(0, old_head)
        clock_flags = [flag for before, stamp in zip(stamps, stamps[1:]) if stamp is not None
                       for flag in check_clock(before, stamp, now)]
        return expected - 1, broken, sum(self._flag_clock(tx, device, flag, now) for flag in clock_flags)

    def _flag_clock(self, tx: Tx, device: str, flag: ClockFlag, now: float) -> int:
        added = tx.execute("INSERT INTO clock_flags (device, seq, kind, jump_s, detail, at) "
                           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           (device, flag.seq, flag.kind.value, flag.jump_s, flag.detail(), now)).rowcount
        if added:
            log.warning("clock flag %s for %s seq %d: %s", flag.kind.value, device, flag.seq, flag.detail())
        return added

    def expire_photo_chunks(self, max_age_s: float, now: float | None = None) -> int:
        """Drop the chunks of photos that stayed incomplete longer than `max_age_s` (any device's); how many."""
        now = time.time() if now is None else now
        with self.engine.transaction() as tx:
            expired = tx.execute("DELETE FROM photo_chunks WHERE received_at < ?", (now - max_age_s,)).rowcount
        if expired:
            log.warning("dropped %d chunks of photos incomplete for more than %.0f s", expired, max_age_s)
        return expired

    def store_photo_chunk(self, device: str, chunk: PhotoChunk, limits: PhotoLimits = PhotoLimits(),
                          now: float | None = None) -> StoredPhoto | None:
        """Keep a chunk (idempotent); once all are here, write the photo's file and check it against its event.
        Returns the stored photo when this chunk completed it. A chunk beyond the device's quota of incomplete
        photos is refused (MessageRejected QUOTA: not acked, the device tries again later)."""
        now = time.time() if now is None else now
        with self.engine.transaction() as tx:
            self._lock_device(tx, device)
            if tx.execute("SELECT 1 FROM photo_files WHERE device = ? AND photo_id = ?",
                          (device, chunk.photo_id)).fetchone():
                return None  # a resent chunk of a finished photo
            pending = tx.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM photo_chunks WHERE device = ?",
                                 (device,)).fetchone()[0]
            held = tx.execute("SELECT 1 FROM photo_chunks WHERE device = ? AND photo_id = ? AND seq = ?",
                              (device, chunk.photo_id, chunk.seq)).fetchone()
            if held is None and pending + len(chunk.data) > limits.max_pending_bytes:
                raise MessageRejected(RejectReason.QUOTA, f"{device} holds {pending} bytes of incomplete photos")
            tx.execute("INSERT INTO photo_chunks (device, photo_id, seq, total, sha256, data, received_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (device, chunk.photo_id, chunk.seq, chunk.total, chunk.sha256, chunk.data, now))
            rows = tx.execute("SELECT seq, data FROM photo_chunks WHERE device = ? AND photo_id = ? AND total = ? "
                              "AND sha256 = ? ORDER BY seq", (device, chunk.photo_id, chunk.total,
                                                              chunk.sha256)).fetchall()
            if len(rows) < chunk.total:
                return None
            whole = b"".join(bytes(data) for _, data in rows)
            if device.startswith(".") or "/" in device:  # the device id becomes a folder name
                raise CloudDbError(f"device id {device!r:.40} cannot name a photo folder")
            # ids are plain (PhotoChunk checks); a blob (logs) is no JPEG: it keeps its bare id
            path = self.photo_dir / device / (chunk.photo_id if is_blob(chunk.photo_id) else f"{chunk.photo_id}.jpg")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(path, whole)
            except OSError as exc:
                raise CloudDbError(f"cannot write photo file {path}: {exc}") from exc
            tx.execute("DELETE FROM photo_chunks WHERE device = ? AND photo_id = ?", (device, chunk.photo_id))
            sha256 = hashlib.sha256(whole).hexdigest()
            tx.execute("INSERT INTO photo_files (device, photo_id, sha256, size, path, status, received_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (device, chunk.photo_id, sha256, len(whole), str(path),
                                                        PhotoStatus.AWAITING_EVENT.value, now))
            if sha256 != chunk.sha256:
                status = self._settle_photo(tx, device, chunk.photo_id, PhotoStatus.CORRUPT,
                                            f"bytes hash to {sha256}, the chunks announced {chunk.sha256}", now)
            else:
                status = self._link_photo(tx, device, chunk.photo_id, now)
        log.info("photo %s from %s complete (%d bytes): %s", chunk.photo_id, device, len(whole), status.value)
        return StoredPhoto(device, chunk.photo_id, status, len(whole), str(path))

    def _settle_photo(self, tx: Tx, device: str, photo_id: str, status: PhotoStatus, detail: str,
                      now: float) -> PhotoStatus:
        tx.execute("UPDATE photo_files SET status = ?, detail = ? WHERE device = ? AND photo_id = ?",
                   (status.value, detail, device, photo_id))
        if status in (PhotoStatus.CORRUPT, PhotoStatus.SHA_MISMATCH):
            kind = FlagKind.PHOTO_CORRUPT if status is PhotoStatus.CORRUPT else FlagKind.PHOTO_SHA_MISMATCH
            # flags are keyed by (device, seq, kind): a photo has no seq, its id's crc32 stands in
            self._flag(tx, device, zlib.crc32(photo_id.encode()), kind, f"photo {photo_id}: {detail}", now)
        return status

    def _link_photo(self, tx: Tx, device: str, photo_id: str, now: float) -> PhotoStatus:
        """Tie a complete upload to the event that recorded it (a photo's photo.checked, a blob's command.result)
        and compare the sha256 that event recorded; without the event yet, the upload waits for it (ingest calls
        this again)."""
        recorded = self._recording_event(tx, device, photo_id)
        if recorded is None:
            return PhotoStatus.AWAITING_EVENT
        event_id, doc, expected = recorded
        tx.execute("UPDATE photo_files SET event_id = ?, block = ?, stop = ?, expected_sha256 = ? "
                   "WHERE device = ? AND photo_id = ?", (event_id, doc.get("block"), doc.get("stop"), expected,
                                                        device, photo_id))
        sha256 = tx.execute("SELECT sha256 FROM photo_files WHERE device = ? AND photo_id = ?",
                            (device, photo_id)).fetchone()[0]
        if sha256 == expected:
            return self._settle_photo(tx, device, photo_id, PhotoStatus.OK, "", now)
        return self._settle_photo(tx, device, photo_id, PhotoStatus.SHA_MISMATCH,
                                  f"file sha256 {sha256}, event {event_id} recorded {expected}", now)

    def _recording_event(self, tx: Tx, device: str, upload_id: str) -> tuple[str, Any, Any] | None:
        """(event id, event, the sha256 it recorded) of the event that records this upload, if stored.
        A log blob is recorded inside a command result's data, a photo in its photo event's data."""
        event_type, path = (BLOB_EVENT, ("data", "data", "blob_id")) if is_blob(upload_id) else \
            (PHOTO_EVENT, ("data", "photo_id"))
        row = tx.execute("SELECT id, body FROM events WHERE device = ? AND type = ? AND "
                         f"{self.dialect.json_text('body', *path)} = ?", (device, event_type, upload_id)).fetchone()
        if row is None:
            return None
        doc = orjson.loads(row[1])
        data = doc.get("data") or {}
        if is_blob(upload_id):
            return row[0], doc, (data.get("data") or {}).get("sha256")
        return row[0], doc, data.get("upload_sha256") or data.get("sha256")

    def _link_waiting_photos(self, tx: Tx, device: str, events: Any, now: float) -> None:
        """Photo events (and blob-recording command results) of a batch settle uploads that completed before them."""
        for event in events:
            data = event.get("data") or {}
            if event.get("type") == PHOTO_EVENT:
                photo_id = data.get("photo_id")
            elif event.get("type") == BLOB_EVENT and isinstance(data.get("data"), dict):
                photo_id = data["data"].get("blob_id")
            else:
                photo_id = None
            if isinstance(photo_id, str) and tx.execute(
                    "SELECT 1 FROM photo_files WHERE device = ? AND photo_id = ? AND status = ?",
                    (device, photo_id, PhotoStatus.AWAITING_EVENT.value)).fetchone():
                self._link_photo(tx, device, photo_id, now)

    def pending_photo_bytes(self, device: str) -> int:
        """Bytes of the device's incomplete photos held (what its quota counts)."""
        rows = self._read("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM photo_chunks WHERE device = ?", (device,))
        return int(rows[0][0])

    def photo(self, device: str, photo_id: str) -> tuple[str, bytes] | None:
        """(sha256, bytes) of a complete photo, read from its file."""
        rows = self._read("SELECT sha256, path FROM photo_files WHERE device = ? AND photo_id = ?", (device, photo_id))
        if not rows:
            return None
        try:
            return rows[0][0], Path(rows[0][1]).read_bytes()
        except OSError as exc:
            raise CloudDbError(f"photo {photo_id} of {device}: file unreadable: {exc}") from exc

    def photo_rows(self, device: str | None = None) -> list[dict[str, Any]]:
        """Every stored photo with its link to device, event, block, stop and its check, oldest first."""
        keys = ("photo_id", "device", "event_id", "block", "stop", "sha256", "expected_sha256", "status", "path",
                "bytes", "detail", "received_at")
        rows = self._read("SELECT photo_id, device, event_id, block, stop, sha256, expected_sha256, status, path, "
                          "size, detail, received_at FROM photo_files" + (" WHERE device = ?" if device else "")
                          + " ORDER BY received_at, device, photo_id", (device,) if device else ())
        return [dict(zip(keys, row)) for row in rows]

    def set_device_stations(self, stations: Mapping[str, str]) -> None:
        """Replace the stored stations map (device -> station) by the one the dispatcher was started with."""
        with self.engine.transaction() as tx:
            tx.execute("DELETE FROM device_stations")
            for device, station in sorted(stations.items()):
                tx.execute("INSERT INTO device_stations (device, station) VALUES (?, ?)", (device, station))

    def record_status(self, device: str, status: dict[str, Any]) -> None:
        with self.engine.transaction() as tx:
            tx.execute("INSERT INTO devices (device, verified_hash, status) VALUES (?, ?, ?) "
                       "ON CONFLICT (device) DO UPDATE SET status = excluded.status",
                       (device, GENESIS_HASH, json.dumps(status)))

    # --- reading (operator views and tests) --------------------------------------------------------

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.engine.read(sql, args)

    def device_status(self, device: str) -> dict[str, Any] | None:
        """The status record of one device as last stored (None: none yet)."""
        rows = self._read("SELECT status FROM devices WHERE device = ?", (device,))
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def event_count(self, device: str | None = None) -> int:
        if device is None:
            return int(self._read("SELECT COUNT(*) FROM events")[0][0])
        return int(self._read("SELECT COUNT(*) FROM events WHERE device = ?", (device,))[0][0])

    def event_rows(self, device: str) -> list[tuple[int, str, str]]:
        """(seq, id, chain state) in seq order."""
        return [(int(seq), id_, chain) for seq, id_, chain in
                self._read("SELECT seq, id, chain FROM events WHERE device = ? ORDER BY seq", (device,))]

    def flags(self, device: str | None = None) -> list[dict[str, Any]]:
        rows = self._read("SELECT device, seq, kind, detail FROM flags" + (" WHERE device = ?" if device else "")
                          + " ORDER BY device, seq, kind", (device,) if device else ())
        return [dict(zip(("device", "seq", "kind", "detail"), row)) for row in rows]

    def arrivals(self, device: str) -> list[tuple[int, str, str, float]]:
        """(seq, type, batch id, received at) in the order the cloud first stored them (a resend keeps the first)."""
        return [(int(seq), type_, batch, at) for seq, type_, batch, at in
                self._read("SELECT seq, type, batch_id, received_at FROM events WHERE device = ? "
                           "ORDER BY received_at, seq", (device,))]

    def clock_flags(self, device: str | None = None) -> list[dict[str, Any]]:
        """Timestamps to distrust, in seq order (see cloud_sync/cloud/clock.py)."""
        rows = self._read("SELECT device, seq, kind, jump_s, detail FROM clock_flags"
                          + (" WHERE device = ?" if device else "") + " ORDER BY device, seq, kind",
                          (device,) if device else ())
        return [dict(zip(("device", "seq", "kind", "jump_s", "detail"), row)) for row in rows]

    def device_view(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT d.device, d.verified_seq, d.status, COUNT(e.seq) FROM devices d "
                          "LEFT JOIN events e ON e.device = d.device GROUP BY d.device ORDER BY d.device")
        return [{"device": dev, "verified_seq": seq, "events": n, "status": json.loads(status) if status else None}
                for dev, seq, status, n in rows]

    # --- dispatch ----------------------------------------------------------------------------------

    def add_block(self, block: Block, route: Route) -> None:
        with self.engine.transaction() as tx:
            tx.execute("INSERT INTO blocks (id, station, body, route, route_version) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET body = excluded.body, route = excluded.route, "
                       "route_version = excluded.route_version WHERE blocks.winner IS NULL",
                       (block.id, block.station, json.dumps(block.to_dict()), json.dumps(route.to_dict()),
                        route.version))

    def open_blocks(self, station: str) -> tuple[int, list[Block]]:
        """(next offers version, unclaimed blocks of the station). The version also never falls behind the
        clock in milliseconds, so a cloud started on a fresh database still outranks the retained offers."""
        now_ms = time.time_ns() // 1_000_000
        with self.engine.transaction() as tx:
            tx.execute("INSERT INTO stations (station, offers_version) VALUES (?, ?) ON CONFLICT (station) "
                       "DO UPDATE SET offers_version = "
                       f"{self.dialect.greatest('stations.offers_version + 1', 'excluded.offers_version')}",
                       (station, now_ms))
            version = tx.execute("SELECT offers_version FROM stations WHERE station = ?", (station,)).fetchone()[0]
            rows = tx.execute("SELECT body FROM blocks WHERE station = ? AND winner IS NULL ORDER BY id",
                              (station,)).fetchall()
        return int(version), [Block.from_dict(json.loads(body)) for (body,) in rows]

    def grant(self, block_id: str, device: str, station: str | None, max_open: int
              ) -> tuple[ClaimStatus, Block | None, Route | None]:
        """Exactly one device wins a block: inside one transaction that holds the device's claim lock and the
        block's row lock, a conditional UPDATE (winner IS NULL) decides. A device wins only blocks of its own `station`
        (None: a device the cloud does not know) and holds at most `max_open` blocks it has not completed."""
        with self.engine.transaction() as tx:
            return self._grant_in(tx, Claim(block_id, device, station), max_open)

    def grant_many(self, claims: Sequence[Claim], max_open: int) -> list[Granted | Exception]:
        """Claims decided in one transaction (each as `grant` decides it, in the order given for one device;
        a block claimed twice in the group goes to the first): one commit for all of them."""
        return self._together("claims", claims, lambda claim: claim.device,
                              lambda tx, group: [self._grant_in(tx, claim, max_open) for claim in group])

    def _grant_in(self, tx: Tx, claim: Claim, max_open: int) -> Granted:
        block_id, device = claim.block_id, claim.device
        # The device's claims one at a time (its open-block count must not change under this claim). Not the
        # device's ingest lock: a claim never waits for a group of batches. Ingest only adds completions, which
        # lower the count: a claim that misses one answers LIMIT_REACHED, never grants one block too many.
        if self.dialect.key_lock:
            tx.execute(self.dialect.key_lock, (f"claims:{device}",))
        row = tx.execute("SELECT station, body, route, winner FROM blocks WHERE id = ?"
                         + self.dialect.for_update, (block_id,)).fetchone()
        if row is None:
            return ClaimStatus.UNKNOWN_BLOCK, None, None
        if row[0] != claim.station:
            return ClaimStatus.WRONG_STATION, None, None
        winner = row[3]
        if winner is None:
            held = tx.execute("SELECT COUNT(*) FROM blocks WHERE winner = ? AND id NOT IN "
                              "(SELECT id FROM completed_blocks)", (device,)).fetchone()[0]
            if held >= max_open:
                return ClaimStatus.LIMIT_REACHED, None, None
            if tx.execute("UPDATE blocks SET winner = ?, granted_at = ? WHERE id = ? AND winner IS NULL",
                          (device, time.time(), block_id)).rowcount == 1:
                winner = device
        block, route = Block.from_dict(json.loads(row[1])), Route.from_dict(json.loads(row[2]))
        return (ClaimStatus.GRANTED if winner == device else ClaimStatus.TAKEN), block, route

    def winners(self) -> dict[str, str | None]:
        return {block: winner for block, winner in self._read("SELECT id, winner FROM blocks")}

    def claimed_routes(self) -> list[tuple[str, Route]]:
        """(winner, current route) of every claimed block: what the re-planner may revise."""
        rows = self._read("SELECT winner, route FROM blocks WHERE winner IS NOT NULL ORDER BY id")
        return [(winner, Route.from_dict(json.loads(route))) for winner, route in rows]

    def finished_stops(self, device: str, block_id: str) -> list[str]:
        """Stops the device reported finished for the block, in the order it finished them."""
        rows = self._read(f"SELECT {self.dialect.json_text('body', 'stop')} FROM events WHERE device = ? AND type = "
                          f"'stop.completed' AND {self.dialect.json_text('body', 'block')} = ? ORDER BY seq",
                          (device, block_id))
        return [stop for (stop,) in rows if stop]

    def revise_route(self, route: Route) -> tuple[str | None, Route]:
        """Store a new version of a block's route (version = stored + 1); returns (winner, versioned route)."""
        with self.engine.transaction() as tx:
            row = tx.execute("SELECT route_version, winner FROM blocks WHERE id = ?" + self.dialect.for_update,
                             (route.block_id,)).fetchone()
            if row is None:
                raise CloudDbError(f"unknown block {route.block_id}")
            revised = Route(route.block_id, int(row[0]) + 1, route.stops)
            tx.execute("UPDATE blocks SET route = ?, route_version = ? WHERE id = ?",
                       (json.dumps(revised.to_dict()), revised.version, route.block_id))
        return row[1], revised
