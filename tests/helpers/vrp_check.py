"""An independent check of a VRPTW solution against a Solomon instance, written apart from the planner (it
reads the file itself and shares no code with cloud_sync.cloud.planning): every customer exactly once,
capacity, time windows (service starts within the window, waiting allowed), return to the depot by its due
time. Travel time = Euclidean distance, unrounded."""
from __future__ import annotations

import math
from pathlib import Path

TOLERANCE = 1e-6


def read_solomon(path: Path) -> tuple[int, int, list[tuple[float, ...]]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    numbers = [r for r in rows if len(r) == 2 and all(x.isdigit() for x in r)]
    vehicles, capacity = int(numbers[0][0]), int(numbers[0][1])
    customers = [tuple(float(x) for x in r) for r in rows if len(r) == 7 and r[0].isdigit()]
    return vehicles, capacity, customers


def check(path: Path, routes: list[list[int]]) -> tuple[list[str], float]:
    """(problems found, total distance)."""
    vehicles, capacity, cust = read_solomon(path)
    problems = []
    seen = [c for r in routes for c in r]
    expected = set(range(1, len(cust)))
    if sorted(seen) != sorted(expected):
        problems.append(f"customers not visited exactly once: missing {sorted(expected - set(seen))[:5]}, "
                        f"{len(seen) - len(set(seen))} repeats, unknown {sorted(set(seen) - expected)[:5]}")
    if len(routes) > vehicles:
        problems.append(f"{len(routes)} routes for {vehicles} vehicles")

    def dist(a: int, b: int) -> float:
        return math.hypot(cust[a][1] - cust[b][1], cust[a][2] - cust[b][2])

    total = 0.0
    for k, route in enumerate(routes):
        if not route:
            problems.append(f"route {k} is empty")
            continue
        load = sum(cust[c][3] for c in route if 0 < c < len(cust))
        if load > capacity:
            problems.append(f"route {k}: load {load} > capacity {capacity}")
        clock, here = cust[0][4], 0
        for c in route:
            if not 0 < c < len(cust):
                continue
            clock += dist(here, c)
            total += dist(here, c)
            if clock > cust[c][5] + TOLERANCE:
                problems.append(f"route {k}: customer {c} served at {clock:.3f} > due {cust[c][5]}")
            clock = max(clock, cust[c][4]) + cust[c][6]
            here = c
        clock += dist(here, 0)
        total += dist(here, 0)
        if clock > cust[0][5] + TOLERANCE:
            problems.append(f"route {k}: back at the depot at {clock:.3f} > {cust[0][5]}")
    return problems, total
