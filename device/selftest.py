"""The unit's self-test: what a technician runs after installing a unit (`flexedge selftest`, device/cli/selftest.py)
and what the remote `selftest` command runs inside the agent (device/commands/handlers.py).

Each check is a small function returning a `CheckResult`; it never raises. Checks of parts that are not
configured report SKIP. Each check runs in a thread of its own with its own timeout, and the whole self-test has a
deadline: a check that hangs (a peer that trickles bytes, a serial port that blocks) reports FAIL "timed out" and
the rest go on; the self-test always answers. A timed-out check's thread is a daemon, so it holds no stop.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from device.config import Config, MqttSection, config_problems
from device.contract.domain import utc_now
from device.paths import store_path

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

MIN_YEAR = 2024  # a clock before this has never been set (a Pi without RTC boots in 1970)
MAX_BACKWARD_SKEW_S = 300.0  # newest stored event this far in the future: the clock jumped back
NET_TIMEOUT_S = 3.0
CHECK_TIMEOUT_S = 15.0  # one check, unless the caller says otherwise ([commands] selftest_check_s)
DEADLINE_S = 60.0  # the whole self-test ([commands] selftest_deadline_s)
BANNER_MAX = 4096  # gpsd's VERSION line is ~100 bytes


class CheckStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"  # works, but needs attention soon
    FAIL = "fail"
    SKIP = "skip"  # not configured on this unit


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: CheckStatus
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "data": dict(self.data)}


def check_config(path: Path | None, user: str | None = None) -> list[CheckResult]:
    """The whole config, with its certificate, key and model files (readable by `user`, default: us):
    one FAIL per problem, so a technician sees everything still to fix at once."""
    problems = config_problems(path, file_user=user)
    if not problems:
        return [CheckResult("config", CheckStatus.PASS, f"valid: {path or 'defaults'}")]
    return [CheckResult("config", CheckStatus.FAIL, str(exc), {"key": exc.key}) for exc in problems]


def check_data_dir(data_dir: Path, min_free_bytes: int) -> CheckResult:
    """The directory exists or can be made, a file can be written and fsynced there, and space is left."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".selftest-") as probe:
            probe.write(b"flexedge selftest\n")
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(data_dir).free
    except OSError as exc:
        return CheckResult("data_dir", CheckStatus.FAIL, f"{data_dir} not writable: {exc}", {"path": str(data_dir)})
    data = {"path": str(data_dir), "free_bytes": free, "min_free_bytes": min_free_bytes}
    if free < min_free_bytes:
        return CheckResult("data_dir", CheckStatus.WARN, f"{data_dir}: only {free / 1e6:.0f} MB free "
                           f"(< {min_free_bytes / 1e6:.0f} MB: GPS track is thinned)", data)
    return CheckResult("data_dir", CheckStatus.PASS, f"{data_dir} writable, {free / 1e9:.1f} GB free", data)


def _open_read_only(path: Path) -> sqlite3.Connection:
    # Read-only: the agent may be running, and a self-test must not change (or move aside) its store.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=5)


def check_store(path: Path) -> CheckResult:
    if not path.exists():
        return CheckResult("store", CheckStatus.PASS, f"no store yet at {path} (created on first start)")
    try:
        conn = _open_read_only(path)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            last_seq, pending = conn.execute("SELECT MAX(seq), SUM(acked = 0) FROM events").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return CheckResult("store", CheckStatus.FAIL, f"{path}: {type(exc).__name__}: {exc}", {"path": str(path)})
    if rows != [("ok",)]:
        problem = "; ".join(str(r[0]) for r in rows[:3])
        return CheckResult("store", CheckStatus.FAIL, f"{path}: quick_check: {problem}", {"path": str(path)})
    data = {"path": str(path), "last_seq": last_seq or 0, "pending": pending or 0}
    return CheckResult("store", CheckStatus.PASS, f"quick_check ok, {data['pending']} events pending", data)


