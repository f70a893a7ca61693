"""`flexedge sim gps` and `flexedge nmea` together; config-built trackers."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from device.cli import main
from device.config import load_config
from device.contract.domain import Package, Stop
from device.positioning import Arrived, Departed, setup
from device.positioning.geo import offset
from firmware_bridge.fix import Fix, FixMode
from firmware_bridge.gps.sources import GpsdSource, SerialNmeaSource


def write_route(path: Path, n: int = 3) -> list[dict]:
    stops, lat, lon = [], 52.37, 4.89
    for i in range(n):
        lat, lon = offset(lat, lon, 400.0, 150.0)
        stops.append({"id": f"S{i + 1}", "lat": lat, "lon": lon})
    path.write_text(json.dumps({"block_id": "B1", "version": 1, "stops": stops}))
    return stops


def test_sim_log_round_trips_through_the_nmea_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = tmp_path / "route.json"
    write_route(route)
    log = tmp_path / "drive.log"
    assert main(["sim", "gps", "--route", str(route), "--out", str(log), "--parked-s", "30",
                 "--tunnel-at", "20", "--tunnel-s", "10"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["log"] == str(log) and written["epochs"] > 100
    assert main(["nmea", str(log), "--json"]) == 0
    out, err = capsys.readouterr()
    tpvs = [json.loads(line) for line in out.splitlines()]
    assert len(tpvs) == written["epochs"]
    assert sum(1 for t in tpvs if t["mode"] == 1) == 10  # the tunnel
    assert all(t["mode"] == 3 and {"time", "lat", "lon", "alt", "speed", "track"} <= set(t)
               for t in tpvs if t["mode"] != 1)
    assert json.loads(err.strip().splitlines()[-1])["summary"]["rejected"] == 0


def test_sim_pty_serves_a_receiver(tmp_path: Path) -> None:
    route = tmp_path / "route.json"
    write_route(route)
    proc = subprocess.Popen([sys.executable, "-m", "device.cli", "sim", "gps", "--route", str(route), "--pty",
                             "--speedup", "20"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = json.loads(proc.stdout.readline())["pty"]

        async def first(n: int) -> list[Fix]:
            got = []
            async for fix in SerialNmeaSource(port):
                got.append(fix)
                if len(got) == n:
                    return got
            return got

        fixes = asyncio.run(asyncio.wait_for(first(5), 30))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert [f.mode for f in fixes] == [3] * 5
    times = [f.time for f in fixes]
    assert all((b - a).total_seconds() == 1.0 for a, b in zip(times, times[1:]))


def test_tracker_from_config_takes_domain_stops(tmp_path: Path) -> None:
    cfg = tmp_path / "flexedge.toml"
    cfg.write_text("[gps]\ndwell_s = 5.0\nsource = \"serial\"\nserial_port = \"/dev/ttyUSB3\"\n")
    gps = load_config(cfg).gps
    assert isinstance(setup.fix_source(gps), SerialNmeaSource)
    assert isinstance(setup.fix_source(load_config(None).gps), GpsdSource)
    stop = Stop("S1", "1 Main St", "1", 52.37, 4.89, (Package("P1"),))
    tracker = setup.tracker(gps, [stop])
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    events = [ev for i in range(8)
              for ev in tracker.feed(Fix(t0 + timedelta(seconds=i), 52.37, 4.89, FixMode.FIX_3D, speed=0.0))]
    assert [ev.stop_id for ev in events if isinstance(ev, Arrived)] == ["S1"]


def test_sim_gpsfake_drive_gives_arrivals_through_a_real_gpsd(tmp_path: Path) -> None:
    route = tmp_path / "route.json"
    stops = write_route(route, n=3)
    proc = subprocess.Popen([sys.executable, "-m", "device.cli", "sim", "gps", "--route", str(route), "--gpsfake",
                             "--speedup", "100", "--parked-s", "40", "--jitter-m", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = json.loads(proc.stdout.readline())["gpsd_port"]
        gps = load_config(None).gps
        tracker = setup.tracker(gps, [Stop(s["id"], s["id"], "1", s["lat"], s["lon"], (Package(f"P{s['id']}"),))
                                      for s in stops])

        async def visits() -> list[tuple[str, str]]:
            seen = []
            async for fix in GpsdSource("127.0.0.1", port):
                for ev in tracker.feed(fix):
                    if isinstance(ev, (Arrived, Departed)):
                        seen.append((type(ev).__name__, ev.stop_id))
                if len(seen) == 6:
                    return seen
            return seen

        seen = asyncio.run(asyncio.wait_for(visits(), 90))
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        proc.stdout.close()
    assert seen == [(kind, s["id"]) for s in stops for kind in ("Arrived", "Departed")]
    assert proc.returncode == 0  # SIGTERM unwound cleanly (gpsfake and gpsd stopped)
