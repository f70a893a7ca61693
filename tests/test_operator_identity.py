"""Operator runs at once (`flexedge cloud command`, as the operator types it) against the real TLS mosquitto, whose
client id is the certificate's CN: a run that connects with a client id another connection holds takes its session
over (the collision every run had with the single `cloud` identity); with leased operator identities, runs at once
each get their own and disconnect nobody; with every identity taken, a run says so and exits 1."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from cloud_sync.cloud.operator_identity import operator_identity
from cloud_sync.pki import OPERATOR_SLOTS, operator_client_ids
from device.testbench.broker import MosquittoBroker
from tests.helpers.fleet import FLEET, REPO, FleetPki
from tests.helpers.sync_harness import RawClient, wait_until

NOBODY = "van-nobody"  # no such van: the commands sent here reach no one
IDS = operator_client_ids("cloud")


def _argv(fleet: FleetPki, port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "device.cli", "cloud", "command", NOBODY, "selftest", "--pki", str(fleet.pki.dir),
            "--broker", f"127.0.0.1:{port}", "--fleet", FLEET, "--json", *options]


def _run(fleet: FleetPki, port: int, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(fleet, port, *options), cwd=REPO, capture_output=True, text=True, timeout=90)


class Watched:
    """A connection held as `client_id`, recording each disconnect the broker gives it."""

    def __init__(self, fleet: FleetPki, port: int, client_id: str) -> None:
        self.raw = RawClient(fleet.broker_settings(client_id, port), client_id)
        self.disconnects: list[str] = []
        self._lock = threading.Lock()
        self.raw.client.on_disconnect = self._on_disconnect

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self.disconnects.append(str(reason))


def test_runs_at_once_each_lease_their_own_identity_and_disconnect_nobody(
        tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> None:
    port = tls_broker.port
    # The collision: a run connecting with a client id that is connected elsewhere takes that session over.
    watched = Watched(fleet, port, IDS[0])
    with watched.raw:
        done = _run(fleet, port, "--client-id", IDS[0])
        assert done.returncode == 0, done.stderr
        wait_until(lambda: watched.disconnects, 10, "the held connection taken over")  # mosquitto 2.0.11 closes it

    # Leased: another run on this machine holds the first identity and is connected with it.
    with operator_identity(fleet.pki) as held_id:
        assert held_id == IDS[0]
        watched = Watched(fleet, port, held_id)
        with watched.raw:
            done = _run(fleet, port)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["command"]["client_id"] == IDS[1]
            # Two more at once, each waiting for a result that never comes (holding its identity meanwhile).
            waiting = [subprocess.Popen(_argv(fleet, port, "--db", str(tmp_path / "none.db"), "--timeout", "6"),
                                        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                       for _ in range(2)]
            outputs = [proc.communicate(timeout=90) for proc in waiting]
            assert [proc.returncode for proc in waiting] == [1, 1], outputs  # 1: no result in time
            answers = [json.loads(out) for out, _ in outputs]
            assert all(a["status"] == "timeout" for a in answers)
            assert sorted(a["command"]["client_id"] for a in answers) == [IDS[1], IDS[2]]
            assert watched.raw.client.is_connected() and watched.disconnects == []

    # Every identity taken: the run says so, sends nothing.
    with contextlib.ExitStack() as stack:
        assert [stack.enter_context(operator_identity(fleet.pki)) for _ in range(OPERATOR_SLOTS)] == list(IDS)
        done = _run(fleet, port)
    assert done.returncode == 1
    assert f"all {OPERATOR_SLOTS} operator identities cloud-op-0..{OPERATOR_SLOTS - 1} are in use" in done.stderr


def test_withdraw_block_is_refused_from_the_command_line(fleet: FleetPki, tmp_path: Path) -> None:
    """A re-offer frees the block in the cloud and tells the van; withdraw_block alone would leave them apart."""
    argv = [sys.executable, "-m", "device.cli", "cloud", "command", NOBODY, "withdraw_block", "block=B1",
            "--pki", str(fleet.pki.dir), "--broker", "127.0.0.1:1", "--fleet", FLEET]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "re-offer" in result.stderr, result.stderr
