"""Provisioning: a fleet CA, the broker's server certificate, per-device client certificates (CN = device id),
the cloud's Ed25519 signing key, and the mosquitto TLS + access config that goes with them.

The test fixture and a technician (`flexedge pki ...`) use the same functions. Layout of a PKI directory:
`ca.crt/ca.key`, `broker.crt/.key`, `<cn>.crt/.key` per client, `signing.key/signing.pub`, the broker's
`dynamic-security.json` and `stations.json` (device -> station: the broker's offers access and the cloud's
claim check read the same map).

The broker binds every client to its certificate: username = CN (`use_identity_as_username`) and client id =
username (`use_username_as_clientid`), so nobody can take over another client's session. Hence each cloud
connection has a certificate of its own (CN = its client id, `cloud_client_ids`), and so has each operator
command-line run that may run at once (`operator_client_ids`: a run leases one,
cloud_sync/cloud/operator_identity.py). Access is mosquitto's
dynamic-security plugin, whose subscribe ACLs are checked at SUBSCRIBE (the plain ACL file checks reads only at
delivery, so a device's `$share/...` subscription would silently take a share of other devices' messages):
a device may subscribe to its own inbound topics and its station's offers and nothing else.
Renewal keeps a unit's key (`renew`); revocation (`revoke`) lists serials in `revoked.json` and writes
`crl.pem`, the CRL the broker loads.
"""
from __future__ import annotations

import datetime as dt
import glob
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud_sync.errors import PkiError
from cloud_sync.keyfiles import write_private
from cloud_sync.signing import Signer, write_signing_key
from cloud_sync.topics import FleetTopics
from device.contract.files import write_atomically