def newest_event_time(path: Path) -> datetime | None:
    if not path.exists():
        return None
    try:
        conn = _open_read_only(path)
        try:
            row = conn.execute("SELECT ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        finally:
            conn.close()
        return datetime.fromisoformat(row[0].replace("Z", "+00:00")) if row else None
    except (sqlite3.Error, ValueError):
        return None


def check_clock(now: datetime, newest_event: datetime | None) -> CheckResult:
    data: dict[str, Any] = {"now": now.isoformat(), "newest_event": newest_event.isoformat() if newest_event else None}
    if now.year < MIN_YEAR:
        return CheckResult("clock", CheckStatus.FAIL, f"clock not set: {now:%Y-%m-%d} (no RTC/NTP yet?)", data)
    if newest_event is not None:
        skew = (newest_event - now).total_seconds()
        data["skew_s"] = skew
        if skew > MAX_BACKWARD_SKEW_S:
            return CheckResult("clock", CheckStatus.FAIL, f"clock is {timedelta(seconds=round(skew))} behind the "
                               "newest stored event: it jumped back", data)
    return CheckResult("clock", CheckStatus.PASS, f"{now:%Y-%m-%d %H:%M:%S}Z", data)


def check_tflite() -> CheckResult:
    """The TFLite interpreter: LiteRT first, tflite_runtime as the fallback (DESIGN.md section 5)."""
    errors = []
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            interpreter = importlib.import_module(module).Interpreter
        except (ImportError, AttributeError) as exc:
            errors.append(f"{module}: {exc}")
            continue
        return CheckResult("tflite", CheckStatus.PASS, f"{module} importable",
                           {"module": module, "interpreter": interpreter.__name__})
    return CheckResult("tflite", CheckStatus.FAIL, "no TFLite interpreter: pip install ai-edge-litert; "
                       + "; ".join(errors))


def check_broker(mqtt: MqttSection) -> CheckResult:
    """TCP connect to the broker, then a TLS handshake with the configured CA when TLS is on."""
    if not mqtt.host:
        return CheckResult("broker", CheckStatus.SKIP, "no [mqtt] host configured")
    where = f"{mqtt.host}:{mqtt.port}"
    data = {"host": mqtt.host, "port": mqtt.port, "tls": mqtt.tls}
    try:
        with socket.create_connection((mqtt.host, mqtt.port), timeout=NET_TIMEOUT_S) as sock:
            if not mqtt.tls:
                return CheckResult("broker", CheckStatus.PASS, f"{where} reachable (no TLS)", data)
            context = ssl.create_default_context(cafile=mqtt.ca_file or None)
            if mqtt.cert_file:
                context.load_cert_chain(mqtt.cert_file, mqtt.key_file or None)
            with context.wrap_socket(sock, server_hostname=mqtt.host) as tls:
                return CheckResult("broker", CheckStatus.PASS, f"{where} reachable, {tls.version()}", data)
    except (OSError, ssl.SSLError) as exc:
        return CheckResult("broker", CheckStatus.FAIL, f"{where}: {type(exc).__name__}: {exc}", data)


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    """One line by `deadline` (time.monotonic()), at most BANNER_MAX bytes: a peer that trickles bytes cannot hold
    the reader past it (a per-recv timeout alone would wait forever on one byte every few seconds)."""
    line = b""
    while b"\n" not in line:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: no whole line after {len(line)} bytes")
        if len(line) > BANNER_MAX:
            raise ValueError(f"no line end in {len(line)} bytes")
        sock.settimeout(left)
        chunk = sock.recv(BANNER_MAX)
        if not chunk:
            break
        line += chunk
    return line.partition(b"\n")[0]


def check_gpsd(address: str | None, deadline_s: float = NET_TIMEOUT_S) -> CheckResult:
    """gpsd answers its protocol: the VERSION banner on connect, all within `deadline_s`."""
    if not address:
        return CheckResult("gpsd", CheckStatus.SKIP, "no gpsd configured")
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + deadline_s
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=min(NET_TIMEOUT_S, deadline_s)) \
                as sock:
            banner = json.loads(_read_line(sock, deadline) or b"{}")
    except (OSError, ValueError) as exc:
        return CheckResult("gpsd", CheckStatus.FAIL, f"{address}: {type(exc).__name__}: {exc}")
    if not isinstance(banner, dict):
        return CheckResult("gpsd", CheckStatus.FAIL, f"{address}: not gpsd (no VERSION banner)")
    if banner.get("class") != "VERSION":
        return CheckResult("gpsd", CheckStatus.FAIL, f"{address}: not gpsd (no VERSION banner)")
    return CheckResult("gpsd", CheckStatus.PASS, f"gpsd {banner.get('release', '?')} at {address}",
                       {"release": banner.get("release"), "proto": [banner.get("proto_major"),
                                                                    banner.get("proto_minor")]})


