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
                             "--data-dir", str(workdir), "--report", str(report_path)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["blocks_claimed"] == report["blocks_offered"] == 2
    assert len(set(report["winners"].values())) == 2  # two different vans won; the third got nothing
    assert report["blocks_completed"] == 2
    for summary in report["summaries"]:  # every stop delivered or excepted
        assert summary["stops"] == STOPS
        assert summary["delivered"] + summary["exceptions"] == summary["packages"]
    assert report["wrong_package_caught"] >= 2  # one stray package scanned into each van
    assert report["wrong_house_caught"] >= 1
    assert report["events_produced"] == report["events_stored"] > 0
    assert report["lost"] == 0 and report["duplicates"] == 0 and report["chain_flags"] == 0
    winners = set(report["winners"].values())
    assert all(report["mcu_commands"][device] > 0 for device in winners)  # feedback reached the MCUs
    assert processes_mentioning(str(workdir)) == []


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
