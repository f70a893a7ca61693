"""Remote commands end to end, with real processes: the TLS mosquitto, a real `flexedge cloud`, the agent
(`flexedge run`) supervised as its unit does it (tests/helpers/unit.py), and `flexedge cloud command` as the
operator types it. Each command answers with a `command.result` the cloud stores; a replayed, expired or foreign
command does nothing and is counted; a config that cuts the van off its broker undoes itself; across every
restart nothing is lost from the outbox."""
from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import sys
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cloud_sync.cloud import CloudDb
from cloud_sync.cloud.commands import new_command, signed_payload
from cloud_sync.messages import Command
from cloud_sync.topics import FleetTopics
from device.paths import store_path
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from device.testbench.procs import free_tcp_port
from tests.helpers.fleet import FLEET, REPO, FleetPki, cloud_program, device_config
from tests.helpers.gpsd_peer import HeldGpsd
from tests.helpers.sync_harness import RawClient, assert_cloud_holds_exactly, wait_until
from tests.helpers.unit import UnitSupervisor

DEVICE = "van-cmd"
CONFIRM_S = 8  # [commands] config_confirm_s: how long a new config has to bring the link up


def _config(tmp_path: Path, fleet: FleetPki, port: int, gps: str = "enabled = false", commands: str = "") -> Path:
    return device_config(tmp_path, fleet, port, DEVICE, f"""status_interval_s = 5
[logging]
level = "INFO"
file = "agent.log"
[gps]
{gps}
[commands]
config_confirm_s = {CONFIRM_S}
{commands}
""")


def _operator_argv(fleet: FleetPki, port: int, db: Path, *argv: str, timeout_s: float) -> list[str]:
    return [sys.executable, "-m", "device.cli", "cloud", "command", DEVICE, *argv, "--pki", str(fleet.pki.dir),
            "--db", str(db), "--broker", f"127.0.0.1:{port}", "--fleet", FLEET, "--timeout", str(timeout_s), "--json"]


def _operator(fleet: FleetPki, port: int, db: Path, *argv: str, timeout_s: float = 90) -> tuple[int, dict[str, Any]]:
    """`flexedge cloud command van-cmd ...` as the operator runs it; (exit code, its JSON)."""
    done = subprocess.run(_operator_argv(fleet, port, db, *argv, timeout_s=timeout_s),
                          cwd=REPO, capture_output=True, text=True, timeout=timeout_s + 30)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _presence(db: CloudDb) -> str | None:
    status = {row["device"]: row["status"] for row in db.device_view()}.get(DEVICE)
    return status["state"] if status else None


def _results(db: CloudDb) -> list[dict[str, Any]]:
    rows = db._read("SELECT body FROM events WHERE device = ? AND type = 'command.result' ORDER BY seq", (DEVICE,))
    return [json.loads(body)["data"] for (body,) in rows]


def _events_of(db: CloudDb, kind: str) -> list[dict[str, Any]]:
    rows = db._read("SELECT body FROM events WHERE device = ? AND type = ? ORDER BY seq", (DEVICE, kind))
    return [json.loads(body) for (body,) in rows]


