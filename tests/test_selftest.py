"""`flexedge selftest`: each check against the real thing (a broker with and without TLS, gpsd via gpsfake, a
store file, the data directory), and the command's exit code."""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device.cloud_port import CloudCommand
from device.commands import CommandContext, CommandExecutor, CommandRegistry, Status, handlers
from device.config import Config, MqttSection
from device.contract.domain import Event, EventType
from device.paths import store_path
from device.selftest import (
    CheckStatus,
    check_broker,
    check_clock,
    check_data_dir,
    check_gpsd,
    check_store,
    check_tflite,
    run_checks,
)
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from device.testbench.procs import free_tcp_port
from tests.helpers.gpsd_peer import HeldGpsd

NOW = dt.datetime(2026, 5, 4, 8, 0, tzinfo=dt.timezone.utc)


def selftest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", "selftest", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_selftest_passes_on_a_healthy_unit(tmp_path: Path, broker, gpsfake, testdata: Path) -> None:
    fake = gpsfake(testdata / "gps" / "gpsd-test-daemon" / "neo-m8n.log")
    with EventStore(tmp_path / "events.db") as store:
        store.append(Event(EventType.AGENT_STARTED))
    env = {"FLEXEDGE_MQTT__PORT": str(broker.port), "FLEXEDGE_MQTT__TLS": "false"}
    result = selftest("--json", "--data-dir", str(tmp_path), "--gpsd", f"127.0.0.1:{fake.port}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert doc["ok"] is True
    assert statuses == {"config": "pass", "data_dir": "pass", "store": "pass", "clock": "pass", "tflite": "pass",
                        "broker": "pass", "gpsd": "pass", "scanner": "skip", "mcu": "skip",
                        "camera": "skip", "model": "pass"}
    store_check = next(c for c in doc["checks"] if c["name"] == "store")
    assert store_check["data"]["last_seq"] == 1 and store_check["data"]["pending"] == 1
    env["FLEXEDGE_GPS__ENABLED"] = "false"
    human = selftest("--data-dir", str(tmp_path), env=env)  # no GPS on this unit: SKIP, still a pass
    assert human.returncode == 0 and "SKIP  gpsd" in human.stdout and "all checks passed" in human.stdout


def test_selftest_fails_on_a_corrupt_store_and_a_dead_broker(tmp_path: Path) -> None:
    (tmp_path / "events.db").write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    env = {"FLEXEDGE_MQTT__PORT": str(free_tcp_port()), "FLEXEDGE_MQTT__TLS": "false"}
    result = selftest("--json", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 1
    statuses = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
    assert statuses["store"] == "fail" and statuses["broker"] == "fail" and statuses["config"] == "pass"
    assert (tmp_path / "events.db").exists()  # a self-test never moves the store aside


def test_selftest_fails_on_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[device]\nrole = \"submarine\"\n")
    result = selftest("--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL  config") and "device.role" in result.stdout


def make_tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made here with cryptography."""
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    start, end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1), dt.datetime.now(dt.timezone.utc) \
        + dt.timedelta(days=30)
    ca = (x509.CertificateBuilder().subject_name(name("flexedge test CA")).issuer_name(name("flexedge test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(key.public_key()).serial_number(2).not_valid_before(start).not_valid_after(end)
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_broker_check_does_a_tls_handshake(tmp_path: Path) -> None:
    # mosquitto started as root drops to its own user before it reads the certificates, and pytest's tmp_path
    # is private to root: the TLS files go to a directory that user can read.
    with tempfile.TemporaryDirectory(prefix="flexedge-tls-") as shared:
        os.chmod(shared, 0o755)
        ca, cert, key = make_tls_material(Path(shared))
        for path in (ca, cert, key):
            os.chmod(path, 0o644)
        other_ca = make_tls_material(tmp_path)[0]
        broker = MosquittoBroker(tmp_path / "broker", extra_config=f"cafile {ca}\ncertfile {cert}\n"
                                                                   f"keyfile {key}\nallow_anonymous true")
        broker.start()
        check_tls(broker, ca, other_ca)


def check_tls(broker: MosquittoBroker, ca: Path, other_ca: Path) -> None:
    try:
        good = check_broker(MqttSection(host="127.0.0.1", port=broker.port, tls=True, ca_file=str(ca)))
        assert good.status is CheckStatus.PASS and "TLSv1." in good.detail
        wrong_ca = check_broker(MqttSection(host="127.0.0.1", port=broker.port, tls=True, ca_file=str(other_ca)))
        assert wrong_ca.status is CheckStatus.FAIL and "CERTIFICATE_VERIFY_FAILED" in wrong_ca.detail
    finally:
        broker.stop()


def test_gpsd_check_needs_the_gpsd_banner(broker) -> None:
    assert check_gpsd(None).status is CheckStatus.SKIP
    assert check_gpsd(f"127.0.0.1:{free_tcp_port()}").status is CheckStatus.FAIL  # nothing listening
    # a server that is not gpsd says nothing first (a deadline of 0.5 s, not the default 3 s: silent is silent)
    silent = check_gpsd(f"127.0.0.1:{broker.port}", deadline_s=0.5)
    assert silent.status is CheckStatus.FAIL


def test_data_dir_check(tmp_path: Path) -> None:
    assert check_data_dir(tmp_path / "new", 1).status is CheckStatus.PASS
    assert check_data_dir(tmp_path / "new", 1 << 62).status is CheckStatus.WARN
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert check_data_dir(blocker / "sub", 1).status is CheckStatus.FAIL


def test_clock_checks() -> None:
    assert check_clock(NOW, None).status is CheckStatus.PASS
    assert check_clock(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), None).status is CheckStatus.FAIL
    assert check_clock(NOW, NOW + dt.timedelta(seconds=10)).status is CheckStatus.PASS
    jumped = check_clock(NOW, NOW + dt.timedelta(hours=3))
    assert jumped.status is CheckStatus.FAIL and jumped.data["skew_s"] == 10800


def test_clock_skew_against_the_store(tmp_path: Path) -> None:
    with EventStore(tmp_path / "events.db") as store:
        store.append(Event(EventType.AGENT_STARTED, ts="2099-01-01T00:00:00.000Z"))
    result = selftest("--json", "--data-dir", str(tmp_path), env={"FLEXEDGE_MQTT__TLS": "false"})
    clock = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "clock")
    assert clock["status"] == "fail" and "jumped back" in clock["detail"] and result.returncode == 1


def test_store_and_tflite_checks(tmp_path: Path) -> None:
    assert check_store(tmp_path / "absent.db").status is CheckStatus.PASS
    assert check_tflite().status is CheckStatus.PASS


def test_selftest_checks_serial_devices(tmp_path: Path, broker) -> None:
    """A simulated MCU on a pty answers the handshake; a missing scanner port fails, a present one passes."""
    import asyncio
    import threading

    from device.testbench.mcu import SimMcu
    from device.testbench.scanner import SimScanner

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    mcu = SimMcu(str(tmp_path / "mcu"))
    scanner = SimScanner(str(tmp_path / "scanner"))
    asyncio.run_coroutine_threadsafe(mcu.start(), loop).result(5)
    asyncio.run_coroutine_threadsafe(scanner.start(), loop).result(5)
    try:
        env = {"FLEXEDGE_MQTT__PORT": str(broker.port), "FLEXEDGE_MQTT__TLS": "false",
               "FLEXEDGE_GPS__ENABLED": "false", "FLEXEDGE_MCU__PORT": str(tmp_path / "mcu"),
               "FLEXEDGE_SCANNER__PORT": str(tmp_path / "scanner")}
        result = selftest("--json", "--data-dir", str(tmp_path / "data"), env=env)
        statuses = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
        assert statuses["mcu"] == "pass" and statuses["scanner"] == "pass", result.stdout
        assert result.returncode == 0
        env["FLEXEDGE_SCANNER__PORT"] = str(tmp_path / "unplugged")
        result = selftest("--json", "--data-dir", str(tmp_path / "data"), env=env)
        statuses = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
        assert statuses["scanner"] == "fail" and result.returncode == 1
    finally:
        asyncio.run_coroutine_threadsafe(mcu.stop(), loop).result(5)
        asyncio.run_coroutine_threadsafe(scanner.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_selftest_checks_camera_and_model(tmp_path: Path, broker) -> None:
    import numpy as np

    from device.vision.synth import jpeg_bytes, render_photo

    frames = tmp_path / "frames"
    frames.mkdir()
    env = {"FLEXEDGE_MQTT__PORT": str(broker.port), "FLEXEDGE_MQTT__TLS": "false", "FLEXEDGE_GPS__ENABLED": "false",
           "FLEXEDGE_CAMERA__SIM_DIR": str(frames), "FLEXEDGE_CAMERA__BACKEND": "simulated"}
    result = selftest("--json", "--data-dir", str(tmp_path / "data"), env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["camera"]["status"] == "fail" and result.returncode == 1  # no picture in view
    assert checks["model"]["status"] == "pass" and checks["model"]["data"]["ms"] > 0
    (frames / "door.jpg").write_bytes(jpeg_bytes(render_photo(np.random.default_rng(1), text="7")))
    result = selftest("--json", "--data-dir", str(tmp_path / "data"), env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["camera"]["status"] == "pass" and result.returncode == 0


def test_a_hanging_check_times_out_and_the_remote_selftest_still_answers(tmp_path: Path, broker) -> None:
    """A gpsd peer that trickles a byte every half second and never finishes its banner: the gpsd check reports
    failed, timed out, the checks after it still run, and the `selftest` command commits its answer."""
    gpsd = HeldGpsd()
    try:
        config = tmp_path / "flexedge.toml"
        config.write_text(f'[mqtt]\nport = {broker.port}\ntls = false\n[gps]\nenabled = true\nsource = "gpsd"\n'
                          f'gpsd_host = "127.0.0.1"\ngpsd_port = {gpsd.port}\n[commands]\nselftest_check_s = 2\n')
        registry = CommandRegistry()
        registry.register("selftest", handlers.selftest)
        data = tmp_path / "data"
        with EventStore(store_path(data)) as store:
            commands = CommandExecutor(registry, CommandContext(store, data, config, None), lambda why: None)
            outcome = asyncio.run(commands.execute(CloudCommand("st-1", "selftest", {})))
            answers = [e["data"] for e in store.events() if e["type"] == "command.result"]
    finally:
        gpsd.close()
    assert outcome is not None and (outcome.status, outcome.detail) == (Status.FAILED, "1 checks FAIL: gpsd")
    checks = {c["name"]: c for c in outcome.data["checks"]}
    assert "timed out" in checks["gpsd"]["detail"], checks["gpsd"]
    assert checks["broker"]["status"] == checks["model"]["status"] == "pass"  # before and after the hanging one
    assert [(a["id"], a["status"]) for a in answers] == [("st-1", "failed")]


def test_the_selftest_has_a_deadline_for_all_its_checks(tmp_path: Path) -> None:
    """Checks not started by the self-test's deadline report failed, timed out, without running; each check's own
    timeout is cut to what is left of the deadline."""
    gpsd = HeldGpsd()
    try:
        results = run_checks(None, Config(), tmp_path, f"127.0.0.1:{gpsd.port}", check_timeout_s=600, deadline_s=3)
    finally:
        gpsd.close()
    checks = {r.name: r for r in results}
    assert list(checks) == ["config", "data_dir", "store", "clock", "tflite", "broker", "gpsd", "scanner", "mcu",
                            "camera", "model"]
    assert checks["gpsd"].status is CheckStatus.FAIL and "timed out" in checks["gpsd"].detail
    assert checks["model"].status is CheckStatus.FAIL
    assert checks["model"].detail == "timed out: the self-test's deadline of 3 s passed before this check ran"
