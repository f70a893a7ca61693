"""Child process: a steady event load on a device's store, printing each id once its commit returned.

    python -m tests.helpers.chaos.producer DB EVENTS RATE [--pad BYTES] [--clock-jumps]

A full disk (StoreFull) is not fatal: the burst is retried until space returns, and the refusals are counted
on stderr. `--clock-jumps` moves the wall clock back an hour for the second third of the events and forward
a day for the last third (event timestamps and the store's clock), as a van's RTC does after a bad sync.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta

from device.contract.domain import Event, EventType, iso_utc, utc_now
from device.store import EventStore, StoreFull

BURST = 5


def clock_offset(done: int, total: int, jumps: bool) -> timedelta:
    if not jumps or done < total // 3:
        return timedelta(0)
    return timedelta(hours=-1) if done < 2 * total // 3 else timedelta(days=1)


def clock_steps(total: int) -> list[tuple[int, float]]:
    """With --clock-jumps: (index of the first event after each step, the step in seconds), what the cloud must
    flag. The offset is chosen per burst, so a step lands on the first event of a burst."""
    steps, before = [], timedelta(0)
    for start in range(0, total, BURST):
        offset = clock_offset(start, total, True)
        if offset != before:
            steps.append((start, (offset - before).total_seconds()))
            before = offset
    return steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("events", type=int)
    parser.add_argument("rate", type=float, help="events per second")
    parser.add_argument("--pad", type=int, default=64)
    parser.add_argument("--clock-jumps", action="store_true")
    args = parser.parse_args()
    offset = [timedelta(0)]
    out = sys.stdout.fileno()
    refusals = 0
    with EventStore(args.db, clock=lambda: time.time() + offset[0].total_seconds()) as store:
        done = 0
        started = time.monotonic()
        while done < args.events:
            offset[0] = clock_offset(done, args.events, args.clock_jumps)
            now = iso_utc(utc_now() + offset[0])
            burst = [Event(EventType.PACKAGE_SCANNED if (done + i) % 3 == 0 else EventType.GPS_FIX,
                           {"n": done + i, "pad": "p" * args.pad}, ts=now)
                     for i in range(min(BURST, args.events - done))]
            while True:
                try:
                    stored = store.append_many(burst)
                    break
                except StoreFull:
                    refusals += 1
                    os.write(sys.stderr.fileno(), b"FULL\n")
                    time.sleep(0.05)
            done += len(burst)
            # None: a track point the store's low-disk policy thinned out (never acknowledged, so not lost)
            os.write(sys.stderr.fileno(), b"THINNED\n" * sum(s is None for s in stored))
            # One write per burst: a kill cuts the pipe between bursts, never inside a line.
            os.write(out, "".join(f"{s.id}\n" for s in stored if s is not None).encode())
            delay = started + done / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    print(f"refusals {refusals}", file=sys.stderr)


if __name__ == "__main__":
    main()
