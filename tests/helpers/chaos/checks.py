"""What the broker_down scenario checks beyond lost/duplicates: the drain order and the bench's expected rate."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from device.contract.domain import EventType, Lane, lane_of

REPO = Path(__file__).resolve().parents[3]
BENCH_RESULTS = REPO / "bench" / "results.json"
# bench/sync_throughput.py on this machine (2 cores, 20,000 events, zstd, batches of 1000): 18,863 events/s.
# Used when `make bench` has not written bench/results.json.
SYNC_RATE_MEASURED = 18_863.0


@dataclass(frozen=True)
class DrainOrder:
    out_of_order: int  # events that reached the cloud after a newer event of their lane
    live_positions: int  # the newest breadcrumb the device sends first on each connect, by design


def drain_order(arrivals: list[tuple[int, str, str]]) -> DrainOrder:
    """`arrivals`: (seq, type, batch id) in the cloud's arrival order. Oldest first means: within each lane
    (scans and proofs ahead of the GPS backlog), seqs arrive ascending. The one exception is by design: on each
    connect the device sends its newest breadcrumb alone, ahead of the backlog, so the operator sees where the
    van is now; such a one-event track batch followed by older breadcrumbs is counted apart."""
    batch_sizes: dict[str, int] = {}
    for _, _, batch in arrivals:
        batch_sizes[batch] = batch_sizes.get(batch, 0) + 1
    lanes = [_lane(kind) for _, kind, _ in arrivals]
    # A live position: alone in its batch, with an older breadcrumb arriving after it.
    live: set[int] = set()
    lowest_later: dict[Lane, float] = {}
    for index in range(len(arrivals) - 1, -1, -1):
        seq, _, batch = arrivals[index]
        lane = lanes[index]
        if lane is Lane.TRACK and batch_sizes[batch] == 1 and lowest_later.get(lane, float("inf")) < seq:
            live.add(index)
        lowest_later[lane] = min(lowest_later.get(lane, float("inf")), seq)
    out_of_order = 0
    newest: dict[Lane, int] = {}
    for index, (seq, _, _) in enumerate(arrivals):
        if index in live:
            continue
        lane = lanes[index]
        if seq < newest.get(lane, 0):
            out_of_order += 1
        newest[lane] = max(newest.get(lane, 0), seq)
    return DrainOrder(out_of_order, len(live))


def _lane(kind: str) -> Lane:
    try:
        return lane_of(EventType(kind))
    except ValueError:
        return Lane.EVENTS


def bench_sync_rate(results: Path = BENCH_RESULTS) -> tuple[float, str]:
    """(events/s, where from): sync_throughput's figure from `make bench`'s results, else the recorded one."""
    try:
        doc = json.loads(results.read_text())
    except (OSError, ValueError):
        return SYNC_RATE_MEASURED, "sync_throughput as measured on this machine (no bench/results.json)"
    records = doc.get("results", doc) if isinstance(doc, dict) else doc
    for record in records if isinstance(records, list) else []:
        if isinstance(record, dict) and record.get("bench") == "sync_throughput" and \
                isinstance(record.get("events_per_s"), (int, float)) and record["events_per_s"] > 0:
            return float(record["events_per_s"]), "sync_throughput in bench/results.json"
    return SYNC_RATE_MEASURED, "sync_throughput as measured on this machine (none in bench/results.json)"
