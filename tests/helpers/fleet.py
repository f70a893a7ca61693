"""The test fleet: `device.testbench.fleet.LocalFleet` with the tests' fleet and stations."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cloud_sync.connection import BrokerSettings
from device.testbench.fleet import LocalFleet

FLEET = "test"
STATION = "DXX1"
OTHER_STATION = "DYY2"
CLI_CLOUD_PREFIX = "cloud-cli"


class FleetPki(LocalFleet):
    @classmethod
    def create(cls, directory: Path, devices: tuple[str, ...],  # type: ignore[override]
               stations: dict[str, str] | None = None) -> FleetPki:
        """Every device at STATION unless `stations` says otherwise; cloud certificates for the in-process
        cloud (prefix `cloud`) and the `flexedge cloud` program the tests start (`cloud-cli`)."""
        return super().create(directory, FLEET, {d: STATION for d in devices} | (stations or {}),
                              "Flex Edge test fleet", cloud_prefixes=("cloud", CLI_CLOUD_PREFIX))

    def broker_settings(self, identity: str, port: int, **options: Any) -> BrokerSettings:
        return super().broker_settings(identity, port, **({"keepalive_s": 10, "connect_timeout_s": 5} | options))
