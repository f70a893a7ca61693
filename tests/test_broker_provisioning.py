"""`flexedge pki` as a technician runs it, and Debian's mosquitto serving exactly what `pki mosquitto` wrote.

Measured before (issue 16, point 3): the printed lines had no listener, and the broker key was 0600 root while
mosquitto drops to its own user: "Unable to load server key file ... Permission denied". The demo worked only
because it added `listener` and `user root` itself. Here mosquitto starts as root like its systemd unit, drops
to `mosquitto`, and a device and the cloud talk through it; revocation takes effect through the CRL."""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import aiomqtt
import pytest
from cryptography import x509

from cloud_sync.connection import BrokerSettings, make_client
from cloud_sync.pki import Pki
from device.access import AccessProblem, check_readable
from device.testbench.procs import free_tcp_port
from tests.helpers.debian_mosquitto import DebianMosquitto, open_tmpdir

FLEET = "f1"


def flexedge(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXEDGE_")}
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def ok(*args: str) -> str:
    result = flexedge(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def root() -> Iterator[Path]:
    with open_tmpdir() as path:
        yield path


def provision(root: Path) -> Pki:
    pki = Pki(root / "pki")
    ok("pki", "init", "--dir", str(pki.dir))
    ok("pki", "broker", "--dir", str(pki.dir), "--host", "127.0.0.1", "--host", "localhost")
    ok("pki", "device", "--dir", str(pki.dir), "van-42")
    ok("pki", "cloud", "--dir", str(pki.dir))
    return pki


def settings(pki: Pki, identity: str, port: int) -> BrokerSettings:
    issued = pki.client(identity)
    return BrokerSettings("127.0.0.1", port, str(pki.ca_cert), str(issued.cert_path), str(issued.key_path),
                          keepalive_s=10, connect_timeout_s=5)


async def device_to_cloud(pki: Pki, port: int) -> bytes:
    """The cloud subscribes to every device's events; van-42 publishes one; what the cloud received."""
    cloud = make_client(settings(pki, "cloud", port), "cloud-test", persistent=False)
    async with cloud:
        await cloud.subscribe(f"flex/v1/{FLEET}/dev/+/events", qos=1)
        async with make_client(settings(pki, "van-42", port), "van-42", persistent=False) as device:
            await device.publish(f"flex/v1/{FLEET}/dev/van-42/events", b"batch-1", qos=1)
        async with asyncio.timeout(10):
            async for message in cloud.messages:
                return bytes(message.payload)
    raise AssertionError("no message")


async def connects(pki: Pki, identity: str, port: int) -> bool:
    try:
        async with make_client(settings(pki, identity, port), f"{identity}-probe", persistent=False):
            return True
    except aiomqtt.MqttError:
        return False


def test_pki_mosquitto_output_serves_the_fleet_as_the_mosquitto_user(root: Path) -> None:
    pki = provision(root)
    port = free_tcp_port()
    conf = root / "etc-mosquitto"
    out = json.loads(ok("pki", "mosquitto", "--json", "--dir", str(pki.dir), "--fleet", FLEET,
                        "--device", "van-42=S1", "--conf-dir", str(conf), "--port", str(port)))
    drop_in = Path(out["drop_in"])
    assert drop_in == conf / "conf.d" / "flexedge.conf"
    text = drop_in.read_text()
    for line in (f"listener {port}", "require_certificate true", "use_identity_as_username true",
                 "allow_anonymous false", f"crlfile {conf}/flexedge/crl.pem", f"keyfile {conf}/flexedge/broker.key",
                 "use_username_as_clientid true",
                 f"plugin_opt_config_file {conf}/flexedge/dynamic-security.json"):
        assert line in text.splitlines(), line
    mosquitto = pwd.getpwnam("mosquitto")
    key = conf / "flexedge" / "broker.key"
    assert (key.stat().st_uid, stat.S_IMODE(key.stat().st_mode)) == (mosquitto.pw_uid, 0o400)
    check_readable(key, user="mosquitto")
    with pytest.raises(AccessProblem):
        check_readable(key, user="nobody")
    with DebianMosquitto(conf, port) as broker:
        assert broker.uid() == mosquitto.pw_uid  # it dropped to its own user, then loaded the key
        assert asyncio.run(device_to_cloud(pki, port)) == b"batch-1"

    # A lost van: revoked, the broker's files made again, the broker restarted: the van is refused, the cloud
    # (with a renewed certificate for its same key) still connects.
    ok("pki", "revoke", "--dir", str(pki.dir), "van-42")
    old_cloud = x509.load_pem_x509_certificate(pki.client("cloud").cert_path.read_bytes())
    key_before = pki.client("cloud").key_path.read_bytes()
    ok("pki", "renew", "--dir", str(pki.dir), "cloud")
    new_cloud = x509.load_pem_x509_certificate(pki.client("cloud").cert_path.read_bytes())
    assert new_cloud.serial_number != old_cloud.serial_number
    assert pki.client("cloud").key_path.read_bytes() == key_before
    assert new_cloud.public_key() == old_cloud.public_key()
    ok("pki", "mosquitto", "--dir", str(pki.dir), "--fleet", FLEET, "--device", "van-42=S1", "--conf-dir",
       str(conf), "--port", str(port))
    with DebianMosquitto(conf, port):
        assert asyncio.run(connects(pki, "cloud", port))
        assert not asyncio.run(connects(pki, "van-42", port))
    crl = x509.load_pem_x509_crl((conf / "flexedge" / "crl.pem").read_bytes())
    van = x509.load_pem_x509_certificate(pki.client("van-42").cert_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(van.serial_number) is not None


def test_pki_device_refuses_to_overwrite_and_errors_are_one_line_on_stderr(root: Path) -> None:
    pki = provision(root)
    key = pki.client("van-42").key_path.read_bytes()
    result = flexedge("pki", "device", "--dir", str(pki.dir), "van-42")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("flexedge pki: ") and result.stderr.count("\n") == 1 and "--force" in result.stderr
    assert pki.client("van-42").key_path.read_bytes() == key
    ok("pki", "device", "--dir", str(pki.dir), "van-42", "--force")
    assert pki.client("van-42").key_path.read_bytes() != key
    result = flexedge("pki", "init", "--dir", str(pki.dir))  # a second CA over the first: refused
    assert result.returncode == 2 and "refusing" in result.stderr and result.stdout == ""


def test_pki_json_before_or_after_the_action(root: Path) -> None:
    """Measured: `pki --json init` ignored --json."""
    doc = json.loads(ok("pki", "--json", "init", "--dir", str(root / "a")))
    assert doc["ca"] == str(root / "a" / "ca.crt")
    doc = json.loads(ok("pki", "init", "--json", "--dir", str(root / "b")))
    assert doc["crl"] == str(root / "b" / "crl.pem")
