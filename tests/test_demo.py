"""`flexedge demo` end to end: a real broker, the reference cloud, three agent processes, simulated hardware."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.procs import processes_mentioning

STOPS = 4


def test_demo_delivers_catches_mistakes_and_loses_nothing(tmp_path: Path) -> None:
    workdir, report_path = tmp_path / "demo", tmp_path / "r.json"
    result = subprocess.run([sys.executable, "-m", "device.cli", "demo", "--duration", "60", "--seed", "7",
                             "--data-dir", str(workdir), "--report", str(report_path), "--json"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert json.loads(result.stdout) == report  # --json: the report alone on stdout, progress on stderr
    assert "agents:" in result.stderr
    assert report["blocks_claimed"] == report["blocks_offered"] == 2
    assert len(set(report["winners"].values())) == 2  # two different vans won; the third got nothing
    assert report["blocks_completed"] == 2
    for summary in report["summaries"]:  # every stop delivered or excepted
        assert summary["stops"] == STOPS
        assert summary["delivered"] + summary["exceptions"] == summary["packages"]
    assert report["wrong_package_caught"] >= 2  # one stray package scanned into each van
    assert report["wrong_house_caught"] >= 1
    assert report["events_produced"] == report["events_stored"] > 0
    assert report["route_revisions"] == 1  # rain over the last block's area: the cloud re-planned it once
    assert report["lost"] == 0 and report["duplicates"] == 0 and report["chain_flags"] == 0
    winners = set(report["winners"].values())
    assert all(report["mcu_commands"][device] > 0 for device in winners)  # feedback reached the MCUs
    assert processes_mentioning(str(workdir)) == []
    assert report["photos_in_cloud"] == report["photos_taken"] > 0 and report["photo_sha_mismatch"] == 0
    assert 0 < report["upload_bytes_mean"] <= 300 * 1024
    assert_photos_match_their_events(workdir / "cloud.db")


def assert_photos_match_their_events(cloud_db: Path) -> None:
    """`flexedge cloud photos` lists each photo; each stored file hashes to the upload copy's sha256 that its
    photo.checked event recorded (read from the cloud's own copy of the device's events)."""
    import hashlib
    import sqlite3

    listed = subprocess.run([sys.executable, "-m", "device.cli", "cloud", "photos", "--db", str(cloud_db), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    conn = sqlite3.connect(f"file:{cloud_db}?mode=ro", uri=True)
    recorded = {json.loads(body)["data"]["photo_id"]: (event_id, json.loads(body)["data"]["upload_sha256"])
                for event_id, body in conn.execute("SELECT id, body FROM events WHERE type = 'photo.checked'")}
    conn.close()
    assert sorted(r["photo_id"] for r in rows) == sorted(recorded)
    for row in rows:
        assert (row["event_id"], row["sha256"]) == recorded[row["photo_id"]]
        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"]
        assert Path(row["path"]).is_relative_to(cloud_db.parent) and row["bytes"] == Path(row["path"]).stat().st_size


def test_demo_interrupted_leaves_no_process(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "device.cli", "demo", "--duration", "60",
                             "--data-dir", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    for line in proc.stdout:  # wait until the agents run
        if line.startswith("agents:"):
            break
    time.sleep(2)
    assert processes_mentioning(str(workdir)), "the demo's broker and agents should be running"
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(workdir)) == []
    assert os.path.exists(workdir / "cloud.db")
