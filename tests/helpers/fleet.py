"""The test fleet: `device.testbench.fleet.LocalFleet` with the tests' fleet and stations."""
from __future__ import annotations

from pathlib import Path

from cloud_sync.connection import BrokerSettings
from device.testbench.fleet import LocalFleet

FLEET = "test"
STATION = "DXX1"
OTHER_STATION = "DYY2"


class FleetPki(LocalFleet):
    @classmethod
    def create(cls, directory: Path, devices: tuple[str, ...]) -> FleetPki:  # type: ignore[override]
        return super().create(directory, FLEET, {d: STATION for d in devices}, "Flex Edge test fleet")

    def broker_settings(self, identity: str, port: int) -> BrokerSettings:  # type: ignore[override]
        return super().broker_settings(identity, port, keepalive_s=10, connect_timeout_s=5)
