"""`flexedge sim DEVICE ...`: hardware simulators for a bench or a test rig without the hardware.

Each simulator opens a pty (optionally behind a stable symlink, like /dev/serial/by-id/...), prints the
port path for the agent (or a technician's terminal) to open, and runs until Ctrl-C / SIGTERM or
--duration. To add one, write its `add_arguments(parser)` and `run(args) -> int` and append a `Simulator`
to SIMULATORS; nothing else changes. Asyncio simulators wrap an `async def (args, stop_event)` with
`on_event_loop`, which handles the signals and --duration.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from device.cli import sim_gps
from device.cli.common import Subparsers, load_context
from device.testbench.codes import Barcode, mixed_codes
from device.testbench.faults import LineFaults
from device.testbench.mcu import SimMcu
from device.testbench.scanner import ScannerBehaviour, SimScanner
from firmware_bridge.mcu.commands import BuzzerPattern, Input, LedPattern
from firmware_bridge.mcu.link import LinkConfig
from firmware_bridge.scanner.parse import GROUP_SEPARATOR, Symbology

TERMINATORS = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n"}


@dataclass(frozen=True)
class Simulator:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def on_event_loop(simulate: Callable[[argparse.Namespace, asyncio.Event], Awaitable[int]]
                  ) -> Callable[[argparse.Namespace], int]:
    """A sync `run(args)` for an asyncio simulator: config and logging, SIGINT/SIGTERM and --duration set
    the stop event the simulator waits on."""
    def run(args: argparse.Namespace) -> int:
        load_context(args)  # config errors, logging set-up

        async def main() -> int:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            if args.duration:
                loop.call_later(args.duration, stop.set)
            return await simulate(args, stop)

        try:
            return asyncio.run(main())
        except BrokenPipeError:  # stdout closed by the reader: nothing left to tell
            sys.stderr.close()
            return 0

    return run


def say(args: argparse.Namespace, doc: dict[str, Any], human: str) -> None:
    """One line per event on stdout (JSON with --json), flushed: a test or a script reads it live."""
    print(json.dumps(doc, default=str) if args.json else human, flush=True)


def add_port_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--link", metavar="PATH",
                        help="create this symlink to the pty (stable across --unplug-after replugs)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S", help="exit after S seconds (0: never)")
    parser.add_argument("--seed", type=int, default=None, help="seed for every random choice (repeatable runs)")


# ---- scanner ---------------------------------------------------------------------------------------------
def scanner_arguments(parser: argparse.ArgumentParser) -> None:
    add_port_argument(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--count", type=int, default=10, help="scan N generated codes (EAN-13, GS1-128 SSCC, QR, "
                                                                "Code 39 in turn); default 10")
    source.add_argument("--codes", metavar="FILE", help="scan the codes in FILE: one 'SYMBOLOGY DATA' per line "
                                                        "(<GS> in DATA = the GS1 group separator), SYMBOLOGY one "
                                                        f"of {', '.join(s.value for s in Symbology)}")
    parser.add_argument("--interval", type=float, default=0.5, metavar="S", help="seconds between scans")
    parser.add_argument("--start-delay", type=float, default=1.0, metavar="S", help="wait before the first scan")
    parser.add_argument("--double-read", type=float, default=0.0, metavar="P", help="chance a code is sent twice")
    parser.add_argument("--noise", type=float, default=0.0, metavar="P", help="chance of a garbage line before a scan")
    parser.add_argument("--no-aim", action="store_true", help="do not send AIM symbology identifiers")
    parser.add_argument("--terminator", choices=sorted(TERMINATORS), default="crlf")
    parser.add_argument("--unplug-after", type=float, default=0.0, metavar="S",
                        help="unplug after S seconds and replug 1 s later (0: never)")


def read_codes(path: str) -> list[Barcode]:
    codes = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, data = line.strip().partition(" ")
        try:
            codes.append(Barcode(Symbology(name), data.replace("<GS>", GROUP_SEPARATOR)))
        except ValueError:
            raise SystemExit(f"{path}:{number}: unknown symbology {name!r}") from None
    return codes


async def run_scanner(args: argparse.Namespace, stop: asyncio.Event) -> int:
    codes = read_codes(args.codes) if args.codes else mixed_codes(args.count, seed=args.seed or 0)
    behaviour = ScannerBehaviour(aim=not args.no_aim, terminator=TERMINATORS[args.terminator],
                                 interval_s=args.interval, double_read=args.double_read, noise=args.noise,
                                 seed=args.seed)
    async with SimScanner(args.link, behaviour) as sim:
        say(args, {"simulator": "scanner", "port": sim.path}, f"scanner simulator on {sim.path}")
        replug = schedule_replug(sim, args.unplug_after)
        await asyncio.sleep(args.start_delay)
        for code in codes:
            if stop.is_set():
                break
            sim.scan(code)
            say(args, {"scanned": code.line(), "symbology": code.symbology.value}, f"scanned {code.line()!r}")
            await asyncio.sleep(args.interval)
        say(args, {"done": len(codes), **asdict(sim.counts)}, f"script done: {sim.counts}")
        await stop.wait()
        if replug is not None:
            replug.cancel()
    return 0


async def _replug_after(sim: SimScanner | SimMcu, after_s: float) -> None:
    await asyncio.sleep(after_s)
    await sim.unplug()
    await asyncio.sleep(1.0)
    await sim.replug()


def schedule_replug(sim: SimScanner | SimMcu, after_s: float) -> asyncio.Task[None] | None:
    """Unplug after `after_s` (0: never) and replug 1 s later; cancel the task when the simulator stops."""
    return asyncio.create_task(_replug_after(sim, after_s)) if after_s else None


# ---- MCU -------------------------------------------------------------------------------------------------
def mcu_arguments(parser: argparse.ArgumentParser) -> None:
    add_port_argument(parser)
    parser.add_argument("--corrupt", type=float, default=0.0, metavar="P", help="chance each byte is damaged")
    parser.add_argument("--drop", type=float, default=0.0, metavar="P", help="chance a frame is lost")
    parser.add_argument("--duplicate", type=float, default=0.0, metavar="P", help="chance a frame arrives twice")
    parser.add_argument("--delay", type=float, default=0.0, metavar="S", help="latency added to each frame sent")
    parser.add_argument("--input-every", type=float, default=0.0, metavar="S",
                        help="toggle a random input (door, ignition, button) every S seconds (0: never)")
    parser.add_argument("--silent-after", type=float, default=0.0, metavar="S",
                        help="stop answering after S seconds, for --silent-for seconds (0: never)")
    parser.add_argument("--silent-for", type=float, default=5.0, metavar="S")
    parser.add_argument("--unplug-after", type=float, default=0.0, metavar="S",
                        help="unplug after S seconds and replug 1 s later (0: never)")


def _describe(message: LedPattern | BuzzerPattern) -> dict[str, Any]:
    doc = {"command": type(message).__name__, **asdict(message)}
    return {k: (v.name.lower() if hasattr(v, "name") else v) for k, v in doc.items()}


async def run_mcu(args: argparse.Namespace, stop: asyncio.Event) -> int:
    faults = LineFaults(corrupt_byte=args.corrupt, drop_frame=args.drop, duplicate_frame=args.duplicate,
                        delay_s=args.delay, seed=args.seed)

    def show(message: LedPattern | BuzzerPattern) -> None:
        doc = _describe(message)
        say(args, doc, " ".join(f"{k}={v}" for k, v in doc.items()))

    loop = asyncio.get_running_loop()
    async with SimMcu(args.link, faults=faults, link=LinkConfig(name="sim-mcu"), on_command=show) as sim:
        say(args, {"simulator": "mcu", "port": sim.path}, f"MCU simulator on {sim.path}")
        if args.silent_after:
            loop.call_later(args.silent_after, sim.set_silent, True)
            loop.call_later(args.silent_after + args.silent_for, sim.set_silent, False)
        replug = schedule_replug(sim, args.unplug_after)
        rng = random.Random(args.seed)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.input_every or None)
            if args.input_every and not stop.is_set() and sim.link.is_up:
                which = rng.choice(list(Input))
                sim.post_input(which, not sim.inputs[which]).add_done_callback(lambda f: f.exception())
                say(args, {"input": which.name.lower(), "active": sim.inputs[which]},
                    f"input {which.name.lower()} -> {'active' if sim.inputs[which] else 'inactive'}")
        if replug is not None:
            replug.cancel()
        say(args, {"stats": sim.link.stats.as_dict(), "faults": asdict(sim.line.counts)},
            f"link {sim.link.stats.as_dict()} faults {asdict(sim.line.counts)}")
    return 0


SIMULATORS: list[Simulator] = [
    Simulator("scanner", "a serial barcode scanner: scripted codes, double reads, noise, unplug",
              scanner_arguments, on_event_loop(run_scanner)),
    Simulator("mcu", "the peripheral MCU firmware: LEDs, buzzer, inputs, heartbeats, line faults",
              mcu_arguments, on_event_loop(run_mcu)),
    Simulator("gps", "a van driving a route, as NMEA (log, pty or a real gpsd via gpsfake)",
              sim_gps.add_arguments, sim_gps.run),
]


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("sim", help="hardware simulators on a pty (prints the port to open)")
    devices = parser.add_subparsers(dest="simulator", required=True, metavar="DEVICE")
    for simulator in SIMULATORS:
        sub = devices.add_parser(simulator.name, parents=[common], help=simulator.help)
        simulator.add_arguments(sub)
        sub.set_defaults(func=simulator.run)
