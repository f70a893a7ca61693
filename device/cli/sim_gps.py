"""`flexedge sim gps --route FILE`: a simulated van driving a route, as NMEA.

Registered in the `flexedge sim` group (device/cli/sim.py).
Outputs: a gpsfake-ready log (`--out`), a pty the agent opens as its receiver (`--pty`), or a real gpsd fed
by gpsfake (`--gpsfake`); NMEA on stdout without any of them.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from device.logsetup import setup_logging
from device.testbench.gps_route import (
    SENTENCES_PER_FIX_EPOCH,
    DriveConfig,
    Tunnel,
    drive,
    feed_pty,
    load_stops,
    render,
    write_log,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--route", required=True, help="JSON: a route {stops:[{id,lat,lon}]} or a list of stops")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", metavar="LOG", help="write an NMEA log (gpsd test-log format) and exit")
    out.add_argument("--pty", action="store_true", help="serve the NMEA on a new pty; prints its path")
    out.add_argument("--gpsfake", action="store_true", help="run a real gpsd fed by gpsfake; prints its port")
    p.add_argument("--speedup", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--cruise-kmh", type=float, default=40.0)
    p.add_argument("--parked-s", type=float, default=120.0, help="time at each stop")
    p.add_argument("--jitter-m", type=float, default=30.0, help="receiver wander while parked")
    p.add_argument("--tunnel-at", type=float, default=None, metavar="S", help="start a fix gap S s into the drive")
    p.add_argument("--tunnel-s", type=float, default=60.0, help="length of the fix gap")
    p.add_argument("--seed", type=int, default=1)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # unwinds the `with` blocks, so gpsfake/gpsd and the pty are cleaned up


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level or "INFO", True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    stops = load_stops(args.route)
    tunnel = Tunnel(args.tunnel_at, args.tunnel_s) if args.tunnel_at is not None else None
    cfg = DriveConfig(cruise_mps=args.cruise_kmh / 3.6, parked_s=args.parked_s, parked_jitter_m=args.jitter_m,
                      tunnel=tunnel, seed=args.seed)
    epochs = drive(stops, cfg)
    if args.pty:
        from device.testbench.pty import open_pty_pair

        pair = open_pty_pair()
        print(json.dumps({"pty": pair.port}), flush=True)
        try:
            feed_pty(pair.master_fd, epochs, cfg, speedup=args.speedup)
        finally:
            pair.close()
        return 0
    if args.gpsfake:
        from device.testbench.gpsfake import GpsFake

        with tempfile.TemporaryDirectory() as tmp:
            log_path = Path(tmp) / "drive.log"
            write_log(log_path, epochs, cfg)
            # gpsfake's cycle is per sentence, not per epoch.
            with GpsFake(log_path, cycle_s=1.0 / (args.speedup * SENTENCES_PER_FIX_EPOCH)) as fake:
                print(json.dumps({"gpsd_port": fake.port}), flush=True)
                while fake.running:
                    time.sleep(0.5)
        return 0
    if args.out:
        count = write_log(args.out, epochs, cfg)
        print(json.dumps({"log": os.path.abspath(args.out), "epochs": count}))
        return 0
    for chunk in render(epochs, cfg):
        sys.stdout.buffer.write(chunk)
    return 0