def check_scanner(config: Config) -> CheckResult:
    """The scanner's serial port exists and opens (a scanner is silent until a code is scanned)."""
    from device.hardware import scanner_config

    settings = scanner_config(config)
    if settings is None:
        return CheckResult("scanner", CheckStatus.SKIP, "no [scanner] port configured")
    path = settings.port.path
    try:
        import serial

        with serial.Serial(path, settings.port.baudrate, timeout=0):
            pass
    except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
        return CheckResult("scanner", CheckStatus.FAIL, f"{path}: {exc}")
    return CheckResult("scanner", CheckStatus.PASS, f"{path} opens", {"port": path})


def check_mcu(config: Config, timeout_s: float = 5.0) -> CheckResult:
    """The MCU answers the HELLO handshake on its port."""
    import asyncio

    from device.hardware import mcu_config
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.mcu.bridge import McuBridge

    settings = mcu_config(config)
    if settings is None:
        return CheckResult("mcu", CheckStatus.SKIP, "no [mcu] port configured (feedback as log lines)")

    async def handshake() -> None:
        bridge = McuBridge(settings).start()
        try:
            await bridge.wait_up(timeout_s)
        finally:
            await bridge.close()
    try:
        asyncio.run(handshake())
    except (BridgeError, TimeoutError, OSError) as exc:
        return CheckResult("mcu", CheckStatus.FAIL, f"{settings.port.path}: no handshake: {exc!r}")
    return CheckResult("mcu", CheckStatus.PASS, f"{settings.port.path}: handshake ok")


def check_camera(config: Config) -> CheckResult:
    """One frame from the configured camera (picamera2 on a Pi, the simulated camera elsewhere)."""
    from device.photos import camera_from_config
    from firmware_bridge.camera import CameraError

    section = config.camera
    if section.backend.value == "none":
        return CheckResult("camera", CheckStatus.SKIP, "no camera configured ([camera] backend = none)")
    try:
        camera = camera_from_config(section)
        camera.open()
        try:
            width, height = camera.capture().size
        finally:
            camera.close()
    except (CameraError, OSError) as exc:
        return CheckResult("camera", CheckStatus.FAIL, f"{section.backend.value}: {exc}")
    return CheckResult("camera", CheckStatus.PASS, f"{section.backend.value}: {width}x{height} frame",
                       {"width": width, "height": height})


def number_plate(text: str, size: tuple[int, int] = (640, 480)) -> npt.NDArray[np.uint8]:
    """A plain photo of a number in black on a light wall, drawn with Pillow alone (no OpenCV on a van).
    Pillow's own font at a third of the height: the shipped model reads it."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, (214, 206, 190))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size[1] // 3)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((size[0] - right - left) // 2, (size[1] - bottom - top) // 2), text, fill=(25, 25, 25), font=font)
    return np.asarray(image)


def check_model(config: Config) -> CheckResult:
    """The house-number model loads and runs on a drawn photo; reports the time it took."""
    from device.vision.check import checker_from_config
    from device.vision.errors import VisionError

    try:
        checker = checker_from_config(config.vision)
        result = checker.check(number_plate("12"), "12")
    except (VisionError, OSError, ValueError) as exc:
        return CheckResult("model", CheckStatus.FAIL, f"{type(exc).__name__}: {exc}")
    return CheckResult("model", CheckStatus.PASS, f"house-number check ran in {result.ms:.0f} ms "
                       f"(verdict {result.verdict.value})", {"ms": result.ms, "verdict": result.verdict.value})


def gpsd_address(config: Config, flag: str | None) -> str | None:
    """The gpsd to check: the flag, else the config's when the unit reads GPS through gpsd."""
    if flag:
        return flag
    gps = config.gps
    if gps.enabled and gps.source.value == "gpsd":
        return f"{gps.gpsd_host}:{gps.gpsd_port}"
    return None


