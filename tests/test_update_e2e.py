"""Over-the-air updates end to end, with real processes: the TLS mosquitto, a real `flexedge cloud`, releases built
by `flexedge cloud release build` (the project wheel and the wheels of the lock, signed), each installed into its own
venv and run from it by the unit's own commands (tests/helpers/unit.py: ExecStartPre guard and validate, ExecStart,
Restart=always), rolled out by `flexedge cloud release publish` as the operator types it.

The releases: 0.1.0 is the installer's (this checkout as it is), 0.2.0 a good one, 0.3.0 crashes at start, 0.4.0
starts but cannot reach the cloud (both faults are code changes in a copy of the source tree, no config or
environment). Each is a real release, really installed and started from its own venv.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from cloud_sync.cloud.commands import new_command, signed_payload
from cloud_sync.pki import operator_client_ids
from cloud_sync.topics import FleetTopics
from device import __version__
from device.contract.release import MANIFEST_NAME, Manifest
from device.paths import store_path
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from device.update.install import install
from tests.helpers.fleet import FLEET, REPO, FleetPki, cloud_program, device_config
from tests.helpers.sync_harness import RawClient, assert_cloud_holds_exactly, wait_until
from tests.helpers.unit import UnitSupervisor

DEVICE = "van-ota"
NEVER_REACHED = "van-ota-2"  # after the canary in the bad rollout: must not get the command
GATE_S = 10  # [update] gate_s: how long a new release has to bring its cloud link up
MAX_STARTS = 3
FAULTS = {  # version -> (file, text, replacement): code changes only
    "0.3.0": ("device/cli/run.py", "def run(args: argparse.Namespace) -> int:\n",
              "def run(args: argparse.Namespace) -> int:\n    raise RuntimeError('injected: crashes at start')\n"),
    "0.4.0": ("device/cloud_adapter.py", "BrokerSettings(mqtt.host, mqtt.port,", "BrokerSettings(mqtt.host, 1,"),
}


def _source(tmp: Path, version: str) -> Path:
    """A copy of this checkout's tracked files with another version (and, for the bad ones, a fault)."""
    tree = tmp / f"src-{version}"
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file() and not name.startswith(("tests/", "bench/")):
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    init = tree / "device" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', f'__version__ = "{version}"'))
    if version in FAULTS:
        name, text, fault = FAULTS[version]
        code = (tree / name).read_text()
        assert text in code
        (tree / name).write_text(code.replace(text, fault))
    return tree


