"""gpsd client over gpsd's own JSON protocol: `?WATCH={"enable":true,"json":true}`, then one TPV per epoch.

Why not gpsd-py3: it keeps its socket in module globals (one connection per process, no clean close),
only polls (`?POLL;` returns the latest fix, so epochs between polls are lost, and the same fix comes back
twice), raises a bare `UserWarning` until gpsd has data, and does not expose `eph`. The watch stream is
a dozen lines of asyncio and gives every epoch with gpsd's own field names, which `Fix.from_dict` reads.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from firmware_bridge.fix import Fix, FixError
from firmware_bridge.gps.errors import GpsdProtocolError, GpsdUnavailable

log = logging.getLogger(__name__)

GPSD_DEFAULT_PORT = 2947
WATCH_COMMAND = b'?WATCH={"enable":true,"json":true};\n'
MAX_REPORT_BYTES = 64 * 1024  # gpsd's largest reports (SKY with many satellites) are a few kB
TPV_FIELDS = ("time", "lat", "lon", "mode", "alt", "speed", "track", "eph")


def tpv_to_fix(report: dict[str, Any]) -> Fix:
    """A gpsd TPV report to a `Fix`; gpsd 3.20+ sends `altMSL` (and `alt` only for old clients)."""
    fields = {k: report[k] for k in TPV_FIELDS if k in report}
    if "alt" not in fields and "altMSL" in report:
        fields["alt"] = report["altMSL"]
    if fields.get("mode", 0) < 2:
        fields.pop("lat", None)
        fields.pop("lon", None)
    try:
        return Fix.from_dict(fields)
    except (FixError, ValueError, TypeError, AttributeError) as exc:
        raise GpsdProtocolError(f"bad TPV: {exc}") from exc


@dataclass
class GpsdCounters:
    reports: int = 0
    fixes: int = 0
    repeats: int = 0  # gpsd re-sends the epoch's TPV as each sentence arrives; exact repeats are dropped
    rejected: int = 0  # lines that were not valid JSON reports or bad TPVs


class GpsdClient:
    """One watch connection to gpsd. `async for fix in client.fixes()` until gpsd goes away."""

    def __init__(self, host: str = "127.0.0.1", port: int = GPSD_DEFAULT_PORT, *,
                 connect_timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.counters = GpsdCounters()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        try:
            self._reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_REPORT_BYTES),
                self.connect_timeout_s)
            self._writer = writer
            writer.write(WATCH_COMMAND)
            await writer.drain()
        except (OSError, asyncio.TimeoutError) as exc:
            raise GpsdUnavailable(f"gpsd at {self.host}:{self.port}: {exc}") from exc
        log.info("watching gpsd at %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = self._reader = None

    async def reports(self) -> AsyncIterator[dict[str, Any]]:
        """Every JSON report gpsd sends (VERSION, DEVICES, WATCH, TPV, SKY, ...). Bad lines are counted."""
        if self._reader is None:
            await self.connect()
        reader = self._reader
        if reader is None:
            raise GpsdUnavailable("not connected")
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError) as exc:  # ValueError: line over the limit
                raise GpsdUnavailable(f"gpsd read failed: {exc}") from exc
            if not line:
                raise GpsdUnavailable("gpsd closed the connection")
            try:
                report = json.loads(line)
            except ValueError:
                self.counters.rejected += 1
                log.warning("gpsd sent a line that is not JSON: %r", line[:80])
                continue
            if not isinstance(report, dict):
                self.counters.rejected += 1
                continue
            self.counters.reports += 1
            yield report

    async def fixes(self) -> AsyncIterator[Fix]:
        """TPV reports as `Fix` readings, in gpsd's order, without exact repeats."""
        last: Fix | None = None
        async for report in self.reports():
            if report.get("class") != "TPV":
                continue
            try:
                fix = tpv_to_fix(report)
            except GpsdProtocolError as exc:
                self.counters.rejected += 1
                log.warning("%s", exc)
                continue
            if fix == last:
                self.counters.repeats += 1
                continue
            last = fix
            self.counters.fixes += 1
            yield fix

    async def __aenter__(self) -> GpsdClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
