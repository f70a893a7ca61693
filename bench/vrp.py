"""The route planner on Solomon's VRPTW instances (tests/data/vrp/solomon/), beside a plain PyVRP run.

For each instance: `flexedge plan --solomon FILE --time-limit S --json` (the planner as the team runs it),
then the peer: PyVRP's own defaults on the same instance (vrplib's Solomon reader, PyVRP's `exact` rounding:
x1000, rounded) for the same time. Both solutions are checked by tests/helpers/vrp_check.py, which shares no
code with the planner; gaps are to the best-known distance when distance alone is minimised
(`bks_distonly_distance` in bks.tsv; the planner minimises distance, not vehicles first).

The planner *is* PyVRP: what it adds is the modelling (integer scaling with travel times rounded up, so what
the solver calls feasible is feasible in exact arithmetic), not a better search. Expect equal gaps.

    python bench/vrp.py [--time-limit 30] [--only C103 R107]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyvrp
import vrplib
from pyvrp.read import ROUND_FUNCS, _InstanceParser, _ProblemDataBuilder
from pyvrp.stop import MaxRuntime

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers.vrp_check import check  # noqa: E402

DATA = REPO / "tests" / "data" / "vrp"


def ours(path: Path, limit: float) -> tuple[list[list[int]], float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "device.cli", "plan", "--solomon", str(path), "--time-limit",
                           str(limit), "--json"], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout)["routes"], time.perf_counter() - started


def peer(path: Path, limit: float) -> tuple[list[list[int]], float]:
    """PyVRP as its documentation runs a Solomon instance (pyvrp.read builds its data the same way)."""
    inst = vrplib.read_instance(str(path), instance_format="solomon")
    inst["dimension"], inst["depot"] = len(inst["demand"]), np.array([0])
    data = _ProblemDataBuilder(_InstanceParser(inst, ROUND_FUNCS["exact"])).data()
    started = time.perf_counter()
    result = pyvrp.solve(data, stop=MaxRuntime(limit), seed=1, collect_stats=False, display=False)
    routes = [[data.clients()[a.idx].location for a in r if a.is_client()] for r in result.best.routes()]
    return [r for r in routes if r], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--only", nargs="+")
    args = parser.parse_args()
    bks = {row["name"]: row for row in csv.DictReader((DATA / "bks.tsv").open(), delimiter="\t")}
    gaps, peer_gaps, feasible, peer_feasible = [], [], 0, 0
    for path in sorted((DATA / "solomon").glob("*.txt")):
        name = path.stem
        if args.only and name not in args.only:
            continue
        best = float(bks[name]["bks_distonly_distance"])
        routes, secs = ours(path, args.time_limit)
        problems, distance = check(path, routes)
        peer_routes, peer_secs = peer(path, args.time_limit)
        peer_problems, peer_distance = check(path, peer_routes)
        gap, peer_gap = 100 * (distance / best - 1), 100 * (peer_distance / best - 1)
        gaps.append(gap)
        peer_gaps.append(peer_gap)
        feasible += not problems
        peer_feasible += not peer_problems
        print(json.dumps({"bench": "vrp", "instance": name, "figure": "gap_pct", "baseline": "peer_gap_pct",
                          "gap_pct": round(gap, 2), "peer_gap_pct": round(peer_gap, 2),
                          "distance": round(distance, 2), "vehicles": len(routes), "feasible": not problems,
                          "peer_distance": round(peer_distance, 2), "peer_vehicles": len(peer_routes),
                          "peer_feasible": not peer_problems, "bks_distance": best,
                          "problems": problems[:3], "peer_problems": peer_problems[:3],
                          "wall_s": round(secs, 1), "peer_wall_s": round(peer_secs, 1)}), flush=True)
    print(json.dumps({"bench": "vrp", "instance": "mean", "figure": "mean_gap_pct", "baseline": "peer_mean_gap_pct",
                      "mean_gap_pct": round(statistics.fmean(gaps), 2),
                      "peer_mean_gap_pct": round(statistics.fmean(peer_gaps), 2),
                      "feasible": f"{feasible}/{len(gaps)}", "peer_feasible": f"{peer_feasible}/{len(gaps)}",
                      "time_limit_s": args.time_limit}))


if __name__ == "__main__":
    main()
