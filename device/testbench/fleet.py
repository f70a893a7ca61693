"""A local fleet for the demo, the benches and the tests: CA, broker/cloud/device certificates, the broker's
access config, the mosquitto TLS lines and client settings, made with the same code a technician uses
(`flexedge pki`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from cloud_sync.connection import BrokerSettings
from cloud_sync.pki import CLOUD_IDENTITY, CLOUD_WORKERS, Pki, mosquitto_tls_config
from cloud_sync.signing import Signer, Verifier


@dataclass(frozen=True)
class LocalFleet:
    pki: Pki
    fleet: str
    devices: tuple[str, ...]
    stations: Mapping[str, str]  # device -> station
    security_path: Path

    @classmethod
    def create(cls, directory: Path, fleet: str, stations: Mapping[str, str], ca_name: str = "Flex Edge fleet",
               cloud_prefixes: tuple[str, ...] = (CLOUD_IDENTITY,), cloud_workers: int = CLOUD_WORKERS) -> LocalFleet:
        """`stations`: device id -> its station. An existing CA in `directory` is kept. Each of
        `cloud_prefixes` gets the certificates of a cloud process with up to `cloud_workers` ingest workers."""
        pki = Pki(directory)
        if not pki.ca_cert.exists():
            pki.init(ca_name)
        pki.issue_broker(replace=True)
        cloud_ids = [cn for prefix in cloud_prefixes for cn in pki.issue_cloud(prefix, cloud_workers)]
        for device in stations:
            pki.issue(device, replace=True)
        pki.write_crl()  # the broker checks client certificates against it, as a provisioned one does
        security = pki.write_broker_security(fleet, stations, cloud_ids)
        return cls(pki, fleet, tuple(stations), dict(stations), security)

    def mosquitto_config(self) -> str:
        """Lines for MosquittoBroker(extra_config=...): mutual TLS, identity = CN = client id, access control."""
        return mosquitto_tls_config(self.pki, self.security_path)

    def broker_settings(self, identity: str, port: int, **options: Any) -> BrokerSettings:
        issued = self.pki.client(identity)
        return BrokerSettings("127.0.0.1", port, str(self.pki.ca_cert), str(issued.cert_path), str(issued.key_path),
                              **options)

    def cloud_credentials(self, port: int, **options: Any) -> Callable[[str], BrokerSettings]:
        """For CloudPeer: each cloud connection with the certificate named after its client id."""
        return lambda client_id: self.broker_settings(client_id, port, **options)

    @property
    def signer(self) -> Signer:
        return Signer.from_pem_file(self.pki.signing_key)

    @property
    def verifier(self) -> Verifier:
        return Verifier.from_pem_files(self.pki.signing_pub)
