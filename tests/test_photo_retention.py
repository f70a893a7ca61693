"""Proof photos on the device: the upload queue in the store, and retention that deletes only what the cloud
acknowledged (after retention_days, or oldest first when the photo disk is low), on a real small tmpfs."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from device.contract.domain import Event, EventType
from device.photo_retention import PhotoRetention, PhotoRetentionPolicy
from device.store import EventStore
from tests.helpers.tmpfs import MountRefused, small_tmpfs

SHA = "ab" * 32
KB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def add_photo(store: EventStore, folder: Path, photo_id: str, size: int, *, queue: bool = True) -> None:
    original, copy = folder / f"{photo_id}.jpg", folder / f"{photo_id}.upload.jpg"
    original.write_bytes(os.urandom(size))
    copy.write_bytes(os.urandom(size // 4))
    store.state.record_photo(photo_id, str(original), SHA, upload_path=str(copy), upload_sha256="cd" * 32, size=size,
                       upload_size=size // 4)
    if queue:
        assert store.state.queue_photo(photo_id, f"E-{photo_id}", "B-1")


def ack_all_chunks(store: EventStore, photo_id: str, total: int = 1) -> None:
    for index in range(total):
        store.state.photo_chunk_acked(photo_id, index, total)


def test_upload_queue_progress_and_stats(tmp_path: Path) -> None:
    clock = Clock()
    with EventStore(tmp_path / "events.db", clock=clock) as store:
        add_photo(store, tmp_path, "P1", 200 * KB)
        clock.now += 1
        add_photo(store, tmp_path, "P2", 400 * KB)
        add_photo(store, tmp_path, "P0", 100 * KB, queue=False)  # its event never committed: not queued
        queued = store.state.photo_uploads()
        assert [u.photo_id for u in queued] == ["P1", "P2"]
        assert queued[0].path == str(tmp_path / "P1.upload.jpg") and queued[0].sha256 == "cd" * 32
        assert store.state.photo_chunk_acked("P2", 0, 2) is False
        assert store.state.photo_chunk_acked("P2", 0, 2) is False  # a repeated ack changes nothing
        assert store.state.photo_uploads()[1].chunks_done == frozenset({0})
        assert store.state.photo_chunk_acked("P2", 1, 2) is True
        assert store.state.photo_chunk_acked("P2", 1, 2) is False  # already complete
        assert [u.photo_id for u in store.state.photo_uploads()] == ["P1"]
        stats = store.state.photo_stats()
        assert (stats.pending, stats.pending_bytes, stats.uploaded, stats.on_disk) == (1, 50 * KB, 1, 3)
        assert stats.on_disk_bytes == (200 + 400 + 100) * KB + (50 + 100 + 25) * KB


def test_committed_but_unqueued_photo_is_queued_at_start(tmp_path: Path) -> None:
    """The agent died between committing photo.checked and queueing the photo: the next start queues it."""
    with EventStore(tmp_path / "events.db") as store:
        add_photo(store, tmp_path, "P7", 10 * KB, queue=False)
        event = store.append(Event(EventType.PHOTO_CHECKED, {"photo_id": "P7", "sha256": SHA}, block="B-9", stop="S1"))
        assert store.state.photo_uploads() == []
        assert store.state.queue_committed_photos() == 1
        assert store.state.queue_committed_photos() == 0
        store.mark_acked([event.seq])
        assert [u.photo_id for u in store.state.photo_uploads()] == ["P7"]
        assert store.state.photo("P7")["block"] == "B-9"


def test_acked_photos_go_after_retention_days_only(tmp_path: Path) -> None:
    clock = Clock()
    with EventStore(tmp_path / "events.db", clock=clock) as store:
        for photo_id in ("P1", "P2", "P3"):
            add_photo(store, tmp_path, photo_id, 10 * KB)
        ack_all_chunks(store, "P1")
        clock.now += 3 * 86400
        ack_all_chunks(store, "P2")
        retention = PhotoRetention(store, tmp_path, PhotoRetentionPolicy(max_age_s=7 * 86400, min_free_bytes=0),
                                   clock=clock)
        assert retention.sweep().deleted == 0  # acked, but not old enough
        clock.now += 5 * 86400  # P1 acked 8 days ago, P2 5 days ago, P3 never
        report = retention.sweep()
        assert report.deleted == 1 and report.freed_bytes == 10 * KB + 10 * KB // 4 and not report.low_disk
        assert not (tmp_path / "P1.jpg").exists() and not (tmp_path / "P1.upload.jpg").exists()
        assert (tmp_path / "P2.jpg").exists() and (tmp_path / "P3.jpg").exists()
        clock.now += 100 * 86400
        assert retention.sweep().deleted == 1  # P2; P3 is never acked, so never deleted
        assert (tmp_path / "P3.jpg").exists() and (tmp_path / "P3.upload.jpg").exists()
        assert store.state.photo("P1")["deleted_at"] is not None and store.state.photo("P3")["deleted_at"] is None


def test_low_photo_disk_removes_acked_oldest_first_and_keeps_unacked(tmp_path: Path) -> None:
    clock = Clock()
    try:
        with small_tmpfs(tmp_path / "photos", "2m") as disk, \
                EventStore(tmp_path / "events.db", clock=clock) as store:
            for n in range(8):  # 8 x (160 + 40) KiB = 1.6 MiB of a 2 MiB disk
                add_photo(store, disk, f"P{n}", 160 * KB)
            for n in (5, 1, 3, 6):  # acknowledged in this order: P5 is the oldest upload
                clock.now += 10
                ack_all_chunks(store, f"P{n}")
            retention = PhotoRetention(store, disk, PhotoRetentionPolicy(max_age_s=7 * 86400,
                                                                         min_free_bytes=700 * KB), clock=clock)
            assert retention.free_bytes() < 700 * KB  # filled to the low-disk threshold
            report = retention.sweep()
            assert report.low_disk and report.deleted == 2  # P5, P1 free enough; P3, P6 stay (not old enough)
            assert retention.free_bytes() >= 700 * KB
            left = sorted(p.name.split(".")[0] for p in disk.glob("*.jpg"))
            assert sorted(set(left)) == ["P0", "P2", "P3", "P4", "P6", "P7"]
            # Fill the disk again: every acked photo goes, oldest first, and the unacked ones stay, low or not.
            (disk / "filler").write_bytes(os.urandom(400 * KB))
            report = retention.sweep()
            assert report.low_disk and report.deleted == 2
            left = sorted({p.name.split(".")[0] for p in disk.glob("*.jpg")})
            assert left == ["P0", "P2", "P4", "P7"]
            (disk / "filler2").write_bytes(os.urandom(300 * KB))  # low again, nothing acknowledged is left
            report = retention.sweep()
            assert report.low_disk and report.deleted == 0
            assert sorted({p.name.split(".")[0] for p in disk.glob("*.jpg")}) == ["P0", "P2", "P4", "P7"]
            conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
            deleted = [i for (i,) in conn.execute("SELECT photo_id FROM photos WHERE deleted_at IS NOT NULL "
                                                  "ORDER BY deleted_at, uploaded_at")]
            conn.close()
            assert deleted == ["P5", "P1", "P3", "P6"]
            assert json.loads(store.state.photo("P0")["chunks_done"] or "[]") == []
    except MountRefused as exc:
        pytest.fail(f"{exc} (the low-disk test needs root)")


def test_a_photo_waits_for_its_event_to_be_acknowledged(tmp_path: Path) -> None:
    """Events first: the uploader is offered a photo only once the cloud holds the event that records it."""
    with EventStore(tmp_path / "events.db") as store:
        stored = store.append(Event(EventType.PHOTO_CHECKED, {"photo_id": "P1", "sha256": SHA}))
        add_photo(store, tmp_path, "P1", 10 * KB, queue=False)
        assert store.state.queue_photo("P1", stored.id)
        assert store.state.photo_uploads() == []
        store.mark_acked([stored.seq])
        assert [u.photo_id for u in store.state.photo_uploads()] == ["P1"]
