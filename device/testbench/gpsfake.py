"""A real gpsd fed by gpsfake from an NMEA log, on a chosen loopback port."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from device.testbench.procs import end_process_group, free_tcp_port, require_program, wait_for_port

log = logging.getLogger(__name__)


class GpsFake:
    """`gpsfake -1 -q -P PORT LOG`: gpsd serves the log's fixes to clients on `port`, once through."""

    def __init__(self, logfile: Path | str, *, port: int | None = None, cycle_s: float = 0.02,
                 loop: bool = False) -> None:
        self.logfile = Path(logfile)
        self.port = port or free_tcp_port()
        self.cycle_s = cycle_s
        self.loop = loop
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GpsFake:
        gpsfake = require_program("gpsfake", "gpsd-clients")
        require_program("gpsd", "gpsd")
        args = [gpsfake, "-q", "-P", str(self.port)]
        if not self.loop:
            args.append("-1")
        # A cycle of 0 floods gpsd faster than it hands out reports; a small delay keeps every epoch.
        args += ["-c", str(self.cycle_s)]
        args.append(str(self.logfile))
        env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                      start_new_session=True)
        try:
            wait_for_port(self.port, timeout_s=15)
        except TimeoutError:
            self.stop()
            raise
        log.info("gpsfake serving %s on port %d", self.logfile.name, self.port)
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        end_process_group(self._proc, timeout_s=5)
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> GpsFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
