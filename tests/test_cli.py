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
    (tmp_path / "d").mkdir()
    EventStore(tmp_path / "d" / "events.db").close()
    result = flexedge("status", "--json", env={"FLEXEDGE_DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["data_dir"] == str(tmp_path / "d")
    assert doc["photos"] == {"pending": 0, "pending_bytes": 0, "uploaded": 0, "on_disk": 0, "on_disk_bytes": 0}


def test_status_tells_a_low_disk(small_fs: Path) -> None:
    EventStore(small_fs / "events.db").close()
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


def test_cloud_photos_lists_each_stored_photo(tmp_path: Path) -> None:
    import hashlib

    import orjson

    from cloud_sync.cloud import CloudDb
    from cloud_sync.messages import EventBatch, PhotoChunk

    photo = b"\xff\xd8 proof of delivery"
    sha = hashlib.sha256(photo).hexdigest()
    with EventStore(tmp_path / "events.db") as store:
        stored = store.append(Event(EventType.PHOTO_CHECKED, {"photo_id": "P1", "sha256": "ee" * 32,
                                                              "upload_sha256": sha}, block="B-1", stop="S2"))
    db = CloudDb(tmp_path / "cloud.db")
    db.ingest("van-a", EventBatch("b1", "van-a", 0, 1, (orjson.loads(stored.body) | {"hash": stored.hash},)))
    db.store_photo_chunk("van-a", PhotoChunk("c1", "P1", 0, 1, sha, photo))
    db.close()
    result = flexedge("cloud", "photos", "--db", str(tmp_path / "cloud.db"), "--json")
    assert result.returncode == 0, result.stderr
    row, = [json.loads(line) for line in result.stdout.splitlines()]
    assert {k: row[k] for k in ("photo_id", "device", "event_id", "sha256", "bytes", "status")} == {
        "photo_id": "P1", "device": "van-a", "event_id": stored.id, "sha256": sha, "bytes": len(photo),
        "status": "ok"}
    assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == sha
    human = flexedge("cloud", "photos", "--db", str(tmp_path / "cloud.db"))
    assert "P1  van-a" in human.stdout and "1 photos, 0 not ok" in human.stdout


def test_selftest_help_says_which_gpsd_it_checks() -> None:
    """Measured: the help said gpsd is skipped when --gpsd is not given, while it checked 127.0.0.1:2947."""
    text = " ".join(flexedge("selftest", "--help").stdout.split())
    assert "skipped when not given" not in text and "the config's gpsd_host:gpsd_port" in text


def test_every_command_tells_its_version() -> None:
    for command in (["status"], ["config"], ["run"], ["pki", "init"], ["console", "pair"], ["selftest"]):
        result = flexedge(*command, "--version")
        assert result.returncode == 0 and result.stdout.startswith("flexedge "), (command, result.stderr)


def test_journald_gets_each_line_s_priority() -> None:
    """Under systemd (JOURNAL_STREAM), `<N>` before each line lets `journalctl -p warning` filter."""
    code = ("import logging; from device.logsetup import setup_logging; setup_logging('DEBUG'); "
            "log = logging.getLogger('t'); log.debug('d'); log.info('i'); log.warning('w'); log.error('e')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "JOURNAL_STREAM": "8:12345"})
    assert [line[:3] for line in result.stderr.splitlines()] == ["<7>", "<6>", "<4>", "<3>"]
    assert json.loads(result.stderr.splitlines()[2][3:])["msg"] == "w"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"})
    assert result.stderr.startswith("{")


def test_a_read_only_or_missing_data_dir_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Measured: `outbox --data-dir /proc/x` and a read-only data dir ended in tracebacks."""
    result = flexedge("outbox", "--data-dir", "/proc/x")
    assert result.returncode == 5 and result.stderr.count("\n") == 1 and "/proc/x" in result.stderr
    data = tmp_path / "ro"
    data.mkdir()
    with EventStore(data / "events.db") as store:
        store.append(Event(EventType.PACKAGE_SCANNED, {"n": 1}))
    subprocess.run(["mount", "--bind", "-o", "ro", str(data), str(data)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(data)], check=True)
        for command in (["outbox"], ["outbox", "--prune"], ["status"], ["console", "pair"]):
            result = flexedge(*command, "--data-dir", str(data))
            assert "Traceback" not in result.stderr, result.stderr
            assert result.returncode in (0, 5) and result.stderr.count("\n") <= 1, (command, result.stderr)
            assert "corrupt" not in result.stderr  # a store it cannot write is not a corrupt store
    finally:
        subprocess.run(["umount", str(data)], check=True)