def test_remote_commands_act_answer_once_and_undo_a_config_that_cuts_the_van_off(
        tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    config = _config(tmp_path, fleet, tls_broker.port)
    original = config.read_bytes()
    me = FleetTopics(FLEET).device(DEVICE)
    with cloud_program(tmp_path, fleet, tls_broker.port) as db_path:
        db = CloudDb(db_path)
        unit = UnitSupervisor(config, tmp_path / "agent.stderr").start()
        try:
            wait_until(lambda: _presence(db) == "online", 60, "the van online")

            # selftest: the technician's checks, run inside the agent, every check in the result.
            code, answer = _operator(fleet, tls_broker.port, db_path, "selftest")
            assert (code, answer["status"]) == (0, "ok"), answer
            checks = {c["name"]: c["status"] for c in answer["data"]["checks"]}
            assert checks["config"] == "pass" and checks["store"] == "pass" and checks["broker"] == "pass"

            # upload_logs: the log since 10 minutes ago, gzip, up through the chunk path, checked by the cloud.
            code, answer = _operator(fleet, tls_broker.port, db_path, "upload_logs", "since_s=600")
            assert (code, answer["status"]) == (0, "ok"), answer
            blob = answer["data"]
            wait_until(lambda: any(r["photo_id"] == blob["blob_id"] and r["status"] == "ok"
                                   for r in db.photo_rows(DEVICE)), 30, "the log blob in the cloud")
            row = next(r for r in db.photo_rows(DEVICE) if r["photo_id"] == blob["blob_id"])
            assert (row["sha256"], row["bytes"]) == (blob["sha256"], blob["size"])
            logged = gzip.decompress(Path(row["path"]).read_bytes()).decode()
            assert len(logged.splitlines()) == blob["lines"] > 0 and "selftest" in logged

            # An unknown name is answered, not run.
            code, answer = _operator(fleet, tls_broker.port, db_path, "launch_rockets")
            assert (code, answer["status"], answer["detail"]) == (1, "rejected", "unknown command")

            # restart: answered first, then a clean exit the unit restarts on.
            code, answer = _operator(fleet, tls_broker.port, db_path, "restart")
            assert (code, answer["status"]) == (0, "ok")
            assert unit.wait_exits(1, 30) == [0]
            wait_until(lambda: _presence(db) == "online", 60, "the van back after the restart")

            # set_config that points the van at a dead port: applied, link down, rolled back, van back online.
            dead = free_tcp_port()
            code, answer = _operator(fleet, tls_broker.port, db_path, "set_config", f"mqtt.port={dead}")
            assert (code, answer["status"]) == (1, "failed"), answer
            assert answer["detail"].startswith("rolled back") and answer["data"]["rolled_back"] is True
            assert answer["data"]["changed"] == ["mqtt.port"]
            assert config.read_bytes() == original
            assert tomllib.loads((tmp_path / "flexedge.toml.rejected").read_text())["mqtt"]["port"] == dead
            assert unit.wait_exits(3, 30)[1:] == [0, 0]  # the restart to apply it, the restart after the rollback
            wait_until(lambda: _presence(db) == "online", 60, "the van reconnected on its previous config")

            # set_config the agent crashes on (its console's port is taken): after [commands] config_max_starts
            # starts, `flexedge run` puts the previous config back before assembling, and the van answers from it.
            with socket.socket() as busy:
                busy.bind(("127.0.0.1", 0))
                busy.listen()
                code, answer = _operator(fleet, tls_broker.port, db_path, "set_config", "console.enabled=true",
                                         f"console.port={busy.getsockname()[1]}")
            assert (code, answer["status"]) == (1, "failed"), answer
            assert "started 3 times with it" in answer["detail"] and answer["data"]["rolled_back"] is True
            assert config.read_bytes() == original
            assert unit.exits[3:] == [0, 1, 1, 1]  # the restart to apply it, three starts that failed
            wait_until(lambda: _presence(db) == "online", 60, "the van on its previous config again")

            # A bad value never touches the file; a good one is applied once the link is back.
            code, answer = _operator(fleet, tls_broker.port, db_path, "set_config", "sync.status_interval_s=-4")
            assert (code, answer["status"], answer["data"]["key"]) == (1, "rejected", "sync.status_interval_s")
            assert config.read_bytes() == original
            code, answer = _operator(fleet, tls_broker.port, db_path, "--json-args",
                                     '{"sync": {"status_interval_s": 7}}', "set_config")
            assert (code, answer["status"]) == (0, "ok"), answer
            assert answer["data"]["applied"] is True
            assert tomllib.loads(config.read_text())["sync"]["status_interval_s"] == 7
            assert (tmp_path / "flexedge.toml.previous").read_bytes() == original
            assert unit.wait_exits(8, 30)[7] == 0
            wait_until(lambda: _presence(db) == "online", 60, "the van on its new config")

            # Replays, an expired command and another van's: nothing happens, each is counted.
            future = datetime.now(timezone.utc) + timedelta(minutes=5)
            restart = new_command(DEVICE, "restart", {})
            selftest = new_command(DEVICE, "selftest", {})
            expired = Command("expired-1", DEVICE, "restart", {}, datetime.now(timezone.utc) - timedelta(seconds=1))
            foreign = Command("foreign-1", "van-a", "restart", {}, future)
            marker = new_command(DEVICE, "launch_rockets", {})
            with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud") as raw:
                raw.publish(me.cmd, signed_payload(fleet.signer, restart))
                wait_until(lambda: any(r["id"] == restart.id for r in _results(db)), 30, "the restart's result")
                assert unit.wait_exits(9, 30)[8] == 0
                wait_until(lambda: _presence(db) == "online", 60, "the van back after the second restart")
                for command in (restart, selftest, selftest, expired, foreign, marker):  # in order on one topic
                    raw.publish(me.cmd, signed_payload(fleet.signer, command))
                wait_until(lambda: any(r["id"] == marker.id for r in _results(db)), 60, "the last command's result")
            assert unit.exits == [0, 0, 0, 0, 1, 1, 1, 0, 0]  # the replayed restart did not restart the van again
        finally:
            unit.stop()
        assert unit.exits[-1] == 0 and len(unit.exits) == 10
        wait_until(lambda: _presence(db) == "stopped", 30, "the van stopped")
        with EventStore(store_path(tmp_path / "data")) as store:
            assert store.stats().depth == 0
            produced = [e["id"] for e in store.events(limit=1_000_000)]
        results = _results(db)
        stopped = _events_of(db, "agent.stopped")
        starts = _events_of(db, "agent.started")
        db.close()
    # Every event the van produced is in the cloud exactly once, across seven runs of the agent (and three starts
    # that failed before the agent ran).
    assert_cloud_holds_exactly(db_path, DEVICE, produced)
    assert len(starts) == 7 and len(stopped) == 7
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)) == 11  # one answer per command, replays included
    assert expired.id not in ids and foreign.id not in ids
    last = stopped[-1]["data"]
    assert last["sync"]["rejected"] == {"replay": 2, "expired": 1, "wrong_device": 1}
    assert last["commands"]["ok"] == 1 and last["commands"]["rejected"] == 1


