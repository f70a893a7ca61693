"""A real gpsd, fed by gpsfake, and our JSON-watch client: fixes must match the log's own RMC positions."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pynmeagps

from device.testbench.gps_route import DriveConfig, SimStop, drive, write_log
from firmware_bridge.fix import FixMode
from firmware_bridge.gps import GpsdClient, GpsdSource

LOG = "gps/gpsd-test-daemon/mt3339.log"
# gpsd 3.22 (Debian 12) guesses a GPS week rollover for this 2015 capture and reports it 1024 weeks later.
ROLLOVER = timedelta(weeks=1024)


def undo_rollover(moment: datetime) -> datetime:
    return moment - ROLLOVER if moment.year >= 2030 else moment


def rmc_positions(path: Path) -> dict[datetime, tuple[float, float]]:
    out = {}
    for line in path.read_bytes().splitlines():
        if b"RMC," not in line or line.startswith(b"#"):
            continue
        msg = pynmeagps.NMEAReader.parse(line)
        if msg.status == "A":
            out[datetime.combine(msg.date, msg.time, tzinfo=timezone.utc)] = (msg.lat, msg.lon)
    return out


async def collect(port: int, until: datetime, timeout_s: float = 60.0) -> list:
    fixes = []

    async def run() -> None:
        async with GpsdClient("127.0.0.1", port) as client:
            async for fix in client.fixes():
                fixes.append(fix)
                if fix.time is not None and undo_rollover(fix.time) >= until:
                    return

    await asyncio.wait_for(run(), timeout_s)
    return fixes


def test_client_receives_the_logs_rmc_positions(gpsfake, testdata: Path) -> None:  # noqa: ANN001
    log = testdata / LOG
    expected = rmc_positions(log)
    fake = gpsfake(log, cycle_s=0.05)
    fixes = asyncio.run(collect(fake.port, until=max(expected)))
    timed = {undo_rollover(f.time): f for f in fixes if f.time is not None and f.has_position}
    matched = [t for t in expected if t in timed]
    # gpsfake starts feeding gpsd before our watch is set up, so the first few epochs may be gone;
    # after that, every RMC epoch of the log must arrive.
    missing = sorted(set(expected) - set(matched))
    assert len(matched) >= len(expected) - 6, (len(matched), len(expected))
    assert all(t < min(matched) for t in missing), missing
    for t in matched:
        lat, lon = expected[t]
        assert abs(timed[t].lat - lat) < 1e-6 and abs(timed[t].lon - lon) < 1e-6
        assert timed[t].mode is FixMode.FIX_3D and timed[t].eph is not None


def test_source_reads_the_simulated_drive_through_gpsd(gpsfake, tmp_path: Path) -> None:  # noqa: ANN001
    stops = [SimStop("A", 52.37, 4.89), SimStop("B", 52.371, 4.892)]
    cfg = DriveConfig(parked_s=3)
    epochs = list(drive(stops, cfg))[:60]
    log = tmp_path / "drive.log"
    write_log(log, epochs, cfg)
    fake = gpsfake(log, cycle_s=0.02)
    sent = {e.time: e.fix for e in epochs}

    async def first_fixes(n: int) -> list:
        got = []
        async for fix in GpsdSource("127.0.0.1", fake.port):
            if fix.time is not None and fix.has_position:
                got.append(fix)
            if len(got) >= n:
                return got
        return got

    fixes = asyncio.run(asyncio.wait_for(first_fixes(30), 60))
    for fix in fixes:
        assert abs(fix.lat - sent[fix.time].lat) < 1e-6 and abs(fix.lon - sent[fix.time].lon) < 1e-6
