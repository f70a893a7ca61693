"""`flexedge demo` end to end: a real broker, the reference cloud, three agent processes, simulated hardware."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from playwright.async_api import expect

from tests.helpers.procs import processes_mentioning
from tests.test_console_browser import chromium
from tests.test_operator_browser import ARTIFACTS, DESK, PHONE, WAIT_MS, all_in_view, log_in, shot

STOPS = 4


def test_demo_delivers_catches_mistakes_and_loses_nothing(tmp_path: Path) -> None:
    """The demo run, with the operator page over its cloud (`--http`) looked at in Chromium while it runs."""
    workdir, report_path = tmp_path / "demo", tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "device.cli", "demo", "--duration", "60", "--seed", "7",
                             "--data-dir", str(workdir), "--report", str(report_path), "--json",
                             "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress: list[str] = []
    out: list[str] = []
    # Each pipe has one reader: communicate() would read (and close) stderr under the progress reader's feet.
    readers = [threading.Thread(target=lambda: progress.extend(proc.stderr), daemon=True),  # type: ignore[arg-type]
               threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)]  # type: ignore[union-attr]
    for reader in readers:
        reader.start()
    try:
        page_line = _wait_for_line(progress, "operator page:", proc)
        url, password = re.match(r"operator page: (\S+) \(log in as demo, password (\S+)\)", page_line).groups()
        asyncio.run(look_at_the_demo(url, password))
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for reader in readers:
            reader.join(10)
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()  # type: ignore[union-attr]
    stdout, stderr = "".join(out), "".join(progress)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert json.loads(stdout) == report  # --json: the report alone on stdout, progress on stderr
    assert "agents:" in stderr
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


def _wait_for_line(lines: list[str], start: str, proc: subprocess.Popen, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in list(lines):
            if line.startswith(start):
                return line.strip()
        assert proc.poll() is None, "".join(lines)[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no {start!r} line: {''.join(lines)[-3000:]}")


async def look_at_the_demo(url: str, password: str) -> None:
    """An operator follows the demo live: the three vans online, the two blocks claimed, each winner on the map
    with its route progress. A screenshot per screen size in tests/artifacts/operator/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with chromium() as browser:
        for viewport in (DESK, PHONE):
            page = await log_in(browser, url, viewport, "demo", password=password)
            for van in ("van-01", "van-02", "van-03"):
                await expect(page.get_by_test_id(f"link-{van}")).to_have_text("online", timeout=WAIT_MS * 3)
            claimed = page.locator("#blocks tbody tr", has=page.locator("td", has_text=re.compile(r"^van-\d\d$")))
            await expect(claimed).to_have_count(2, timeout=WAIT_MS * 3)
            for winner in await claimed.locator("td:nth-child(3)").all_inner_texts():
                await expect(page.get_by_test_id(f"van-{winner}")).to_contain_text(
                    re.compile(rf"{winner} \d+/\d+"), timeout=WAIT_MS * 3)
            await all_in_view(page)
            await shot(page, "operator-08-demo")


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
