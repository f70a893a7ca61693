"""The test fleet: `device.testbench.fleet.LocalFleet` with the tests' fleet and stations."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cloud_sync.connection import BrokerSettings
from device.testbench.fleet import LocalFleet

FLEET = "test"
STATION = "DXX1"
OTHER_STATION = "DYY2"
CLI_CLOUD_PREFIX = "cloud-cli"
REPO = Path(__file__).resolve().parents[2]


class FleetPki(LocalFleet):
    @classmethod
    def create(cls, directory: Path, devices: tuple[str, ...],  # type: ignore[override]
               stations: dict[str, str] | None = None) -> FleetPki:
        """Every device at STATION unless `stations` says otherwise; cloud certificates for the in-process
        cloud (prefix `cloud`) and the `flexedge cloud` programs the tests start (`cloud-cli`, `cloud-web`)."""
        return super().create(directory, FLEET, {d: STATION for d in devices} | (stations or {}),
                              "Flex Edge test fleet", cloud_prefixes=("cloud", CLI_CLOUD_PREFIX, "cloud-web"))

    def broker_settings(self, identity: str, port: int, **options: Any) -> BrokerSettings:
        return super().broker_settings(identity, port, **({"keepalive_s": 10, "connect_timeout_s": 5} | options))


def device_config(tmp_path: Path, fleet: FleetPki, port: int, device: str, extra: str = "") -> Path:
    """A unit's flexedge.toml for `flexedge run|sync` against the TLS broker: its certificate, the cloud's key,
    fast acks and backoff. `extra` goes after the `[sync]` lines (more sync keys, then other sections)."""
    issued = fleet.pki.client(device)
    path = tmp_path / "flexedge.toml"
    path.write_text(f"""
data_dir = "{tmp_path / 'data'}"
[device]
id = "{device}"
fleet = "{FLEET}"
station = "{STATION}"
[mqtt]
host = "127.0.0.1"
port = {port}
ca_file = "{fleet.pki.ca_cert}"
cert_file = "{issued.cert_path}"
key_file = "{issued.key_path}"
[sync]
cloud_key_file = "{fleet.pki.signing_pub}"
ack_timeout_s = 3.0
backoff_initial_s = 0.05
backoff_max_s = 0.5
{extra}
""")
    return path


@contextmanager
def cloud_program(tmp_path: Path, fleet: FleetPki, port: int, *options: str) -> Iterator[Path]:
    """A real `flexedge cloud` (the `cloud-cli` identities) on the TLS broker, ready; yields its database path.
    Its log is tmp_path/cloud.log; stopped with SIGTERM (exit 0 expected)."""
    db = tmp_path / "cloud.db"
    with open(tmp_path / "cloud.log", "wb") as log:
        cloud = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "cloud", "--db", str(db), "--fleet", FLEET, "--broker",
             f"127.0.0.1:{port}", "--pki", str(fleet.pki.dir), "--client-prefix", CLI_CLOUD_PREFIX, *options],
            cwd=REPO, stdout=subprocess.PIPE, stderr=log)
        try:
            assert cloud.stdout is not None and json.loads(cloud.stdout.readline())["ready"]
            yield db
        finally:
            cloud.send_signal(signal.SIGTERM)
            code = cloud.wait(30)
            if cloud.stdout is not None:
                cloud.stdout.close()
    assert code == 0, (tmp_path / "cloud.log").read_text()[-2000:]
