"""Debian's mosquitto as its systemd unit runs it: started as root with a main config like Debian's
/etc/mosquitto/mosquitto.conf (include_dir conf.d), so it drops to the `mosquitto` user before it reads the
drop-in's certificates. The directories it reads must be open to that user: `open_tmpdir()`."""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from device.testbench.procs import end_process_group, require_program, wait_for_port


@contextlib.contextmanager
def open_tmpdir() -> Iterator[Path]:
    """A temporary directory under /tmp that other users may enter (pytest's are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="flexedge-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class DebianMosquitto:
    def __init__(self, conf_dir: Path, port: int) -> None:
        self.conf_dir = conf_dir
        self.port = port
        self.main_conf = conf_dir / "mosquitto.conf"
        self.log_path = conf_dir / "mosquitto.stderr"
        self._proc: subprocess.Popen | None = None

    def write_main_config(self) -> None:
        """Debian's main config, with this test's directories (persistence in a mosquitto-owned one)."""
        data = self.conf_dir / "lib"
        data.mkdir(exist_ok=True)
        entry = pwd.getpwnam("mosquitto")
        os.chown(data, entry.pw_uid, entry.pw_gid)
        self.main_conf.write_text(f"persistence true\npersistence_location {data}/\nlog_dest stderr\n"
                                  f"include_dir {self.conf_dir / 'conf.d'}\n")

    def start(self) -> DebianMosquitto:
        binary = require_program("mosquitto", "mosquitto")
        self.write_main_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([binary, "-c", str(self.main_conf)], stdout=log, stderr=log,
                                          start_new_session=True)
        try:
            wait_for_port(self.port, timeout_s=10)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()[-2000:]}") from None
        return self

    def uid(self) -> int:
        """The process's real uid now (after mosquitto dropped its privileges)."""
        assert self._proc is not None
        for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
        raise AssertionError("no Uid line")

    def stop(self) -> None:
        if self._proc is not None:
            end_process_group(self._proc, signal.SIGTERM)
            self._proc = None

    def __enter__(self) -> DebianMosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