def _logged_running(log: Path, name: str) -> str | None:
    """The id of the command `name` once the agent logged that it runs it."""
    found = re.search(rf"command {name} \((\S+)\) running", log.read_text(errors="replace"))
    return found.group(1) if found else None


def test_a_command_cut_off_by_a_kill_is_answered_by_the_next_start(
        tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    """SIGKILL of `flexedge run` while it runs a selftest (after the command was marked seen, before its result):
    the unit starts it again, the new run runs the selftest again and answers, and the operator's waiting
    `flexedge cloud command` prints that answer; nothing is lost or doubled in the outbox. The selftest cannot
    finish before the kill: its gpsd check waits on a gpsd the test holds."""
    gpsd = HeldGpsd()
    config = _config(tmp_path, fleet, tls_broker.port,
                     f'enabled = true\nsource = "gpsd"\ngpsd_host = "127.0.0.1"\ngpsd_port = {gpsd.port}',
                     "selftest_check_s = 300\nselftest_deadline_s = 600")  # the held gpsd holds until the kill
    log = tmp_path / "agent.stderr"
    with cloud_program(tmp_path, fleet, tls_broker.port) as db_path:
        db = CloudDb(db_path)
        unit = UnitSupervisor(config, log).start()
        try:
            wait_until(lambda: _presence(db) == "online", 60, "the van online")
            operator = subprocess.Popen(_operator_argv(fleet, tls_broker.port, db_path, "selftest", timeout_s=120),
                                        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_until(lambda: _logged_running(log, "selftest") is not None, 60, "the selftest running")
                unit.kill()
                command_id = _logged_running(log, "selftest")
                assert command_id is not None
                assert unit.wait_exits(1, 30) == [-9]
                gpsd.answer()  # the next run's selftest gets its banner
                out, err = operator.communicate(timeout=180)
            finally:
                if operator.poll() is None:
                    operator.kill()
                    operator.wait()
            answer = json.loads(out)
            assert (operator.returncode, answer["id"], answer["status"]) == (0, command_id, "ok"), (answer, err)
            assert answer["detail"].startswith("interrupted by a restart, run again: all checks passed")
            checks = {c["name"]: c["status"] for c in answer["data"]["checks"]}
            assert checks["store"] == checks["gpsd"] == "pass"
        finally:
            gpsd.close()  # first: a selftest still waiting on it would hold the agent's stop
            unit.stop()
        assert unit.exits == [-9, 0]
        wait_until(lambda: _presence(db) == "stopped", 30, "the van stopped")
        with EventStore(store_path(tmp_path / "data")) as store:
            assert store.stats().depth == 0
            produced = [e["id"] for e in store.events(limit=1_000_000)]
            assert store.state.received_commands() == []  # kept until it was answered
        results = _results(db)
        stopped = _events_of(db, "agent.stopped")
        db.close()
    assert_cloud_holds_exactly(db_path, DEVICE, produced)
    assert [r["id"] for r in results] == [command_id]  # answered once
    assert [s["data"]["commands"]["interrupted"] for s in stopped] == [1]  # the killed run wrote no agent.stopped
