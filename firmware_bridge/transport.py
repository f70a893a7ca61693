"""Serial ports as asyncio transports, reopened automatically when a USB device goes and comes back.

pyserial opens the port (a real device, a /dev/serial/by-id/... link or a pty); pyserial-asyncio-fast
drives it from the event loop with add_reader/add_writer on the port's file descriptor, so reads never
block the loop. The protocol object is injected: the scanner reader, the MCU link and tests' protocols
all run over the same code, and a pty stands in for a real port.
"""
from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

import serial
import serial_asyncio_fast

from firmware_bridge.errors import TransportError

log = logging.getLogger(__name__)

# How often a missing port is retried: short enough to reconnect well within 2 s of a replug, long enough
# not to spin on a port that is gone for hours.
REOPEN_INTERVAL_S = 0.2


@dataclass(frozen=True)
class PortSettings:
    path: str  # /dev/ttyACM0, /dev/serial/by-id/..., or a pty
    baudrate: int = 115200
    reopen_interval_s: float = REOPEN_INTERVAL_S
    # Read timeout: no byte for this long means a hung device (for sources that talk all the time, like a
    # GPS receiver): the port is closed and reopened. None for devices that may be quiet (a scanner).
    idle_timeout_s: float | None = None


class PortState(enum.StrEnum):
    WAITING = "waiting"  # the device is not there (yet); retrying
    CONNECTED = "connected"
    CLOSED = "closed"


class _LoopSerial(serial.Serial):
    """pyserial's Serial as the event loop drives it, with two changes.

    - pyserial empties the input queue when it opens a port. Right after a replug that queue holds the
      device's first output (a scan sent as the port came back), so it is kept; later resets still work.
    - The transport reads only when the loop saw the port readable, with timeout 0. pyserial's read then
      costs three system calls (select, read, select again to find nothing more); one read does the same
      job (the MCU link reads once per exchange of frames, so this is per-message cost). Its errors stay
      pyserial's: no data from a readable port (unplugged) and failed reads raise SerialException.
    """

    def _reset_input_buffer(self) -> None:
        if self.is_open:
            super()._reset_input_buffer()  # type: ignore[misc]  # private in pyserial, absent from its stubs

    def read(self, size: int = 1) -> bytes:
        fd = self.fd if self.is_open else None
        if self.timeout != 0 or fd is None:
            return super().read(size)
        try:
            data = os.read(fd, size)  # the port is opened O_NONBLOCK by pyserial
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):  # nothing to read after all
                return b""
            raise serial.SerialException(f"read failed: {exc}") from exc
        if not data:
            raise serial.SerialException("device reports readiness to read but returned no data "
                                         "(device disconnected or multiple access on port?)")
        return data


async def open_port(settings: PortSettings,
                    protocol_factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
    """Open the port once; pyserial's errors become TransportError."""
    loop = asyncio.get_running_loop()
    try:
        port = await loop.run_in_executor(None, lambda: _LoopSerial(settings.path, settings.baudrate))
    except (serial.SerialException, OSError, ValueError) as exc:
        raise TransportError(f"cannot open {settings.path}: {exc}") from exc
    transport, _ = await serial_asyncio_fast.connection_for_serial(loop, protocol_factory, port)
    return transport


class _Watch(asyncio.Protocol):
    """Passes everything to the real protocol and tells the supervisor when the port is lost."""

    def __init__(self, inner: asyncio.Protocol, lost: asyncio.Future[Exception | None]) -> None:
        self._inner = inner
        self._lost = lost
        self.last_rx = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self._inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            if not self._lost.done():
                self._lost.set_result(exc)


class ReconnectingPort:
    """Keeps a serial port open: opens it, waits for it to be lost, reopens it; logs each transition.

    `protocol_factory` is called for every connection (a fresh protocol per connection, or the same
    long-lived object). Run with `start()`/`close()` or `async with`.
    """

    def __init__(self, settings: PortSettings, protocol_factory: Callable[[], asyncio.Protocol],
                 on_state: Callable[[PortState], None] | None = None) -> None:
        self.settings = settings
        self._factory = protocol_factory
        self._on_state = on_state
        self.state = PortState.CLOSED
        self.connects = 0
        self.losses = 0
        self.idle_reopens = 0
        self._watch_current: _Watch | None = None
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._connected = asyncio.Event()

    def _set_state(self, state: PortState) -> None:
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    def start(self) -> ReconnectingPort:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"port {self.settings.path}")
        return self

    async def wait_connected(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._set_state(PortState.CLOSED)

    async def __aenter__(self) -> ReconnectingPort:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _watch(self, lost: asyncio.Future[Exception | None]) -> _Watch:
        self._watch_current = _Watch(self._factory(), lost)
        return self._watch_current

    async def _wait_lost(self, lost: asyncio.Future[Exception | None]) -> Exception | None:
        """Wait for the port to go; with an idle timeout, close it ourselves when it stops talking."""
        idle_s = self.settings.idle_timeout_s
        while idle_s is not None and self._watch_current is not None:
            remaining = self._watch_current.last_rx + idle_s - time.monotonic()
            if remaining <= 0:
                self.idle_reopens += 1
                log.warning("serial %s: nothing read for %.1f s, reopening", self.settings.path, idle_s)
                if self._transport is not None:
                    self._transport.abort()
                break
            try:
                async with asyncio.timeout(remaining):
                    return await asyncio.shield(lost)
            except TimeoutError:
                continue
        return await lost

    async def _run(self) -> None:
        path = self.settings.path
        waiting_logged = False
        lost: asyncio.Future[Exception | None] | None = None
        try:
            while True:
                lost = asyncio.get_running_loop().create_future()
                try:
                    self._transport = await open_port(self.settings, partial(self._watch, lost))
                except TransportError as exc:
                    if not waiting_logged:
                        log.warning("serial %s: not available, retrying every %.1f s (%s)",
                                    path, self.settings.reopen_interval_s, exc)
                        waiting_logged = True
                    self._set_state(PortState.WAITING)
                    await asyncio.sleep(self.settings.reopen_interval_s)
                    continue
                waiting_logged = False
                self.connects += 1
                log.info("serial %s: connected (connection %d)", path, self.connects)
                self._connected.set()
                self._set_state(PortState.CONNECTED)
                reason = await self._wait_lost(lost)
                self._connected.clear()
                self._transport = None
                self.losses += 1
                log.warning("serial %s: disconnected (%s)", path, reason or "closed")
                self._set_state(PortState.WAITING)
        finally:
            self._connected.clear()
            transport, self._transport = self._transport, None
            if transport is not None and lost is not None:
                transport.close()
                # pyserial-asyncio closes the port in a background task: wait so no task outlives us.
                try:
                    async with asyncio.timeout(2.0):
                        await lost
                except TimeoutError:
                    log.warning("serial %s: close did not finish within 2 s", path)
