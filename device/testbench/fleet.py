"""A local fleet for the demo, the benches and the tests: CA, broker/cloud/device certificates, the ACL,
the mosquitto TLS lines and client settings, made with the same code a technician uses (`flexedge pki`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cloud_sync.connection import BrokerSettings
from cloud_sync.pki import CLOUD_IDENTITY, Pki, acl_text, mosquitto_tls_config
from cloud_sync.signing import Signer, Verifier


@dataclass(frozen=True)
class LocalFleet:
    pki: Pki
    fleet: str
    devices: tuple[str, ...]
    acl_path: Path

    @classmethod
    def create(cls, directory: Path, fleet: str, stations: Mapping[str, str],
               ca_name: str = "Flex Edge fleet") -> LocalFleet:
        """`stations`: device id -> its station. An existing CA in `directory` is kept."""
        pki = Pki(directory)
        if not pki.ca_cert.exists():
            pki.init(ca_name)
        pki.issue_broker(replace=True)
        pki.issue(CLOUD_IDENTITY, replace=True)
        for device in stations:
            pki.issue(device, replace=True)
        pki.write_crl()  # the broker checks client certificates against it, as a provisioned one does
        acl = directory / "acl"
        acl.write_text(acl_text(fleet, dict(stations)))
        return cls(pki, fleet, tuple(stations), acl)

    def mosquitto_config(self) -> str:
        """Lines for MosquittoBroker(extra_config=...): mutual TLS, identity = CN, the ACL."""
        return mosquitto_tls_config(self.pki, self.acl_path)

    def broker_settings(self, identity: str, port: int, **options: Any) -> BrokerSettings:
        issued = self.pki.client(identity)
        return BrokerSettings("127.0.0.1", port, str(self.pki.ca_cert), str(issued.cert_path), str(issued.key_path),
                              **options)

    @property
    def signer(self) -> Signer:
        return Signer.from_pem_file(self.pki.signing_key)

    @property
    def verifier(self) -> Verifier:
        return Verifier.from_pem_files(self.pki.signing_pub)
