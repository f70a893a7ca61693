"""Re-sequencing on the van: p50/p95 milliseconds for 50/150/300 remaining stops, and what it buys.

The day: stops scattered within 3 km of the station, a planned order (this heuristic from scratch, no windows),
30% of the stops with a 2-hour window around their planned arrival (so the plan is on time). Then the day goes
wrong: the van is at its 10th stop 20 minutes late, 3 of the next stops were excepted, and the observed speed is
70% of the plan's. Re-sequenced from there, against the baseline of keeping the old order: late stops and the
time the last stop is done, both timed by the same schedule.
"""
from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.routing.resequence import Visit, as_given, leg_seconds, resequence  # noqa: E402

DEPOT = (47.6101, -122.3421)
ROAD_FACTOR, PLAN_MPS, SLOW = 1.35, 7.0, 0.7
SAMPLES = 30


def day(n: int, seed: int) -> tuple[tuple[float, float], list[Visit]]:
    rng = random.Random(seed)
    stops = []
    for k in range(n + 13):
        r, h = 3000 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        stops.append(Visit(f"S{k}", DEPOT[0] + r * math.cos(h) / 111_320,
                           DEPOT[1] + r * math.sin(h) / (111_320 * math.cos(math.radians(DEPOT[0]))),
                           service_s=rng.choice((60, 90, 120))))
    plan = resequence(stops, leg_seconds(DEPOT, stops, ROAD_FACTOR, PLAN_MPS))
    by_id = {v.id: v for v in stops}
    planned = []
    for stop_id, eta in zip(plan.order, plan.arrivals_s):
        v = by_id[stop_id]
        if rng.random() < 0.3:
            v = Visit(v.id, v.lat, v.lon, eta - 3600, eta + 3600, v.service_s)
        planned.append(v)
    here = planned[9]
    now = plan.arrivals_s[9] + 1200  # 20 minutes late at the 10th stop
    left = planned[10:13 - 3] + planned[13:]  # three of the next stops excepted
    left = [Visit(v.id, v.lat, v.lon, v.opens_s - now, v.closes_s - now, v.service_s) for v in left]
    return (here.lat, here.lon), left[:n]


def main() -> None:
    for n in (50, 150, 300):
        times, late_kept, late_new, finish_kept, finish_new = [], [], [], [], []
        for seed in range(SAMPLES):
            start, left = day(n, seed)
            secs = leg_seconds(start, left, ROAD_FACTOR, PLAN_MPS * SLOW)
            began = time.perf_counter()
            result = resequence(left, secs)
            times.append((time.perf_counter() - began) * 1000)
            kept = as_given(left, secs)
            late_new.append(result.late_stops)
            late_kept.append(kept.late_stops)
            finish_new.append(result.finish_s / 60)
            finish_kept.append(kept.finish_s / 60)
        print(json.dumps({"bench": "resequence", "stops": n, "samples": SAMPLES, "figure": "p95_ms",
                          "p50_ms": round(statistics.median(times), 1),
                          "p95_ms": round(statistics.quantiles(times, n=20)[18], 1),
                          "late_stops_mean": round(statistics.fmean(late_new), 2),
                          "baseline_kept_order_late_stops_mean": round(statistics.fmean(late_kept), 2),
                          "done_after_min_mean": round(statistics.fmean(finish_new), 1),
                          "baseline_kept_order_done_after_min_mean": round(statistics.fmean(finish_kept), 1)}),
              flush=True)


if __name__ == "__main__":
    main()