Check = Callable[[], "list[CheckResult]"]


def bounded(name: str, check: Check, timeout_s: float) -> list[CheckResult]:
    """Run `check` in a daemon thread; FAIL "timed out" if it has not returned within `timeout_s` (its thread is
    left to end by itself), FAIL with the exception if it raised."""
    found: list[CheckResult] = []
    done = threading.Event()

    def target() -> None:
        try:
            found.extend(check())
        except Exception as exc:  # noqa: BLE001 - a check that raises is a failed check, never a failed self-test
            log.exception("selftest check %s raised", name)
            found.append(CheckResult(name, CheckStatus.FAIL, f"{type(exc).__name__}: {exc}"))
        finally:
            done.set()
    threading.Thread(target=target, name=f"selftest-{name}", daemon=True).start()
    if not done.wait(timeout_s):
        log.error("selftest check %s timed out after %.1f s", name, timeout_s)
        return [CheckResult(name, CheckStatus.FAIL, f"timed out after {timeout_s:g} s", {"timeout_s": timeout_s})]
    return found


def run_checks(config_path: Path | None, config: Config | None, data_dir: Path, gpsd: str | None,
               now: Callable[[], datetime] = utc_now, user: str | None = None,
               held: frozenset[str] = frozenset(), check_timeout_s: float = CHECK_TIMEOUT_S,
               deadline_s: float = DEADLINE_S) -> list[CheckResult]:
    """`held`: parts a running agent has open (scanner, mcu, camera): reported SKIP rather than opened twice.
    Each check has `check_timeout_s`, all of them together `deadline_s`: a check not started by then reports
    FAIL "timed out" without running."""
    checks: list[tuple[str, Check]] = [("config", lambda: check_config(config_path, user))]
    if config is not None:  # the rest needs a valid config; say so instead of guessing
        checks += _config_checks(config, data_dir, gpsd, now, held, check_timeout_s)
    deadline = time.monotonic() + deadline_s
    results: list[CheckResult] = []
    for name, check in checks:
        left = deadline - time.monotonic()
        if left <= 0:
            results.append(CheckResult(name, CheckStatus.FAIL, f"timed out: the self-test's deadline of "
                                       f"{deadline_s:g} s passed before this check ran", {"deadline_s": deadline_s}))
            continue
        results += bounded(name, check, min(check_timeout_s, left))
    return results


def _held(name: str) -> Check:
    return lambda: [CheckResult(name, CheckStatus.SKIP, "held by the running agent")]


def _with(check: Callable[[Config], CheckResult], config: Config) -> Check:
    return lambda: [check(config)]


def _config_checks(config: Config, data_dir: Path, gpsd: str | None, now: Callable[[], datetime],
                   held: frozenset[str], check_timeout_s: float) -> list[tuple[str, Check]]:
    path = store_path(data_dir)
    checks: list[tuple[str, Check]] = [
        ("data_dir", lambda: [check_data_dir(data_dir, config.store.min_free_mb * 1024 * 1024)]),
        ("store", lambda: [check_store(path)]),
        ("clock", lambda: [check_clock(now(), newest_event_time(path))]),
        ("tflite", lambda: [check_tflite()]),
        ("broker", lambda: [check_broker(config.mqtt)]),
        ("gpsd", lambda: [check_gpsd(gpsd_address(config, gpsd), check_timeout_s)]),
    ]
    hardware: list[tuple[str, Callable[[Config], CheckResult]]] = [
        ("scanner", check_scanner), ("mcu", check_mcu), ("camera", check_camera)]
    for name, check in hardware:
        checks.append((name, _held(name) if name in held else _with(check, config)))
    checks.append(("model", lambda: [check_model(config)]))
    return checks
