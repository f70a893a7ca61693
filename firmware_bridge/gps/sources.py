"""The API the agent uses: an async stream of `Fix` readings from gpsd or from a serial NMEA receiver.

Both reconnect on their own (gpsd restarted, USB receiver unplugged) with a capped backoff, so the agent
just does `async for fix in source:`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Protocol

import serial

from firmware_bridge.fix import Fix
from firmware_bridge.gps.errors import GpsError
from firmware_bridge.gps.gpsd_client import GPSD_DEFAULT_PORT, GpsdClient
from firmware_bridge.gps.nmea_reader import READ_CHUNK, NmeaFixReader

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5  # first reconnect delay after a lost gpsd or serial port
RETRY_MAX_S = 10.0  # cap: a re-plugged receiver is picked up within this
SERIAL_READ_TIMEOUT_S = 0.2  # a read this long without data ends the epoch; also bounds cancellation


class FixSource(Protocol):
    def __aiter__(self) -> AsyncIterator[Fix]: ...


class GpsdSource:
    """Fixes from gpsd's watch stream; reconnects forever (until cancelled)."""

    def __init__(self, host: str = "127.0.0.1", port: int = GPSD_DEFAULT_PORT) -> None:
        self.host = host
        self.port = port
        self.reconnects = 0

    async def __aiter__(self) -> AsyncIterator[Fix]:
        delay = RETRY_FIRST_S
        while True:
            client = GpsdClient(self.host, self.port)
            try:
                async for fix in client.fixes():
                    delay = RETRY_FIRST_S
                    yield fix
            except GpsError as exc:
                log.warning("gpsd source: %s; retrying in %.1f s", exc, delay)
            finally:
                await client.close()
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


class SerialNmeaSource:
    """Fixes parsed from a receiver on a serial port (or pty). pyserial blocks, so reads run in a thread."""

    def __init__(self, port: str, baudrate: int = 9600) -> None:
        self.port = port
        self.baudrate = baudrate
        self.reader = NmeaFixReader()
        self.reconnects = 0

    async def __aiter__(self) -> AsyncIterator[Fix]:
        delay = RETRY_FIRST_S
        while True:
            try:
                link = await asyncio.to_thread(serial.serial_for_url, self.port, baudrate=self.baudrate,
                                               timeout=SERIAL_READ_TIMEOUT_S)
            except (serial.SerialException, OSError) as exc:
                log.warning("NMEA port %s: %s; retrying in %.1f s", self.port, exc, delay)
            else:
                delay = RETRY_FIRST_S
                try:
                    while True:
                        data = await asyncio.to_thread(link.read, READ_CHUNK)
                        if data:
                            for fix in self.reader.feed(data):
                                yield fix
                            continue
                        # A quiet line: the receiver has sent its epoch, so end it now rather than
                        # when the next second's first sentence arrives.
                        last = self.reader.flush()
                        if last is not None:
                            yield last
                except (serial.SerialException, OSError) as exc:
                    log.warning("NMEA port %s lost: %s", self.port, exc)
                finally:
                    link.close()
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
