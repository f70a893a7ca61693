"""A real mosquitto broker run by the demo and the tests: its own config, port and persistence directory."""
from __future__ import annotations

import getpass
import logging
import signal
import subprocess
from pathlib import Path

from device.testbench.procs import end_process_group, free_tcp_port, require_program, wait_for_port

log = logging.getLogger(__name__)


class MosquittoBroker:
    """Start/stop/kill handle for fault tests. `extra_config` lines are appended to the listener config
    (TLS, ACL); the default listener allows anonymous clients on loopback only."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra_config: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_tcp_port()
        self.extra_config = extra_config
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.workdir / 'data'}/",
            "autosave_interval 1",  # save the persistence file often: fault tests restart the broker
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type subscribe",
            "max_queued_messages 100000",
            # Run as whoever started us: as root, mosquitto would otherwise switch to its own user and lose
            # access to our private work directory (keys, ACL, persistence).
            f"user {getpass.getuser()}",
        ]
        lines.append(self.extra_config if self.extra_config is not None else "allow_anonymous true")
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self) -> MosquittoBroker:
        binary = require_program("mosquitto", "mosquitto")
        self.write_config()
        self._proc = subprocess.Popen([binary, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port(self.port, timeout_s=10)
        except TimeoutError:
            self.kill()
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {tail}") from None
        log.info("mosquitto listening on 127.0.0.1:%d", self.port)
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """A clean shutdown: mosquitto saves its persistence file."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved beyond the last autosave."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal(self, sig: int) -> None:
        if self._proc is None:
            return
        end_process_group(self._proc, sig)
        self._proc = None

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
