"""The reference cloud's database (SQLite): idempotent event ingest with per-device hash-chain verification,
block offers and atomic claim grants.

One `CloudDb` per worker (each its own connection); several workers and processes may share one file: every
write is one `BEGIN IMMEDIATE` transaction, so claims and chain heads are serialised by SQLite itself. Within
one worker, calls may come from several threads (asyncio.to_thread): a lock serialises them on the connection.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from cloud_sync.cloud.clock import ClockFlag, ClockStamp, check_clock
from cloud_sync.errors import MessageRejected, RejectReason, SyncError
from cloud_sync.messages import ClaimStatus, EventBatch, PhotoChunk
from device.contract.chain import GENESIS_HASH, canonical_bytes, hash_body
from device.contract.domain import BLOB_ID_PREFIX, Block, EventType, Route

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    device TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    body TEXT NOT NULL, hash TEXT NOT NULL, batch_id TEXT NOT NULL, received_at REAL NOT NULL,
    -- hash: the device's checkpoint claim, or '' until the chain walk stores the hash computed here
    chain TEXT NOT NULL DEFAULT 'pending',  -- pending (predecessor not yet here) | ok | broken
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, verified_seq INTEGER NOT NULL DEFAULT 0,
    verified_hash TEXT NOT NULL, last_batch_at REAL, status TEXT
);
CREATE TABLE IF NOT EXISTS flags (
    device TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (device, seq, kind)
);
-- Timestamps to distrust, apart from the integrity flags above: the stream is whole, the device's clock was not.
CREATE TABLE IF NOT EXISTS clock_flags (
    device TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, jump_s REAL NOT NULL, detail TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (device, seq, kind)
);
CREATE TABLE IF NOT EXISTS blocks (
    id TEXT PRIMARY KEY, station TEXT NOT NULL, body TEXT NOT NULL, route TEXT NOT NULL,
    route_version INTEGER NOT NULL, winner TEXT, granted_at REAL
);
CREATE TABLE IF NOT EXISTS stations (station TEXT PRIMARY KEY, offers_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS completed_blocks (id TEXT PRIMARY KEY, device TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS photo_chunks (
    device TEXT NOT NULL, photo_id TEXT NOT NULL, seq INTEGER NOT NULL, total INTEGER NOT NULL,
    sha256 TEXT NOT NULL, data BLOB NOT NULL, received_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (device, photo_id, seq)
);
CREATE INDEX IF NOT EXISTS photo_chunks_age ON photo_chunks (received_at);
-- A complete photo: the file lives in the photo folder (path), the row ties it to its device, block, stop and
-- the photo.checked event that recorded it, and says whether its sha256 matches the one in that event.
CREATE TABLE IF NOT EXISTS photo_files (
    device TEXT NOT NULL, photo_id TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, path TEXT NOT NULL,
    status TEXT NOT NULL, expected_sha256 TEXT, event_id TEXT, block TEXT, stop TEXT, detail TEXT,
    received_at REAL NOT NULL, PRIMARY KEY (device, photo_id)
);
CREATE INDEX IF NOT EXISTS idx_events_photo ON events(device, json_extract(body, '$.data.photo_id'))
    WHERE type = 'photo.checked';
"""
PHOTO_EVENT = "photo.checked"  # the event that records a proof photo and the sha256 of its upload copy
BLOB_EVENT = "command.result"  # the event that records a blob (an upload_logs result: data.blob_id, data.sha256)
BUSY_TIMEOUT_MS = 30_000  # other workers hold the write lock for one batch at most


class CloudDbError(SyncError):
    pass


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
class IngestResult:
    stored: int
    duplicates: int
    flagged: int
    verified_seq: int
    clock_flagged: int = 0


