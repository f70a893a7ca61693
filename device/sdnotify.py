"""A minimal sd_notify(3) client: datagrams to $NOTIFY_SOCKET (READY=1, WATCHDOG=1, STATUS=..., STOPPING=1).

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the agent runs the same everywhere. An abstract
socket name starts with '@' (Linux), sent as a leading NUL byte.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = int(env.get("WATCHDOG_USEC", "0") or 0)  # set by WatchdogSec=
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def watchdog_interval_s(self) -> float | None:
        """How often to pet the watchdog: half of WatchdogSec, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *assignments: str) -> bool:
        if not self.address:
            return False
        message = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:  # systemd gone or socket not ours: never fatal for the agent
            self.failed += 1
            log.warning("sd_notify to %r failed: %r", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text.splitlines()[0] if text else ''}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


async def pet_watchdog(notifier: Notifier, healthy: Callable[[], bool], interval_s: float | None = None) -> None:
    """Send WATCHDOG=1 every interval while `healthy()` says so; when it does not, stay silent so that
    systemd restarts a stuck agent (WatchdogSec=). Runs until cancelled; a no-op outside systemd."""
    interval = interval_s or notifier.watchdog_interval_s()
    if not notifier.enabled or not interval:
        return
    was_healthy = True
    while True:
        try:
            is_healthy = bool(healthy())
        except Exception:  # a failing health probe is an unhealthy agent, not a crashed watchdog
            log.exception("health probe failed")
            is_healthy = False
        if is_healthy:
            notifier.watchdog()
        elif was_healthy:
            log.error("agent unhealthy: watchdog no longer petted, systemd will restart the service")
        was_healthy = is_healthy
        await asyncio.sleep(interval)
