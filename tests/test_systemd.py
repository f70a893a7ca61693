"""The systemd unit: `systemd-analyze verify`, the security exposure score, the installer, sd_notify over a real
AF_UNIX datagram socket, and the agent's libraries under MemoryDenyWriteExecute."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from device.config import Config
from device.sdnotify import Notifier, pet_watchdog

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "flexedge.service"
MAX_EXPOSURE = 2.5
VENV_BIN = Path(sys.executable).parent


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd")
    return path


def install_staged(tmp_path: Path) -> Path:
    """Run the installer with DESTDIR; PREFIX points at a directory whose venv is this test's venv, and the
    releases folder the unit names is set up as the installer sets it up (`current -> PREFIX`), so the unit's
    ExecStart names a real executable (verify checks that it exists)."""
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "venv").symlink_to(VENV_BIN.parent)
    dest = tmp_path / "root"
    releases = tmp_path / "releases"
    result = subprocess.run(["bash", str(REPO / "systemd" / "install.sh")], capture_output=True, text=True,
                            env={**os.environ, "DESTDIR": str(dest), "PREFIX": str(prefix),
                                 "RELEASES": str(releases)}, timeout=60)
    assert result.returncode == 0, result.stderr
    staged = dest / str(releases).lstrip("/")
    assert Path(os.readlink(staged / "current")) == prefix  # the installer's release is the first one
    (staged / "current").rename(tmp_path / "staged-current")
    releases.mkdir()
    (tmp_path / "staged-current").rename(releases / "current")
    return dest


def test_installer_stages_unit_and_config(tmp_path: Path) -> None:
    dest = install_staged(tmp_path)
    unit = (dest / "etc/systemd/system/flexedge.service").read_text()
    assert f"ExecStart={tmp_path}/releases/current/venv/bin/flexedge run" in unit
    assert f"ExecStartPre={tmp_path}/releases/current/venv/bin/flexedge config --validate" in unit
    # The guard comes first and from the installer's release (a new release that cannot start is rolled back).
    guard = f"ExecStartPre=-{tmp_path}/opt/venv/bin/flexedge update guard --releases {tmp_path}/releases"
    assert unit.index(guard) < unit.index("config --validate")
    config = dest / "etc/flexedge/flexedge.toml"
    text = config.read_text()
    for section in ("[device]", "[mqtt]", "[sync]", "[camera]", "[gps]"):  # the complete reference, not a stub
        assert section in text
    assert 'ca_file = "tls/ca.crt"' in text and 'data_dir = "/var/lib/flexedge"' in text
    # Without --device-id/--broker/--certs the template is to be filled in: ExecStartPre refuses it, naming what.
    result = subprocess.run([str(VENV_BIN / "flexedge"), "config", "--validate", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "device.id: empty" in result.stderr


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = install_staged(tmp_path) / "etc/systemd/system/flexedge.service"
    result = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either (unknown keys, bad values)


def test_unit_security_exposure(tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for flexedge\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"\nsystemd-analyze security --offline=true: exposure {score} (limit {MAX_EXPOSURE})")
    assert score <= MAX_EXPOSURE


def test_unit_settings_the_agent_relies_on() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "Restart=always", "StartLimitIntervalSec=0", "User=flexedge",
                 "SupplementaryGroups=dialout video", "StateDirectory=flexedge", "LogsDirectory=flexedge",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "MemoryDenyWriteExecute=yes"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^WatchdogSec=\d+$", text, re.M)
    # A release that exits at start (any code) must come round to the update guard: no exit code stops restarts.
    assert not re.search(r"^RestartPreventExitStatus=", text, re.M)
    limit = re.search(r"^LimitNOFILE=(\d+)$", text, re.M)  # issue 15: a console flood must not starve the agent
    assert limit and int(limit.group(1)) >= 4 * Config().console.max_connections


MDWE_PROBE = """
import ctypes, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_MDWE) not supported: errno %d" % ctypes.get_errno())
import numpy, cc3d, nacl.signing, sqlite3, pyzbar.pyzbar, zxingcpp, paho.mqtt.client, serial, orjson, zstandard
from PIL import Image
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ai_edge_litert.interpreter import Interpreter
key = Ed25519PrivateKey.generate()
key.public_key().verify(key.sign(b"x"), b"x")
assert pyzbar.pyzbar.decode(Image.new("L", (40, 40), 255)) == []
numpy.linalg.inv(numpy.eye(50) * 2.0)
import glob, device
for model in glob.glob(device.__path__[0] + "/vision/models/*.tflite"):
    interpreter = Interpreter(model_path=model)
    interpreter.allocate_tensors()
    interpreter.invoke()
    print("model ran", model)
print("mdwe ok")
"""


def test_agent_libraries_run_under_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes is in the unit: the kernel's PR_SET_MDWE (the same rule) must not break
    numpy, cc3d, zbar, LiteRT (and the shipped model, when there is one), cryptography, PyNaCl, paho."""
    result = subprocess.run([sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "mdwe ok" in result.stdout


# --- sd_notify ----------------------------------------------------------------------------------------------


def datagram_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def test_sd_notify_messages_reach_a_real_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with datagram_socket(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert notifier.enabled and notifier.watchdog_interval_s() == 15.0
        assert notifier.ready("loops running")
        assert sock.recv(4096) == b"READY=1\nSTATUS=loops running"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.status("outbox 12 pending\nsecond line dropped")
        assert sock.recv(4096) == b"STATUS=outbox 12 pending"
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    assert notifier.sent == 4 and notifier.failed == 0


def test_sd_notify_abstract_socket() -> None:
    name = f"flexedge-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(64) == b"WATCHDOG=1"


def test_sd_notify_without_systemd_or_with_a_dead_socket(tmp_path: Path) -> None:
    off = Notifier({})
    assert not off.enabled and not off.ready() and off.watchdog_interval_s() is None
    gone = tmp_path / "gone.sock"
    datagram_socket(gone).close()  # bound once, then nobody listens
    notifier = Notifier({"NOTIFY_SOCKET": str(gone)})
    assert notifier.watchdog() is False and notifier.failed == 1  # logged, never raised


def test_watchdog_is_petted_only_while_healthy(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    state = {"healthy": True}

    async def receive(sock: socket.socket, timeout_s: float = 5.0) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 64), timeout_s)
        except TimeoutError:
            return None

    def drain(sock: socket.socket) -> None:
        while True:
            try:
                sock.recv(64)
            except BlockingIOError:
                return

    async def scenario() -> None:
        with datagram_socket(path) as sock:
            sock.setblocking(False)
            notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000"})  # pet every 10 ms
            task = asyncio.create_task(pet_watchdog(notifier, lambda: state["healthy"]))
            assert await receive(sock) == b"WATCHDOG=1"
            state["healthy"] = False
            await asyncio.sleep(0.05)  # a pet in flight when health changed may still arrive
            drain(sock)
            assert await receive(sock, 0.2) is None  # 20 intervals: silent while unhealthy
            state["healthy"] = True
            assert await receive(sock) == b"WATCHDOG=1"
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    asyncio.run(scenario())


def test_watchdog_outside_systemd_returns_at_once() -> None:
    asyncio.run(asyncio.wait_for(pet_watchdog(Notifier({}), lambda: True), 5))