def _flexedge(*argv: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "device.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.fixture(scope="module")
def built(fleet: FleetPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The four releases, built by the real command into one release store; the dependency wheels are downloaded
    once (the first build) and taken from the cache by the others."""
    tmp = tmp_path_factory.mktemp("releases-built")
    store, cache, out = tmp / "store", tmp / "cache", {}
    for version in (__version__, "0.2.0", "0.3.0", "0.4.0"):
        first = not out
        done = _flexedge("cloud", "release", "build", "--source", str(_source(tmp, version)), "--pki",
                         str(fleet.pki.dir), "--store", str(store), "--cache", str(cache), "--json",
                         *(() if first else ("--no-download",)))
        assert done.returncode == 0, done.stderr
        out[version] = json.loads(done.stdout)
    print("\nrelease builds (s):", {v: round(sum(b["seconds"].values()), 1) for v, b in out.items()},
          "artifact MB:", round(out["0.2.0"]["bytes"] / 1e6, 1))
    yield {"store": store, "builds": out}


def _install_base(artifact: Path, prefix: Path) -> float:
    """The installer's release (what systemd/install.sh puts in /opt/flexedge), from the base artifact's files."""
    with tarfile.open(artifact) as tar:
        tar.extractall(prefix, filter="data")
    manifest = Manifest.from_body(json.loads((prefix / MANIFEST_NAME).read_text())["body"])
    started = time.monotonic()
    import asyncio

    asyncio.run(install(prefix, manifest))
    return time.monotonic() - started


def _events(db: Path, kind: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT body FROM events WHERE device = ? AND type = ? ORDER BY seq", (DEVICE, kind))
        return [json.loads(body) for (body,) in rows]
    finally:
        conn.close()


def _status(db: Path) -> dict[str, Any]:
    """The van's retained status as the cloud holds it (state, version, ...)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT status FROM devices WHERE device = ?", (DEVICE,)).fetchone()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return dict(json.loads(row[0])) if row and row[0] else {}


def _online(db: Path, version: str) -> bool:
    status = _status(db)
    return status.get("state") == "online" and status.get("version") == version


@pytest.mark.timeout(900)  # ~4.5 min here: four release builds, four venv installs, eleven agent starts
def test_updates_switch_roll_back_by_themselves_and_lose_nothing(
        tls_broker: MosquittoBroker, fleet: FleetPki, built: dict[str, Any], tmp_path: Path) -> None:
    store = built["store"]
    releases, prefix = tmp_path / "releases", tmp_path / "opt"
    base_install_s = _install_base(Path(built["builds"][__version__]["artifact"]), prefix)
    done = subprocess.run([str(prefix / "venv/bin/flexedge"), "update", "init", "--releases", str(releases),
                           "--base", str(prefix)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = device_config(tmp_path, fleet, tls_broker.port, DEVICE, f"""status_interval_s = 5
[logging]
level = "INFO"
[gps]
enabled = false
[update]
releases_dir = "{releases}"
gate_s = {GATE_S}
max_starts = {MAX_STARTS}
""")

    def publish(version: str, *devices: str) -> tuple[int, dict[str, Any]]:
        done = _flexedge("cloud", "release", "publish", "--version", version, "--devices", ",".join(devices),
                         "--pki", str(fleet.pki.dir), "--store", str(store), "--db", str(db_path), "--serve",
                         "127.0.0.1:0", "--broker", f"127.0.0.1:{tls_broker.port}", "--fleet-name", FLEET,
                         "--timeout", "240", "--json", timeout_s=400)
        assert done.stdout, done.stderr
        report = json.loads(done.stdout)
        # the operator identity it leased, said on stderr before the rollout and in the report
        assert report["client_id"] == operator_client_ids("cloud")[0], report
        assert f"publishing as operator identity {report['client_id']}" in done.stderr
        return done.returncode, report

    def current() -> str:
        return os.readlink(releases / "current")

    with cloud_program(tmp_path, fleet, tls_broker.port) as db_path:
        unit = UnitSupervisor(config, tmp_path / "agent.log", installed=prefix, releases=releases).start()
        try:
            wait_until(lambda: _online(db_path, __version__), 60, "the van online on the installer's release")

            # A good release: downloaded, verified, installed in its own venv, switched, gate passed, reported.
            code, report = publish("0.2.0", DEVICE)
            assert (code, report["ok"]) == (0, True), report
            (result,) = report["results"]
            assert (result["status"], result["detail"]) == ("ok", "running 0.2.0")
            good_switch_s = report["seconds"]
            assert current() == "0.2.0" and os.readlink(releases / "previous") == str(prefix)
            assert unit.exits == [0]  # the clean restart into the new release
            assert [e["data"]["version"] for e in _events(db_path, "update.applied")] == ["0.2.0"]
            assert (releases / "0.2.0" / "venv" / "bin" / "flexedge").exists()
            assert not (releases / "0.2.0" / "wheelhouse").exists()  # installed: the wheels are not kept
            wait_until(lambda: _online(db_path, "0.2.0"), 60, "the van online on 0.2.0")

            # A release that crashes at start: the unit's guard puts 0.2.0 back after MAX_STARTS starts; the
            # rollout stopped at the canary, the second van never got the command.
            code, report = publish("0.3.0", DEVICE, NEVER_REACHED)
            assert (code, report["ok"]) == (1, False), report
            (result,) = report["results"]
            assert result["status"] == "failed", result
            assert result["detail"] == \
                f"rolled back to 0.2.0: started {MAX_STARTS} times without passing its health gate"
            assert report["not_reached"] == [NEVER_REACHED] and report["stopped"].startswith("wave 0")
            crash_exits = unit.exits[1:]
            assert crash_exits[0] == 0 and crash_exits[1:1 + MAX_STARTS] == [1] * MAX_STARTS, unit.exits
            assert current() == "0.2.0"
            wait_until(lambda: _online(db_path, "0.2.0"), 60, "the van online on 0.2.0 again")

            # A release that starts but cannot reach the cloud: its own gate puts 0.2.0 back after GATE_S.
            exits_before = len(unit.exits)
            code, report = publish("0.4.0", DEVICE)
            assert code == 1, report
            (result,) = report["results"]
            assert result["status"] == "failed"
            assert result["detail"] == f"rolled back to 0.2.0: the cloud link is not up within {GATE_S} s"
            assert unit.exits[exits_before:exits_before + 2] == [0, 0]  # into 0.4.0, back out of it
            assert current() == "0.2.0"
            rolled = [e["data"] for e in _events(db_path, "update.rolled_back")]
            assert [r["version"] for r in rolled] == ["0.3.0", "0.4.0"]
            wait_until(lambda: _online(db_path, "0.2.0"), 60, "the van online on 0.2.0 once more")

            # An older release is refused (the rollout reports it); a replayed command does nothing.
            code, report = publish(__version__, DEVICE)
            (result,) = report["results"]
            assert (code, result["status"]) == (1, "rejected")
            assert "does not move forward from 0.2.0" in result["detail"]
            again = new_command(DEVICE, "update", {"version": "0.2.0", "url": "https://127.0.0.1:1/x",
                                                   "sha256": "0" * 64, "size": 1})
            marker = new_command(DEVICE, "launch_rockets", {})
            topic = FleetTopics(FLEET).device(DEVICE).cmd
            with RawClient(fleet.broker_settings("cloud", tls_broker.port), "cloud") as raw:
                for command in (again, again, marker):
                    raw.publish(topic, signed_payload(fleet.signer, command))
                wait_until(lambda: any(e["data"]["id"] == marker.id for e in _events(db_path, "command.result")),
                           60, "the marker command's result")
            answers = [e["data"] for e in _events(db_path, "command.result") if e["data"]["id"] == again.id]
            assert len(answers) == 1 and answers[0]["status"] == "rejected"
            assert current() == "0.2.0"
            done = subprocess.run([str(prefix / "venv/bin/flexedge"), "update", "status", "--releases", str(releases),
                                   "--json"], capture_output=True, text=True, timeout=60)
            status = json.loads(done.stdout)
            assert (status["current"], status["previous"], status["pending"]) == ("0.2.0", str(prefix), None)
            assert status["outcome"]["version"] == "0.4.0" and status["outcome"]["result"] == "rolled_back"
        finally:
            unit.stop()
        wait_until(lambda: _status(db_path).get("state") == "stopped", 30, "the van stopped")
        with EventStore(store_path(tmp_path / "data")) as van_store:
            assert van_store.stats().depth == 0
            produced = [e["id"] for e in van_store.events(limit=1_000_000)]
        stopped = _events(db_path, "agent.stopped")
    # Every event the van produced, across eight starts of the unit under four releases, is in the cloud once.
    assert_cloud_holds_exactly(db_path, DEVICE, produced)
    assert stopped[-1]["data"]["sync"]["rejected"] == {"replay": 1}
    print(f"\nbase install {base_install_s:.1f} s; good update (download, verify, install, switch, gate) "
          f"{good_switch_s:.1f} s; events {len(produced)}; unit exits {unit.exits}")