def _write_file(path: Path, data: bytes) -> None:
    """Whole or not at all under its name: a temporary file beside it, fsynced, then renamed. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def default_photo_dir(db_path: Path) -> Path:
    """Photo files live beside the database: cloud.db -> cloud-photos/{device}/{photo_id}.jpg."""
    return db_path.with_name(f"{db_path.stem}-photos")


class CloudDb:
    def __init__(self, path: Path | str, photo_dir: Path | str | None = None) -> None:
        self.path = Path(path)
        self.photo_dir = Path(photo_dir) if photo_dir is not None else default_photo_dir(self.path)
        try:
            self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                        timeout=BUSY_TIMEOUT_MS / 1000)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # an ack promises the events are on disk
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(photo_chunks)")}
            if columns and "received_at" not in columns:  # a database made before chunks had an age
                self.conn.execute("ALTER TABLE photo_chunks ADD COLUMN received_at REAL NOT NULL DEFAULT 0")
            self.conn.executescript(SCHEMA)
            self.lock = threading.Lock()
        except sqlite3.Error as exc:
            raise CloudDbError(f"cannot open cloud database {self.path}: {exc}") from exc

    def close(self) -> None:
        # Under the lock: a worker thread may still be inside an ingest (its task was cancelled, the thread
        # was not); closing the connection under it crashes the sqlite3 module.
        with self.lock:
            self.conn.close()

    def _transaction(self) -> _Tx:
        return _Tx(self.conn, self.lock)

    # --- ingest ------------------------------------------------------------------------------------

    def ingest(self, device: str, batch: EventBatch) -> IngestResult:
        """Store a batch idempotently, advance the device's verified chain head, flag what does not fit."""
        now = time.time()
        stored = duplicates = flagged = 0
        with self._transaction() as cur:
            for event in batch.events:
                doc = {k: v for k, v in event.items() if k != "hash"}
                body = canonical_bytes(doc).decode("utf-8")
                cur.execute("INSERT OR IGNORE INTO events (device, seq, id, type, body, hash, batch_id, received_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (device, event["seq"], event["id"], event["type"], body, event.get("hash", ""),
                             batch.batch_id, now))
                if cur.rowcount == 1:
                    stored += 1
                    if event["type"] == EventType.BLOCK_COMPLETED.value and isinstance(event.get("block"), str):
                        cur.execute("INSERT OR IGNORE INTO completed_blocks (id, device, at) "
                                    "SELECT id, ?, ? FROM blocks WHERE id = ? AND winner = ?",
                                    (device, now, event["block"], device))
                    continue
                row = cur.execute("SELECT device, seq FROM events WHERE id = ?", (event["id"],)).fetchone()
                if row == (device, event["seq"]):
                    duplicates += 1  # a resend: harmless by design
                elif row is not None:
                    flagged += self._flag(cur, device, event["seq"], FlagKind.DEVICE_MISMATCH,
                                          f"id {event['id']} already stored as {row[0]}#{row[1]}", now)
                else:
                    flagged += self._flag(cur, device, event["seq"], FlagKind.SEQ_CONFLICT,
                                          f"other event id {event['id']}: {body[:2000]}", now)
            self._link_waiting_photos(cur, device, batch.events, now)
            verified_seq, broken, clock_flagged = self._advance_chain(cur, device, now)
            flagged += broken
            # Every seq below the device's floor was acked, so it must be here: a hole there is a real gap.
            if batch.floor_seq > verified_seq + 1:
                missing = verified_seq + 1
                held = cur.execute("SELECT 1 FROM events WHERE device = ? AND seq = ?", (device, missing)).fetchone()
                if held is None:
                    flagged += self._flag(cur, device, missing, FlagKind.GAP,
                                          f"seq {missing} missing below the device's floor {batch.floor_seq}", now)
            cur.execute("UPDATE devices SET last_batch_at = ? WHERE device = ?", (now, device))
        return IngestResult(stored, duplicates, flagged, verified_seq, clock_flagged)

    def _flag(self, cur: sqlite3.Cursor, device: str, seq: int, kind: FlagKind, detail: str, now: float) -> int:
        cur.execute("INSERT OR IGNORE INTO flags (device, seq, kind, detail, at) VALUES (?, ?, ?, ?, ?)",
                    (device, seq, kind.value, detail, now))
        if cur.rowcount:
            log.warning("ingest flag %s for %s seq %d: %s", kind.value, device, seq, detail[:200])
        return cur.rowcount

    def _advance_chain(self, cur: sqlite3.Cursor, device: str, now: float) -> tuple[int, int, int]:
        """Walk the contiguous run after the verified head. Events of the priority lane arrive ahead of the
        track backlog, so a hole here usually means 'not yet arrived' and the walk simply waits at it.
        The walk meets every event once, in seq order: the clock check (each event against its predecessor)
        rides on it. Returns (verified seq, chain breaks, clock flags)."""
        row = cur.execute("SELECT verified_seq, verified_hash FROM devices WHERE device = ?", (device,)).fetchone()
        if row is None:
            cur.execute("INSERT INTO devices (device, verified_seq, verified_hash) VALUES (?, 0, ?)",
                        (device, GENESIS_HASH))
            row = (0, GENESIS_HASH)
        expected, prev = row[0] + 1, row[1]
        marks: list[tuple[str, str, str, int]] = []  # (chain state, hash, device, seq)
        broken = 0
        stamps: list[ClockStamp | None] = []
        # A cursor of its own, read lazily: the walk stops at the first hole without loading what lies beyond.
        walk = self.conn.execute("SELECT seq, body, hash FROM events WHERE device = ? AND seq > ? ORDER BY seq",
                                 (device, row[0]))
        for seq, body, claimed in walk:
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
        walk.close()
        cur.executemany("UPDATE events SET chain = ?, hash = ? WHERE device = ? AND seq = ?", marks)
        for _, _, _, seq in (m for m in marks if m[0] == "broken"):
            self._flag(cur, device, seq, FlagKind.CHAIN_BREAK,
                       "hash does not follow from the events since the previous checkpoint", now)
        cur.execute("UPDATE devices SET verified_seq = ?, verified_hash = ? WHERE device = ?",
                    (expected - 1, prev, device))
        if stamps:
            stamps.insert(0, self._clock_stamp(cur, device, row[0]))  # the old head: the first one's predecessor
        clock_flags = [flag for before, stamp in zip(stamps, stamps[1:]) if stamp is not None
                       for flag in check_clock(before, stamp, now)]
        return expected - 1, broken, sum(self._flag_clock(cur, device, flag, now) for flag in clock_flags)

    @staticmethod
    def _clock_stamp(cur: sqlite3.Cursor, device: str, seq: int) -> ClockStamp | None:
        row = cur.execute("SELECT body FROM events WHERE device = ? AND seq = ?", (device, seq)).fetchone()
        return None if row is None else ClockStamp.of(seq, orjson.loads(row[0]))

    def _flag_clock(self, cur: sqlite3.Cursor, device: str, flag: ClockFlag, now: float) -> int:
        cur.execute("INSERT OR IGNORE INTO clock_flags (device, seq, kind, jump_s, detail, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (device, flag.seq, flag.kind.value, flag.jump_s, flag.detail(), now))
        if cur.rowcount:
            log.warning("clock flag %s for %s seq %d: %s", flag.kind.value, device, flag.seq, flag.detail())
        return cur.rowcount

    def expire_photo_chunks(self, max_age_s: float, now: float | None = None) -> int:
        """Drop the chunks of photos that stayed incomplete longer than `max_age_s` (any device's); how many."""
        now = time.time() if now is None else now
        with self._transaction() as cur:
            cur.execute("DELETE FROM photo_chunks WHERE received_at < ?", (now - max_age_s,))
            expired = cur.rowcount
        if expired:
            log.warning("dropped %d chunks of photos incomplete for more than %.0f s", expired, max_age_s)
        return expired

    def store_photo_chunk(self, device: str, chunk: PhotoChunk, limits: PhotoLimits = PhotoLimits(),
                          now: float | None = None) -> StoredPhoto | None:
        """Keep a chunk (idempotent); once all are here, write the photo's file and check it against its event.
        Returns the stored photo when this chunk completed it. A chunk beyond the device's quota of incomplete
        photos is refused (MessageRejected QUOTA: not acked, the device tries again later)."""
        now = time.time() if now is None else now
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM photo_files WHERE device = ? AND photo_id = ?",
                           (device, chunk.photo_id)).fetchone():
                return None  # a resent chunk of a finished photo
            pending = cur.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM photo_chunks WHERE device = ?",
                                  (device,)).fetchone()[0]
            held = cur.execute("SELECT 1 FROM photo_chunks WHERE device = ? AND photo_id = ? AND seq = ?",
                               (device, chunk.photo_id, chunk.seq)).fetchone()
            if held is None and pending + len(chunk.data) > limits.max_pending_bytes:
                raise MessageRejected(RejectReason.QUOTA, f"{device} holds {pending} bytes of incomplete photos")
            cur.execute("INSERT OR IGNORE INTO photo_chunks (device, photo_id, seq, total, sha256, data, received_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (device, chunk.photo_id, chunk.seq, chunk.total, chunk.sha256, chunk.data, now))
            rows = cur.execute("SELECT seq, data FROM photo_chunks WHERE device = ? AND photo_id = ? AND total = ? "
                               "AND sha256 = ? ORDER BY seq", (device, chunk.photo_id, chunk.total,
                                                                chunk.sha256)).fetchall()
            if len(rows) < chunk.total:
                return None
            whole = b"".join(data for _, data in rows)
            if device.startswith(".") or "/" in device:  # the device id becomes a folder name
                raise CloudDbError(f"device id {device!r:.40} cannot name a photo folder")
            # ids are plain (PhotoChunk checks); a blob (logs) is no JPEG: it keeps its bare id
            path = self.photo_dir / device / (chunk.photo_id if is_blob(chunk.photo_id) else f"{chunk.photo_id}.jpg")
            try:
                _write_file(path, whole)
            except OSError as exc:
                raise CloudDbError(f"cannot write photo file {path}: {exc}") from exc
            cur.execute("DELETE FROM photo_chunks WHERE device = ? AND photo_id = ?", (device, chunk.photo_id))
            sha256 = hashlib.sha256(whole).hexdigest()
            cur.execute("INSERT INTO photo_files (device, photo_id, sha256, size, path, status, received_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (device, chunk.photo_id, sha256, len(whole), str(path),
                                                         PhotoStatus.AWAITING_EVENT.value, now))
            if sha256 != chunk.sha256:
                status = self._settle_photo(cur, device, chunk.photo_id, PhotoStatus.CORRUPT,
                                            f"bytes hash to {sha256}, the chunks announced {chunk.sha256}", now)
            else:
                status = self._link_photo(cur, device, chunk.photo_id, now)
        log.info("photo %s from %s complete (%d bytes): %s", chunk.photo_id, device, len(whole), status.value)
        return StoredPhoto(device, chunk.photo_id, status, len(whole), str(path))

    def _settle_photo(self, cur: sqlite3.Cursor, device: str, photo_id: str, status: PhotoStatus, detail: str,
                      now: float) -> PhotoStatus:
        cur.execute("UPDATE photo_files SET status = ?, detail = ? WHERE device = ? AND photo_id = ?",
                    (status.value, detail, device, photo_id))
        if status in (PhotoStatus.CORRUPT, PhotoStatus.SHA_MISMATCH):
            kind = FlagKind.PHOTO_CORRUPT if status is PhotoStatus.CORRUPT else FlagKind.PHOTO_SHA_MISMATCH
            # flags are keyed by (device, seq, kind): a photo has no seq, its id's crc32 stands in
            self._flag(cur, device, zlib.crc32(photo_id.encode()), kind, f"photo {photo_id}: {detail}", now)
        return status

    def _link_photo(self, cur: sqlite3.Cursor, device: str, photo_id: str, now: float) -> PhotoStatus:
        """Tie a complete upload to the event that recorded it (a photo's photo.checked, a blob's command.result)
        and compare the sha256 that event recorded; without the event yet, the upload waits for it (ingest calls
        this again)."""
        recorded = self._recording_event(cur, device, photo_id)
        if recorded is None:
            return PhotoStatus.AWAITING_EVENT
        event_id, doc, expected = recorded
        cur.execute("UPDATE photo_files SET event_id = ?, block = ?, stop = ?, expected_sha256 = ? "
                    "WHERE device = ? AND photo_id = ?", (event_id, doc.get("block"), doc.get("stop"), expected,
                                                         device, photo_id))
        sha256 = cur.execute("SELECT sha256 FROM photo_files WHERE device = ? AND photo_id = ?",
                             (device, photo_id)).fetchone()[0]
        if sha256 == expected:
            return self._settle_photo(cur, device, photo_id, PhotoStatus.OK, "", now)
        return self._settle_photo(cur, device, photo_id, PhotoStatus.SHA_MISMATCH,
                                  f"file sha256 {sha256}, event {event_id} recorded {expected}", now)

    @staticmethod
    def _recording_event(cur: sqlite3.Cursor, device: str, upload_id: str) -> tuple[str, Any, Any] | None:
        """(event id, event, the sha256 it recorded) of the event that records this upload, if stored."""
        if is_blob(upload_id):
            row = cur.execute("SELECT id, body FROM events WHERE device = ? AND type = ? "
                              "AND json_extract(body, '$.data.data.blob_id') = ?",
                              (device, BLOB_EVENT, upload_id)).fetchone()
            if row is None:
                return None
            doc = orjson.loads(row[1])
            return row[0], doc, ((doc.get("data") or {}).get("data") or {}).get("sha256")
        row = cur.execute("SELECT id, body FROM events WHERE device = ? AND type = ? "
                          "AND json_extract(body, '$.data.photo_id') = ?", (device, PHOTO_EVENT, upload_id)).fetchone()
        if row is None:
            return None
        doc = orjson.loads(row[1])
        data = doc.get("data") or {}
        return row[0], doc, data.get("upload_sha256") or data.get("sha256")

    def _link_waiting_photos(self, cur: sqlite3.Cursor, device: str, events: Any, now: float) -> None:
        """Photo events of a batch settle photos that completed before them."""
        for event in events:
            data = event.get("data") or {}
            if event.get("type") == PHOTO_EVENT:
                photo_id = data.get("photo_id")
            elif event.get("type") == BLOB_EVENT and isinstance(data.get("data"), dict):
                photo_id = data["data"].get("blob_id")
            else:
                photo_id = None
            if isinstance(photo_id, str) and cur.execute(
                    "SELECT 1 FROM photo_files WHERE device = ? AND photo_id = ? AND status = ?",
                    (device, photo_id, PhotoStatus.AWAITING_EVENT.value)).fetchone():
                self._link_photo(cur, device, photo_id, now)

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

    def record_status(self, device: str, status: dict[str, Any]) -> None:
        with self._transaction() as cur:
            cur.execute("INSERT INTO devices (device, verified_hash, status) VALUES (?, ?, ?) "
                        "ON CONFLICT (device) DO UPDATE SET status = excluded.status",
                        (device, GENESIS_HASH, json.dumps(status)))

    # --- reading (operator views and tests) --------------------------------------------------------

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    def event_count(self, device: str | None = None) -> int:
        if device is None:
            return self._read("SELECT COUNT(*) FROM events")[0][0]
        return self._read("SELECT COUNT(*) FROM events WHERE device = ?", (device,))[0][0]

    def event_rows(self, device: str) -> list[tuple[int, str, str]]:
        """(seq, id, chain state) in seq order."""
        return self._read("SELECT seq, id, chain FROM events WHERE device = ? ORDER BY seq", (device,))

    def flags(self, device: str | None = None) -> list[dict[str, Any]]:
        rows = self._read("SELECT device, seq, kind, detail FROM flags" + (" WHERE device = ?" if device else ""),
                          (device,) if device else ())
        return [dict(zip(("device", "seq", "kind", "detail"), row)) for row in rows]

    def arrivals(self, device: str) -> list[tuple[int, str, str, float]]:
        """(seq, type, batch id, received at) in the order the cloud first stored them (a resend keeps the first)."""
        return self._read("SELECT seq, type, batch_id, received_at FROM events WHERE device = ? "
                          "ORDER BY received_at, seq", (device,))

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
        with self._transaction() as cur:
            cur.execute("INSERT INTO blocks (id, station, body, route, route_version) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET body = excluded.body, route = excluded.route, "
                        "route_version = excluded.route_version WHERE blocks.winner IS NULL",
                        (block.id, block.station, json.dumps(block.to_dict()), json.dumps(route.to_dict()),
                         route.version))

    def open_blocks(self, station: str) -> tuple[int, list[Block]]:
        """(next offers version, unclaimed blocks of the station). The version also never falls behind the
        clock in milliseconds, so a cloud started on a fresh database still outranks the retained offers."""
        now_ms = time.time_ns() // 1_000_000
        with self._transaction() as cur:
            cur.execute("INSERT INTO stations (station, offers_version) VALUES (?, ?) ON CONFLICT (station) "
                        "DO UPDATE SET offers_version = MAX(offers_version + 1, excluded.offers_version)",
                        (station, now_ms))
            version = cur.execute("SELECT offers_version FROM stations WHERE station = ?", (station,)).fetchone()[0]
            rows = cur.execute("SELECT body FROM blocks WHERE station = ? AND winner IS NULL ORDER BY id",
                               (station,)).fetchall()
        return version, [Block.from_dict(json.loads(body)) for (body,) in rows]

    def grant(self, block_id: str, device: str, station: str | None, max_open: int
              ) -> tuple[ClaimStatus, Block | None, Route | None]:
        """Exactly one device wins a block: the conditional UPDATE inside one write transaction decides. A
        device wins only blocks of its own `station` (None: a device the cloud does not know) and holds at
        most `max_open` blocks it has not completed."""
        with self._transaction() as cur:
            row = cur.execute("SELECT station, body, route, winner FROM blocks WHERE id = ?", (block_id,)).fetchone()
            if row is None:
                return ClaimStatus.UNKNOWN_BLOCK, None, None
            if row[0] != station:
                return ClaimStatus.WRONG_STATION, None, None
            if row[3] is None:
                held = cur.execute("SELECT COUNT(*) FROM blocks WHERE winner = ? AND id NOT IN "
                                   "(SELECT id FROM completed_blocks)", (device,)).fetchone()[0]
                if held >= max_open:
                    return ClaimStatus.LIMIT_REACHED, None, None
                cur.execute("UPDATE blocks SET winner = ?, granted_at = ? WHERE id = ? AND winner IS NULL",
                            (device, time.time(), block_id))
            winner = cur.execute("SELECT winner FROM blocks WHERE id = ?", (block_id,)).fetchone()[0]
        block, route = Block.from_dict(json.loads(row[1])), Route.from_dict(json.loads(row[2]))
        return (ClaimStatus.GRANTED if winner == device else ClaimStatus.TAKEN), block, route

    def winners(self) -> dict[str, str | None]:
        return dict(self._read("SELECT id, winner FROM blocks"))

    def claimed_routes(self) -> list[tuple[str, Route]]:
        """(winner, current route) of every claimed block: what the re-planner may revise."""
        rows = self._read("SELECT winner, route FROM blocks WHERE winner IS NOT NULL ORDER BY id")
        return [(winner, Route.from_dict(json.loads(route))) for winner, route in rows]

    def finished_stops(self, device: str, block_id: str) -> list[str]:
        """Stops the device reported finished for the block, in the order it finished them."""
        rows = self._read("SELECT json_extract(body, '$.stop') FROM events WHERE device = ? AND type = "
                          "'stop.completed' AND json_extract(body, '$.block') = ? ORDER BY seq", (device, block_id))
        return [stop for (stop,) in rows if stop]

    def revise_route(self, route: Route) -> tuple[str | None, Route]:
        """Store a new version of a block's route (version = stored + 1); returns (winner, versioned route)."""
        with self._transaction() as cur:
            row = cur.execute("SELECT route_version, winner FROM blocks WHERE id = ?", (route.block_id,)).fetchone()
            if row is None:
                raise CloudDbError(f"unknown block {route.block_id}")
            revised = Route(route.block_id, row[0] + 1, route.stops)
            cur.execute("UPDATE blocks SET route = ?, route_version = ? WHERE id = ?",
                        (json.dumps(revised.to_dict()), revised.version, route.block_id))
        return row[1], revised


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), sqlite3 errors turned into CloudDbError."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn = conn
        self.lock = lock

    def __enter__(self) -> sqlite3.Cursor:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.lock.release()
            raise CloudDbError(f"cannot begin a transaction: {exc}") from exc
        return self.conn.cursor()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            self._finish(exc_type, exc)
        finally:
            self.lock.release()

    def _finish(self, exc_type: type | None, exc: BaseException | None) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self.conn.execute("ROLLBACK")
                raise CloudDbError(f"commit failed: {error}") from error
        self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise CloudDbError(f"{type(exc).__name__}: {exc}") from exc
