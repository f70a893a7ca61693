"""A van driving a route, as NMEA: realistic speeds, stops with parked jitter, an optional tunnel gap.

`drive()` yields one `SimEpoch` per second of simulated time (the true position, what the receiver
reports, and whether it has a fix); `epoch_sentences()` renders one as RMC, GGA, GSA, VTG and GST. The
output feeds a pty (the NMEA fallback) with `feed_pty()`, or gpsd through gpsfake with `write_log()`.
Simulated time comes from `start`, never the wall clock, so tests can run it faster than real time.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pynmeagps

from firmware_bridge.fix import Fix, FixMode

EARTH_RADIUS_M = 6_371_008.8
MPS_TO_KNOTS = 3600.0 / 1852.0
SENTENCES_PER_FIX_EPOCH = 5  # RMC, GGA, GSA, VTG, GST


@dataclass(frozen=True)
class SimStop:
    id: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Tunnel:
    start_s: float  # seconds into the drive
    duration_s: float = 60.0


@dataclass(frozen=True)
class DriveConfig:
    cruise_mps: float = 11.0  # about 40 km/h in town
    accel_mps2: float = 1.2  # gentle van acceleration and braking
    parked_s: float = 120.0  # time at each stop
    parked_jitter_m: float = 30.0  # receiver wander while parked (multipath next to buildings)
    moving_noise_m: float = 2.0  # receiver noise while driving
    hdop: float = 0.9
    satellites: int = 9
    tunnel: Tunnel | None = None
    spikes_at_s: tuple[int, ...] = ()  # urban-canyon multipath: the position is off by spike_m for 1 s
    spike_m: float = 400.0
    seed: int = 1
    start: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc))


@dataclass(frozen=True)
class SimEpoch:
    time: datetime
    fix: Fix  # what the receiver reports (NO_FIX in the tunnel)
    true_lat: float
    true_lon: float
    parked_at: str | None  # stop id while parked


def load_stops(path: Path | str) -> list[SimStop]:
    """A JSON file: a list of {id, lat, lon}, or a route {"stops": [...]} as the cloud sends it."""
    raw: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    items = raw["stops"] if isinstance(raw, dict) else raw
    return [SimStop(str(s["id"]), float(s["lat"]), float(s["lon"])) for s in items]


def _xy(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    return (lon - lon0) * kx, (lat - lat0) * math.radians(1) * EARTH_RADIUS_M


def _latlon(lat0: float, lon0: float, x: float, y: float) -> tuple[float, float]:
    kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
    return lat0 + y / (math.radians(1) * EARTH_RADIUS_M), lon0 + x / kx


def _legs(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """Town streets: each leg goes east-west first, then north-south (one corner per leg)."""
    legs = []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        legs.append([(x0, y0), (x1, y0), (x1, y1)])
    return legs


def _speed_profile(length: float, cfg: DriveConfig) -> Iterator[float]:
    """Distance along a leg at each 1 s tick: accelerate, cruise, brake to a stop at the end."""
    s, v = 0.0, 0.0
    while s < length:
        braking_distance = v * v / (2 * cfg.accel_mps2)
        if length - s <= braking_distance + v:
            v = max(1.0, v - cfg.accel_mps2)
        else:
            v = min(cfg.cruise_mps, v + cfg.accel_mps2)
        s = min(length, s + v)
        yield s


def drive(stops: Sequence[SimStop], config: DriveConfig | None = None,
          depot: tuple[float, float] | None = None) -> Iterator[SimEpoch]:
    """From the depot (default: 500 m south-west of the first stop) through every stop in order."""
    cfg = config or DriveConfig()
    rng = random.Random(cfg.seed)
    lat0, lon0 = stops[0].lat, stops[0].lon
    start_xy = _xy(lat0, lon0, *depot) if depot else (-500.0, -500.0)
    stop_xy = [_xy(lat0, lon0, s.lat, s.lon) for s in stops]
    tick = 0
    prev = start_xy

    def emit(x: float, y: float, speed: float, heading: float, parked: str | None,
             error: tuple[float, float]) -> SimEpoch:
        nonlocal tick
        moment = cfg.start + timedelta(seconds=tick)
        tunnel = cfg.tunnel
        in_tunnel = tunnel is not None and tunnel.start_s <= tick < tunnel.start_s + tunnel.duration_s
        if tick in cfg.spikes_at_s:
            error = (error[0] + cfg.spike_m, error[1])
        tick += 1
        true_lat, true_lon = _latlon(lat0, lon0, x, y)
        if in_tunnel:
            return SimEpoch(moment, Fix(moment, None, None, FixMode.NO_FIX), true_lat, true_lon, parked)
        lat, lon = _latlon(lat0, lon0, x + error[0], y + error[1])
        reported_speed = speed if parked is None else rng.uniform(0.0, 0.4)
        fix = Fix(moment, lat, lon, FixMode.FIX_3D, alt=20.0, speed=round(reported_speed, 3),
                  track=round(heading, 2), eph=round(cfg.hdop * 4.75, 2))
        return SimEpoch(moment, fix, true_lat, true_lon, parked)

    for stop, (sx, sy), leg in zip(stops, stop_xy, _legs([start_xy, *stop_xy])):
        for (ax, ay), (bx, by) in zip(leg, leg[1:]):
            length = math.hypot(bx - ax, by - ay)
            if length < 1.0:
                continue
            heading = math.degrees(math.atan2(bx - ax, by - ay)) % 360
            last_s = 0.0
            for s in _speed_profile(length, cfg):
                f = s / length
                noise = (rng.gauss(0, cfg.moving_noise_m / 2), rng.gauss(0, cfg.moving_noise_m / 2))
                yield emit(ax + f * (bx - ax), ay + f * (by - ay), s - last_s, heading, None, noise)
                last_s = s
        # Parked: the receiver wanders (a bounded random walk) within parked_jitter_m of the van.
        jitter = (0.0, 0.0)
        for _ in range(int(cfg.parked_s)):
            jx = jitter[0] + rng.gauss(0, cfg.parked_jitter_m / 6)
            jy = jitter[1] + rng.gauss(0, cfg.parked_jitter_m / 6)
            r = math.hypot(jx, jy)
            if r > cfg.parked_jitter_m:
                jx, jy = jx * cfg.parked_jitter_m / r, jy * cfg.parked_jitter_m / r
            jitter = (jx, jy)
            yield emit(sx, sy, 0.0, 0.0, stop.id, jitter)
        prev = (sx, sy)
    # Drive 400 m east from the last stop so it gets a departure too.
    last_s = 0.0
    for s in _speed_profile(400.0, cfg):
        yield emit(prev[0] + s, prev[1], s - last_s, 90.0, None, (0.0, 0.0))
        last_s = s


# --- NMEA rendering --------------------------------------------------------------------------------


def _sentence(body: str) -> bytes:
    return f"${body}*{pynmeagps.calc_checksum(body)}\r\n".encode("ascii")


def _dmm(value: float, is_lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if is_lat else ("E" if value >= 0 else "W")
    value = abs(value)
    deg = int(value)
    minutes = (value - deg) * 60
    if round(minutes, 6) >= 60:
        deg, minutes = deg + 1, 0.0
    return (f"{deg:02d}{minutes:09.6f}" if is_lat else f"{deg:03d}{minutes:09.6f}"), hemi


def epoch_sentences(epoch: SimEpoch, cfg: DriveConfig | None = None, talker: str = "GN") -> list[bytes]:
    """One receiver epoch: RMC, GGA, GSA, VTG, GST (no-fix variants in the tunnel)."""
    cfg = cfg or DriveConfig()
    fix = epoch.fix
    hms = epoch.time.strftime("%H%M%S.") + f"{epoch.time.microsecond // 10000:02d}"
    dmy = epoch.time.strftime("%d%m%y")
    if not fix.has_position or fix.lat is None or fix.lon is None:
        return [_sentence(f"{talker}RMC,{hms},V,,,,,,,{dmy},,,N"),
                _sentence(f"{talker}GGA,{hms},,,,,0,00,99.99,,M,,M,,"),
                _sentence(f"{talker}GSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
                _sentence(f"{talker}VTG,,T,,M,,N,,K,N")]
    lat, ns = _dmm(fix.lat, True)
    lon, ew = _dmm(fix.lon, False)
    knots = (fix.speed or 0.0) * MPS_TO_KNOTS
    kmh = (fix.speed or 0.0) * 3.6
    track = fix.track or 0.0
    sats = ",".join(f"{p:02d}" for p in range(1, cfg.satellites + 1)) + "," * (12 - cfg.satellites)
    sigma = cfg.hdop * 4.75 / 2.4477
    return [
        _sentence(f"{talker}RMC,{hms},A,{lat},{ns},{lon},{ew},{knots:.3f},{track:.2f},{dmy},,,A"),
        _sentence(f"{talker}GGA,{hms},{lat},{ns},{lon},{ew},1,{cfg.satellites:02d},{cfg.hdop:.2f},"
                  f"{fix.alt or 0.0:.1f},M,47.0,M,,"),
        _sentence(f"{talker}GSA,A,3,{sats},{cfg.hdop * 1.6:.2f},{cfg.hdop:.2f},{cfg.hdop * 1.3:.2f}"),
        _sentence(f"{talker}VTG,{track:.2f},T,,M,{knots:.3f},N,{kmh:.3f},K,A"),
        _sentence(f"{talker}GST,{hms},{sigma:.1f},{sigma:.1f},{sigma:.1f},0.0,{sigma:.1f},{sigma:.1f},"
                  f"{sigma * 1.5:.1f}"),
    ]


def render(epochs: Iterable[SimEpoch], cfg: DriveConfig | None = None) -> Iterator[bytes]:
    for epoch in epochs:
        yield b"".join(epoch_sentences(epoch, cfg))


def write_log(path: Path | str, epochs: Iterable[SimEpoch], cfg: DriveConfig | None = None) -> int:
    """A gpsfake-ready log (gpsd's test-log format with a `#` header). Returns the number of epochs."""
    count = 0
    with open(path, "wb") as out:
        out.write(b"# Name: Flex Edge simulated van drive\n# Generated by device.testbench.gps_route\n")
        for chunk in render(epochs, cfg):
            out.write(chunk)
            count += 1
    return count


def feed_pty(master_fd: int, epochs: Iterable[SimEpoch], cfg: DriveConfig | None = None,
             speedup: float = 1.0) -> int:
    """Write epochs to the simulated receiver's end of a pty, one per (1 / speedup) s. Returns epochs sent."""
    count = 0
    period = 1.0 / speedup if speedup > 0 else 0.0
    next_at = time.monotonic()
    for chunk in render(epochs, cfg):
        os.write(master_fd, chunk)
        count += 1
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return count
