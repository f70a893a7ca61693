"""A real gpsd, fed by gpsfake, and our JSON-watch client: fixes must match the log's own RMC positions.

gpsfake feeds its log from the moment it starts, whether or not a client watches yet; a machine under load can
take seconds to get the watch in place, and the epochs fed before it are gone. So the logs loop and the checks
read a whole pass of the log from its start (the first restart the client sees), however late they joined."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pynmeagps

from device.testbench.gps_route import DriveConfig, SimStop, drive, write_log
from firmware_bridge.fix import Fix, FixMode
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


async def one_pass(port: int, first: datetime, last: datetime, timeout_s: float = 60.0) -> list[Fix]:
    """The fixes of one whole pass of a looping log, epochs `first` to `last`: from the first epoch if the watch
    began in time, else from the log's next restart (its clock goes back)."""
    fixes: list[Fix] = []

    async def run() -> None:
        inside, previous = False, None
        async with GpsdClient("127.0.0.1", port) as client:
            async for fix in client.fixes():
                if fix.time is None:
                    continue
                moment = undo_rollover(fix.time)
                if moment == first if previous is None else moment < previous:
                    inside = True
                    fixes.clear()
                previous = moment
                if inside:
                    fixes.append(fix)
                    if moment >= last:
                        return

    await asyncio.wait_for(run(), timeout_s)
    return fixes


def test_client_receives_the_logs_rmc_positions(gpsfake, testdata: Path) -> None:  # noqa: ANN001
    log = testdata / LOG
    expected = rmc_positions(log)
    fake = gpsfake(log, cycle_s=0.05, loop=True)
    fixes = asyncio.run(one_pass(fake.port, min(expected), max(expected)))
    reports: dict[datetime, list[Fix]] = {}
    for fix in fixes:
        if fix.time is not None and fix.has_position:
            reports.setdefault(undo_rollover(fix.time), []).append(fix)
    # Every RMC epoch of a whole pass arrives, every report of it at the log's position.
    assert sorted(set(expected) - set(reports)) == []
    for t, (lat, lon) in expected.items():
        assert all(abs(f.lat - lat) < 1e-6 and abs(f.lon - lon) < 1e-6 for f in reports[t]), reports[t]
        # gpsd may report an epoch again as its sentences come in (GGA, GSA, RMC); the last of those is not
        # always the fullest under load, but the epoch's 3D fix with its error estimate is among them.
        assert any(f.mode is FixMode.FIX_3D and f.eph is not None for f in reports[t]), reports[t]


def test_source_reads_the_simulated_drive_through_gpsd(gpsfake, tmp_path: Path) -> None:  # noqa: ANN001
    stops = [SimStop("A", 52.37, 4.89), SimStop("B", 52.371, 4.892)]
    cfg = DriveConfig(parked_s=3)
    epochs = list(drive(stops, cfg))[:60]
    log = tmp_path / "drive.log"
    write_log(log, epochs, cfg)
    fake = gpsfake(log, cycle_s=0.02, loop=True)  # a late watch still sees 30 epochs
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
