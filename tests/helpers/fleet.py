"""A test fleet: PKI (CA, broker, cloud, devices), the mosquitto TLS + ACL config, and settings builders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud_sync.connection import BrokerSettings
from cloud_sync.pki import CLOUD_IDENTITY, Pki, acl_text, mosquitto_tls_config
from cloud_sync.signing import Signer, Verifier

FLEET = "test"
STATION = "DXX1"
OTHER_STATION = "DYY2"


@dataclass(frozen=True)
class FleetPki:
    pki: Pki
    devices: tuple[str, ...]
    acl_path: Path

    @classmethod
    def create(cls, directory: Path, devices: tuple[str, ...]) -> FleetPki:
        pki = Pki(directory)
        pki.init("Flex Edge test fleet")
        pki.issue_broker()
        pki.issue(CLOUD_IDENTITY)
        for device in devices:
            pki.issue(device)
        acl = directory / "acl"
        acl.write_text(acl_text(FLEET, {d: STATION for d in devices}))
        return cls(pki, devices, acl)

    def mosquitto_config(self) -> str:
        return mosquitto_tls_config(self.pki, self.acl_path)  # MosquittoBroker runs it as the invoking user

    def broker_settings(self, identity: str, port: int) -> BrokerSettings:
        issued = self.pki.client(identity)
        return BrokerSettings("127.0.0.1", port, str(self.pki.ca_cert), str(issued.cert_path), str(issued.key_path),
                              keepalive_s=10, connect_timeout_s=5)

    @property
    def signer(self) -> Signer:
        return Signer.from_pem_file(self.pki.signing_key)

    @property
    def verifier(self) -> Verifier:
        return Verifier.from_pem_files(self.pki.signing_pub)
