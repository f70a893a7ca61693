"""The `flexedge` command as a user runs it: a real subprocess, JSON on stdout, logs on stderr."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from device.contract.domain import Event, EventType
from device.store import EventStore
from tests.helpers.store import mark_acked_upto


def flexedge(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_commands() -> None:
    result = flexedge("--help")
    assert result.returncode == 0
    for command in ("status", "outbox", "config", "demo"):
        assert command in result.stdout


def test_outbox_json_and_verify(tmp_path: Path) -> None:
    with EventStore(tmp_path / "events.db") as store:
        store.append_many([Event(EventType.PACKAGE_SCANNED, {"n": i}) for i in range(7)])
        mark_acked_upto(store, 3)
    result = flexedge("outbox", "--json", "--verify", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["depth"] == 4 and doc["last_acked_seq"] == 3 and doc["last_seq"] == 7
    assert doc["chain"] == {"ok": True, "checked": 7, "first_bad_seq": None, "reason": ""}
    assert doc["oldest_pending_age_s"] >= 0


def test_outbox_verify_fails_on_a_broken_chain(tmp_path: Path) -> None:
    import sqlite3

    with EventStore(tmp_path / "events.db") as store:
        store.append_many([Event(EventType.PACKAGE_SCANNED, {"n": i}) for i in range(3)])
    with sqlite3.connect(tmp_path / "events.db") as conn:
        conn.execute("UPDATE events SET body = replace(body, '\"n\":1', '\"n\":9') WHERE seq = 2")
    result = flexedge("outbox", "--verify", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "BROKEN at seq 2" in result.stdout


def test_data_dir_from_environment(tmp_path: Path) -> None:
    result = flexedge("status", "--json", env={"FLEXEDGE_DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data_dir"] == str(tmp_path / "d")
    assert (tmp_path / "d" / "events.db").exists()


def test_status_tells_a_low_disk(small_fs: Path) -> None:
    result = flexedge("status", "--json", env={"FLEXEDGE_DATA_DIR": str(small_fs)})
    assert result.returncode == 0, result.stderr
    disk = json.loads(result.stdout)["disk"]
    assert disk["condition"] == "low" and 0 < disk["free_mb"] < 1.1  # a 1 MiB disk is under the 200 MiB floor
    result = flexedge("status", env={"FLEXEDGE_DATA_DIR": str(small_fs)})
    assert "MB free (low; low below 200 MiB)" in result.stdout


def test_config_validate_names_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nretention_dayz = 3\n')
    result = flexedge("config", "--validate", "--config", str(bad))
    assert result.returncode == 2
    assert "store.retention_dayz" in result.stderr and "bad.toml" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text('[store]\nretention_days = 3\n')
    assert flexedge("config", "--validate", "--config", str(good)).returncode == 0
    result = flexedge("status", env={"FLEXEDGE_CONFIG": str(bad), "FLEXEDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