CLOUD_IDENTITY = "cloud"  # the operator's tools; also the default prefix of the cloud workers' identities
CLOUD_WORKERS = 4  # ingest worker certificates made per cloud prefix by default
OPERATOR_SLOTS = 4  # operator runs (`flexedge cloud command`, `cloud release publish`) at once per cloud prefix
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
DYNSEC_PLUGIN_DIRS = ("/usr/lib/*", "/usr/lib", "/usr/local/lib", "/usr/local/lib/*")  # Debian: /usr/lib/<arch>
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 825  # browsers' old maximum; long enough for a van's service interval
# An expired CRL makes the broker refuse every client: it is made again by every `pki revoke`, `pki renew`
# and `pki mosquitto`, and lasts as long as a leaf certificate.
CRL_VALIDITY_DAYS = LEAF_VALIDITY_DAYS
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_name(name: str, what: str) -> str:
    # The CN becomes the MQTT username and a topic level: keep it to a safe alphabet.
    if not _NAME.match(name):
        raise PkiError(f"{what} {name!r} must be 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    return name


@dataclass(frozen=True)
class Issued:
    cert_path: Path
    key_path: Path


PUBLIC = 0o644  # certificates and the revocation list: anyone on the host may read them


def cloud_client_ids(prefix: str, ingest_workers: int, dispatch: bool = True) -> tuple[str, ...]:
    """The client ids (= certificate CNs) of one cloud process: `{prefix}-ingest-{n}` and `{prefix}-dispatch`."""
    return (*(f"{prefix}-ingest-{n}" for n in range(ingest_workers)), *((f"{prefix}-dispatch",) if dispatch else ()))


def operator_client_ids(prefix: str, slots: int = OPERATOR_SLOTS) -> tuple[str, ...]:
    """The client ids (= certificate CNs) the operator's command-line runs lease, one per run at a time
    (cloud_sync/cloud/operator_identity.py): `{prefix}-op-{n}`."""
    return tuple(f"{prefix}-op-{n}" for n in range(slots))


def cloud_identities(prefix: str, ingest_workers: int) -> tuple[str, ...]:
    """Every identity a cloud prefix has certificates and broker access for: its process's connections and the
    operator runs' identities."""
    return (*cloud_client_ids(prefix, ingest_workers), *operator_client_ids(prefix))


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


class Pki:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def signing_key(self) -> Path:
        return self.dir / "signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.dir / "signing.pub"

    @property
    def security_file(self) -> Path:
        """The broker's dynamic-security config."""
        return self.dir / "dynamic-security.json"

    @property
    def stations_file(self) -> Path:
        return self.dir / "stations.json"

    def stations(self) -> dict[str, str]:
        """device -> station, as written by `write_broker_security`; empty when none was written."""
        try:
            doc = json.loads(self.stations_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read {self.stations_file}: {exc}") from exc
        if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
            raise PkiError(f"{self.stations_file}: expected an object of device -> station")
        return doc

    def write_broker_security(self, fleet: str, stations: Mapping[str, str], cloud_ids: Iterable[str]) -> Path:
        """The dynamic-security config for these devices and cloud identities, and the stations map."""
        doc = broker_security(fleet, stations, (CLOUD_IDENTITY, *cloud_ids))
        self.security_file.write_text(json.dumps(doc, indent=1) + "\n")
        self.stations_file.write_text(json.dumps(dict(sorted(stations.items())), indent=1) + "\n")
        return self.security_file

    def issue_cloud(self, prefix: str = CLOUD_IDENTITY, ingest_workers: int = CLOUD_WORKERS) -> tuple[str, ...]:
        """Certificates for one cloud process's connections, its operator runs' identities (and the single `cloud`
        identity of older tools)."""
        ids = cloud_identities(prefix, ingest_workers)
        for cn in (CLOUD_IDENTITY, *ids):
            self.issue(cn, replace=True)
        return ids

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def revoked_list(self) -> Path:
        return self.dir / "revoked.json"

    def client(self, cn: str) -> Issued:
        return Issued(self.dir / f"{cn}.crt", self.dir / f"{cn}.key")

    # --- making ------------------------------------------------------------------------------------

    def init(self, fleet_name: str = "Flex Edge fleet") -> None:
        """A new CA and cloud signing key; refuses to overwrite an existing CA."""
        if self.ca_cert.exists():
            raise PkiError(f"{self.ca_cert} exists; refusing to replace a CA")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{fleet_name} CA")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=CA_VALIDITY_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _write_key(key, self.ca_key)
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_signing_key(Signer.generate(), self.signing_key, self.signing_pub)

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot load the CA from {self.dir} (run `flexedge pki init`): {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key} is not an EC key")
        return cert, key

    def issue(self, cn: str, *, server_names: Iterable[str] = (), replace: bool = False) -> Issued:
        """A new key and a leaf certificate signed by the CA: a client cert (CN = device id), or a server cert
        for the given DNS names / IP addresses. Existing files for `cn` are kept unless `replace`."""
        _check_name(cn, "common name")
        issued = self.client(cn)
        if not replace and (issued.cert_path.exists() or issued.key_path.exists()):
            raise PkiError(f"{issued.cert_path} exists; `pki renew` extends it with the same key, --force makes "
                           "a new key (the unit then needs both files again)")
        ca_cert, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(ca_cert, ca_key, cn, key.public_key(), list(server_names))
        _write_key(key, issued.key_path)
        issued.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued

    def renew(self, cn: str) -> Issued:
        """A new certificate for `cn`'s existing key, with the same names and a new validity period: only the
        .crt changes on the unit. The old certificate stays valid until it expires (revoke it if lost)."""
        issued = self.client(cn)
        try:
            old = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
            key = serialization.load_pem_private_key(issued.key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot renew {cn}: {exc} (`pki device {cn}` issues a first certificate)") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{issued.key_path} is not an EC key")
        try:
            alt = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in alt.get_values_for_type(x509.IPAddress)] + alt.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        ca_cert, ca_key = self._load_ca()
        cert = self._sign(ca_cert, ca_key, cn, key.public_key(), names)
        write_atomically(issued.cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
        self.write_crl()
        return issued

    def _sign(self, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str,
              public_key: ec.EllipticCurvePublicKey, names: list[str]) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(ca_cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=LEAF_VALIDITY_DAYS))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH] if names else [ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False))
        if names:
            alt: list[x509.GeneralName] = []
            for name in names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    # --- revocation --------------------------------------------------------------------------------

    def revoked(self) -> list[dict[str, str | int]]:
        """The revoked certificates: `{serial, cn, revoked_at}`, oldest first."""
        try:
            return list(json.loads(self.revoked_list.read_text()))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read {self.revoked_list}: {exc}") from exc

    def revoke(self, cn: str) -> int:
        """Revoke `cn`'s current certificate (a lost or stolen unit): its serial goes into the CRL, which is
        written again; the broker refuses the certificate once it has loaded the new CRL. Returns the serial."""
        _check_name(cn, "common name")
        try:
            cert = x509.load_pem_x509_certificate(self.client(cn).cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot revoke {cn}: {exc}") from exc
        entries = self.revoked()
        if all(int(e["serial"]) != cert.serial_number for e in entries):
            entries.append({"serial": cert.serial_number, "cn": cn,
                            "revoked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
            write_atomically(self.revoked_list, (json.dumps(entries, indent=1) + "\n").encode(), PUBLIC)
        self.write_crl()
        return cert.serial_number

    def write_crl(self) -> Path:
        """The CRL (PEM) of every revoked serial, signed by the CA, valid CRL_VALIDITY_DAYS."""
        ca_cert, ca_key = self._load_ca()
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(now - dt.timedelta(minutes=5))
                   .next_update(now + dt.timedelta(days=CRL_VALIDITY_DAYS)))
        for entry in self.revoked():
            revoked_at = dt.datetime.fromisoformat(str(entry["revoked_at"]))
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(entry["serial"]))
                .revocation_date(revoked_at).build())
        crl = builder.sign(ca_key, hashes.SHA256())
        write_atomically(self.crl, crl.public_bytes(serialization.Encoding.PEM), PUBLIC)
        return self.crl

    def issue_broker(self, hosts: Iterable[str] = ("localhost", "127.0.0.1"), *, replace: bool = False) -> Issued:
        return self.issue("broker", server_names=hosts, replace=replace)


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def broker_security(fleet: str, stations: Mapping[str, str], cloud_ids: Iterable[str]) -> dict[str, Any]:
    """mosquitto dynamic-security config: each device (username = cert CN) publishes on its own uplink topics and
    subscribes to (and receives) its own downlink topics and its station's offers, literally: no wildcard, no
    `$share`, nothing of another device. The cloud identities reach the whole fleet tree. Everything else is
    refused, subscriptions at SUBSCRIBE time."""
    topics = FleetTopics(fleet)
    cloud = {"rolename": "cloud", "acls": [
        _acl("publishClientSend", f"{topics.root}/#"), _acl("publishClientReceive", f"{topics.root}/#"),
        _acl("subscribePattern", f"{topics.root}/#"), _acl("subscribePattern", f"$share/+/{topics.root}/#")]}
    roles, clients = [cloud], []
    for cn in dict.fromkeys(cloud_ids):
        clients.append({"username": _check_name(cn, "cloud identity"), "roles": [{"rolename": "cloud"}]})
    for device, station in sorted(stations.items()):
        own = topics.device(_check_name(device, "device id"))
        inbound = (*own.inbound(), topics.offers(_check_name(station, "station")))
        acls = [_acl("publishClientSend", topic) for topic in own.outbound()]
        acls += [_acl(kind, topic) for topic in inbound for kind in ("subscribeLiteral", "publishClientReceive")]
        roles.append({"rolename": f"device-{device}", "acls": acls})
        clients.append({"username": device, "roles": [{"rolename": f"device-{device}"}]})
    return {"defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                                 "unsubscribe": True},
            "clients": clients, "groups": [], "roles": roles}


def dynsec_plugin() -> Path:
    """mosquitto's dynamic-security plugin (shipped in Debian's mosquitto package)."""
    for directory in DYNSEC_PLUGIN_DIRS:
        for found in sorted(glob.glob(f"{directory}/{DYNSEC_PLUGIN}")):
            return Path(found)
    raise PkiError(f"{DYNSEC_PLUGIN} not found in {', '.join(DYNSEC_PLUGIN_DIRS)} (apt-get install mosquitto)")


def mosquitto_tls_config(pki: Pki, security_file: Path, plugin: Path | None = None) -> str:
    """Listener lines for MosquittoBroker(extra_config=...): mutual TLS, username = client id = CN, access by
    the dynamic-security plugin."""
    broker = pki.client("broker")
    return "\n".join([
        f"cafile {pki.ca_cert}",
        f"certfile {broker.cert_path}",
        f"keyfile {broker.key_path}",
        *([f"crlfile {pki.crl}"] if pki.crl.exists() else []),
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        f"plugin {plugin or dynsec_plugin()}",
        f"plugin_opt_config_file {security_file}",
    ])
