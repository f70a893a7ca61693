"""`flexedge plan`: the cloud's route planner from the command line.

    flexedge plan --station FILE [--matrix FILE] [--time-limit S] [--json]
    flexedge plan --solomon FILE [--time-limit S] [--json]

`--station` plans a station's day (packages, vans; README "Route planning" gives the file) into blocks;
`--solomon` solves a classic Solomon VRPTW instance and prints
`{"routes": [[customers in visiting order]], "vehicles": N, "distance": D}`.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from device.cli.common import Subparsers
from device.contract.travel import RoadModel, TravelModelError
from device.logsetup import setup_logging

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("plan", parents=[common], help="plan routes: a station's day or a Solomon instance")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--station", type=Path, help="station day JSON: packages and vans")
    what.add_argument("--solomon", type=Path, help="a Solomon VRPTW instance")
    p.add_argument("--matrix", type=Path, help="road matrix JSON (points, distances, durations) for --station")
    p.add_argument("--time-limit", type=float, default=10.0, help="solver seconds (default 10)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The planner (PyVRP) is the `cloud` extra, not on a van: imported only when planning, so `flexedge --help`
    # and `flexedge --version` (which register every command) work in a van's venv.
    from cloud_sync.cloud.planning import solomon
    from cloud_sync.cloud.planning.problem import ProblemError
    from cloud_sync.cloud.planning.solver import solve
    from cloud_sync.cloud.planning.station import PlanError, plan_station, read_station
    from cloud_sync.cloud.planning.travel import MatrixTimes, RoadModelTimes, TravelTimes, TravelTimesError

    setup_logging(args.log_level or "WARNING", False)
    try:
        if args.solomon:
            inst = solomon.read(args.solomon)
            doc = solomon.report(inst, solve(solomon.to_problem(inst), args.time_limit, args.seed))
            human = f"{inst.name}: {doc['vehicles']} vehicles, distance {doc['distance']}"
        else:
            raw = json.loads(args.station.read_text())
            day = read_station(raw)
            travel: TravelTimes = (MatrixTimes.from_file(args.matrix) if args.matrix
                                   else RoadModelTimes(RoadModel.from_dict(raw.get("travel"))))
            plan = plan_station(day, travel, args.time_limit, args.seed)
            doc = plan.to_dict()
            human = "\n".join([f"{b.block.id}: van {b.van}, {len(b.route.stops)} stops, "
                               f"{b.distance_m / 1000:.1f} km, {b.duration_s / 3600:.1f} h" for b in plan.blocks]
                              + [f"{len(plan.unassigned)} packages fit no van"] * bool(plan.unassigned))
    except (OSError, ValueError, PlanError, ProblemError, TravelTimesError, TravelModelError) as exc:
        print(f"flexedge plan: {exc}")
        return 2
    print(json.dumps(doc) if args.json else human)
    return 0
