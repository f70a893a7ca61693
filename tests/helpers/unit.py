"""The agent supervised the way its systemd unit does it (systemd is not PID 1 here): the unit file's own
ExecStartPre and ExecStart commands, its Environment with FLEXEDGE_CONFIG pointing at the test's config, started
again after every exit (`Restart=always`) except the codes in RestartPreventExitStatus, after RestartSec scaled
down for a test. A command prefixed with "-" may fail without failing the start (as systemd does).

Paths: by default every `flexedge` the unit names (the installer's and the releases' `current`) is this
checkout's; with `installed=` the unit's /opt/flexedge is that folder (a real installed release with its venv)
and its /var/lib/flexedge/releases the test's releases folder, so each release runs from its own venv."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT_FILE = REPO / "systemd" / "flexedge.service"
INSTALLED_PREFIX = "/opt/flexedge"
INSTALLED_FLEXEDGE = f"{INSTALLED_PREFIX}/venv/bin/flexedge"
RELEASES_DIR = "/var/lib/flexedge/releases"
CURRENT_FLEXEDGE = f"{RELEASES_DIR}/current/venv/bin/flexedge"


@dataclass(frozen=True)
class UnitCommands:
    pre: tuple[tuple[tuple[str, ...], bool], ...]  # (argv, a failure is ignored: the unit's "-" prefix)
    start: tuple[str, ...]
    environment: dict[str, str]
    restart: str
    prevent_restart: frozenset[int]


def read_unit(path: Path = UNIT_FILE, *, releases: Path, installed: Path | None = None) -> UnitCommands:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values.setdefault(key.strip(), []).append(value.strip())
    here = (sys.executable, "-m", "device.cli")

    def command(text: str) -> tuple[str, ...]:
        words = [w.replace(RELEASES_DIR, str(releases)) for w in shlex.split(text.lstrip("-"))]
        if installed is not None:
            return tuple(w.replace(INSTALLED_PREFIX, str(installed)) for w in words)
        assert shlex.split(text.lstrip("-"))[0] in (INSTALLED_FLEXEDGE, CURRENT_FLEXEDGE), \
            f"the unit runs {words[0]}, not an installed flexedge"
        return (*here, *words[1:])
    environment = dict(item.split("=", 1) for line in values.get("Environment", []) for item in shlex.split(line))
    return UnitCommands(tuple((command(c), c.startswith("-")) for c in values.get("ExecStartPre", [])),
                        command(values["ExecStart"][0]),
                        environment, values["Restart"][0],
                        frozenset(int(c) for line in values.get("RestartPreventExitStatus", []) for c in line.split()))


@dataclass
class UnitSupervisor:
    """`start()`, then `stop()` (as the unit is stopped: SIGTERM, no restart). `exits`: each run's exit code."""

    config: Path
    log_path: Path
    restart_sec: float = 0.5  # the unit's RestartSec (10 s), scaled down for a test
    installed: Path | None = None  # None: this checkout runs every command; else the unit's /opt/flexedge
    releases: Path | None = None  # the unit's releases folder (default: beside the config)
    exits: list[int] = field(default_factory=list)
    starts: int = 0

    def __post_init__(self) -> None:
        self.unit = read_unit(releases=self.releases or self.config.parent / "releases", installed=self.installed)
        assert self.unit.restart == "always"
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="unit-supervisor", daemon=True)
        self.env = {**os.environ, **self.unit.environment, "FLEXEDGE_CONFIG": str(self.config)}
        self.cwd = REPO
        if self.installed is not None:  # the releases' own code only: nothing of this checkout on the path
            self.env.pop("PYTHONPATH", None)
            self.cwd = self.config.parent

    def start(self) -> UnitSupervisor:
        self._thread.start()
        return self

    def _run(self, command: tuple[str, ...]) -> int:
        with open(self.log_path, "ab") as log, self._lock:
            if self._stopping.is_set():
                return -1
            self._child = subprocess.Popen(command, env=self.env, cwd=self.cwd, stdout=log, stderr=log)
        code = self._child.wait()
        return code

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            code = 0
            for pre, may_fail in self.unit.pre:
                code = self._run(pre)
                if code != 0 and not may_fail:
                    break
                code = 0
            if code == 0:
                self.starts += 1
                code = self._run(self.unit.start)
            self.exits.append(code)
            if code in self.unit.prevent_restart:
                return
            self._stopping.wait(self.restart_sec)

    def wait_exits(self, count: int, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while len(self.exits) < count:
            assert time.monotonic() < deadline, f"the agent exited {len(self.exits)} times, not {count}"
            time.sleep(0.1)
        return list(self.exits)

    def kill(self) -> int:
        """SIGKILL the running agent (a crash, a power cut); the supervision starts it again. Its pid."""
        with self._lock:
            child = self._child
        assert child is not None and child.poll() is None, "no agent running"
        child.send_signal(signal.SIGKILL)
        return child.pid

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            self._stopping.set()
            child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout_s)
        self._thread.join(timeout_s)
