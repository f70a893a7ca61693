"""Crash and disk-full durability of the event store, against real processes and a real small filesystem."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from device.contract.domain import Event, EventType
from device.store import DiskCondition, EventStore, StoreFull

REPO = Path(__file__).resolve().parent.parent


def _run_child_until_killed(db: Path, seed: int, rng: random.Random) -> list[str]:
    child = subprocess.Popen([sys.executable, "-m", "tests.helpers.append_child", str(db), str(seed)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    reported: list[str] = []
    reader = threading.Thread(target=lambda: reported.extend(
        line.decode().strip() for line in child.stdout if line.endswith(b"\n")))
    reader.start()
    time.sleep(rng.uniform(0.3, 1.0))  # start-up plus a random moment in the stream
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join()
    child.stdout.close()
    return reported


def test_sigkill_loses_no_reported_event(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    rng = random.Random(2024)
    all_reported: set[str] = set()
    for round_no in range(20):
        reported = _run_child_until_killed(db, round_no, rng)
        all_reported.update(reported)
        with EventStore(db) as store:
            ids = {e["id"] for e in _all_events(store)}
            missing = all_reported - ids
            assert not missing, f"round {round_no}: {len(missing)} acknowledged events lost"
            seqs = [e["seq"] for e in _all_events(store)]
            assert seqs == list(range(1, len(seqs) + 1)), f"round {round_no}: seq gap"
            assert store.integrity_check() == "ok"
            assert store.verify_chain().ok
    assert len(all_reported) > 1000  # the children really were writing when killed


def _all_events(store: EventStore) -> list[dict]:
    out: list[dict] = []
    while True:
        chunk = store.events(after_seq=out[-1]["seq"] if out else 0, limit=5000)
        if not chunk:
            return out
        out.extend(chunk)


def test_disk_full_keeps_committed_events_and_recovers(small_fs: Path) -> None:
    db = small_fs / "events.db"
    committed: list[str] = []
    with EventStore(db) as store:
        with pytest.raises(StoreFull):
            for i in range(100_000):
                burst = [Event(EventType.PACKAGE_SCANNED, {"n": i, "pad": "y" * 400}) for _ in range(5)]
                committed.extend(s.id for s in store.append_many(burst))
        assert len(committed) > 100
        assert store.disk_condition is DiskCondition.FULL
        refused = store.refused_while_full
        with pytest.raises(StoreFull):  # still full: refused again, clearly
            store.append(Event(EventType.PACKAGE_SCANNED, {"after": "full"}))
        assert store.refused_while_full == refused + 1
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
        after = store.append(Event(EventType.PACKAGE_SCANNED, {"after": "space returned"}))
        assert after.seq == len(committed) + 1  # no seq burnt by the failed commits
        assert store.disk_condition is not DiskCondition.FULL  # the first commit that lands clears it
    with EventStore(db) as store:
        ids = [e["id"] for e in _all_events(store)]
        assert ids[:-1] == committed and ids[-1] == after.id
        assert store.integrity_check() == "ok"
        assert store.verify_chain().ok
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    os.sync()
