"""Child process: a steady event load on a device's store, printing each id once its commit returned.

    python -m tests.helpers.chaos.producer DB EVENTS RATE [--pad BYTES] [--clock-jumps] [--photos N --photo-dir DIR]

A full disk (StoreFull) is not fatal: the burst is retried until space returns, and the refusals are counted
on stderr. `--clock-jumps` moves the wall clock back an hour for the second third of the events and forward
a day for the last third (event timestamps and the store's clock), as a van's RTC does after a bad sync.
`--photos N` spreads N proof photos over the load as the agent commits them: a photo file (random bytes of a
proof photo's size) in the photo index, its photo.checked event in a burst, then the photo queued for upload.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

from device.contract.domain import Event, EventType, iso_utc, utc_now
from device.store import EventStore, StoreFull

BURST = 5
PHOTO_BYTES = (40 * 1024, 200 * 1024)  # the size range of the photo files (1 to 4 chunks of 64 KiB)


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
    parser.add_argument("--photos", type=int, default=0)
    parser.add_argument("--photo-dir", type=Path)
    args = parser.parse_args()
    every = max(1, args.events // BURST // args.photos) if args.photos else 0  # a photo every this many bursts
    photos_left = args.photos
    rng = random.Random(args.events)
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
            photo_id = None
            if photos_left and (done // BURST) % every == 0:
                photo_id, sha = new_photo(store, args.photo_dir, rng)
                burst[-1] = Event(EventType.PHOTO_CHECKED, {"photo_id": photo_id, "verdict": "match", "sha256": sha,
                                                            "upload_sha256": sha}, ts=now)
                photos_left -= 1
            while True:
                try:
                    stored = store.append_many(burst)
                    break
                except StoreFull:
                    refusals += 1
                    os.write(sys.stderr.fileno(), b"FULL\n")
                    time.sleep(0.05)
            done += len(burst)
            if photo_id is not None:  # committed: now it is proof, queued for upload (after its event)
                store.state.queue_photo(photo_id, burst[-1].id)
            # None: a track point the store's low-disk policy thinned out (never acknowledged, so not lost)
            os.write(sys.stderr.fileno(), b"THINNED\n" * sum(s is None for s in stored))
            # One write per burst: a kill cuts the pipe between bursts, never inside a line.
            os.write(out, "".join(f"{s.id}\n" for s in stored if s is not None).encode())
            delay = started + done / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    print(f"refusals {refusals}", file=sys.stderr)


def new_photo(store: EventStore, folder: Path, rng: random.Random) -> tuple[str, str]:
    """A photo file in the photo index, as the agent's camera step leaves it (the file is its upload copy)."""
    photo_id = f"P{time.time_ns():x}"
    data = rng.randbytes(rng.randint(*PHOTO_BYTES))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{photo_id}.jpg"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    store.state.record_photo(photo_id, str(path), sha, upload_path=str(path), upload_sha256=sha, size=len(data),
                       upload_size=len(data))
    return photo_id, sha


if __name__ == "__main__":
    main()
