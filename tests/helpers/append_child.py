"""Child process for the crash test: appends events forever, printing each id once its commit returned."""
from __future__ import annotations

import os
import random
import sys
import time

from device.contract.domain import Event, EventType
from device.store import EventStore


def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    out = sys.stdout.fileno()
    with EventStore(path) as store:
        n = 0
        while True:
            size = rng.choice((1, 1, 1, 10, 100))  # single appends and bursts
            events = [Event(EventType.GPS_FIX if rng.random() < 0.5 else EventType.PACKAGE_SCANNED,
                            {"n": n + i, "pad": "x" * rng.randrange(0, 300)}) for i in range(size)]
            stored = store.append_many(events)
            n += size
            # One write per batch: a kill can cut the pipe between batches, never inside a line.
            os.write(out, "".join(f"{s.id}\n" for s in stored).encode())
            time.sleep(0.004)  # a steady load, not a flood: keeps the 20-round test short


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
