"""Running helper programs (mosquitto, gpsd/gpsfake, socat) for simulations and tests."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any


class ProgramMissing(RuntimeError):
    """A program a simulation needs is not installed; the message says which package provides it."""


def require_program(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise ProgramMissing(f"'{name}' not found: install the Debian package '{package}' "
                             f"(apt-get install -y {package}), or run tools/bootstrap.sh")
    return path


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # typeshed: Any (the address's shape depends on the family)
        return port


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s") from None
            time.sleep(0.05)


def end_process_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Send `sig` to a helper started with start_new_session=True (it and its children), wait, then SIGKILL."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
