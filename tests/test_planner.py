"""The cloud's route planner: a station's day into feasible blocks, Solomon instances through the CLI, checked by
code independent of the planner, travel-time providers and their factors, and bad input rejected by name."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from cloud_sync.cloud.planning.station import PlanError, plan_station, read_station
from cloud_sync.cloud.planning.travel import MatrixTimes, RoadModelTimes, Slowdown, Slowdowns
from device.contract.travel import RoadModel, distance_m
from device.testbench.stations import station_day
from tests.helpers.vrp_check import check

REPO = Path(__file__).resolve().parent.parent
SOLOMON = REPO / "tests" / "data" / "vrp" / "solomon"
START = datetime(2026, 5, 4, 8, 0, tzinfo=timezone.utc)
SOLVER_S = 1.0


def _check_plan(doc: dict, plan) -> None:
    """Independently of the planner: each package once, capacities, ETAs inside windows, within the shift."""
    vans = {v["id"]: v for v in doc["vans"]}
    packages = {p["id"]: p for p in doc["packages"]}
    placed = [p.id for b in plan.blocks for s in b.route.stops for p in s.packages] + list(plan.unassigned)
    assert sorted(placed) == sorted(packages)
    model = RoadModel()
    for b in plan.blocks:
        van = vans[b.van]
        mine = [packages[p.id] for s in b.route.stops for p in s.packages]
        assert sum(p["volume_l"] for p in mine) <= van["volume_l"] + 1e-6
        assert sum(p["weight_kg"] for p in mine) <= van["weight_kg"] + 1e-6
        here = (doc["lat"], doc["lon"])
        clock = START
        for stop in b.route.stops:
            leg = model.road_m(*here, stop.lat, stop.lon)
            tod = (clock - START.replace(hour=0)).total_seconds()
            clock += timedelta(seconds=model.seconds(leg, tod))
            assert abs((stop.eta - clock).total_seconds()) < 1.0
            if stop.window_start:
                clock = max(clock, stop.window_start)
            if stop.window_end:
                assert clock <= stop.window_end
            clock += timedelta(seconds=stop.service_s)
            here = (stop.lat, stop.lon)
        assert b.block.ends_at <= START + timedelta(hours=van["shift_hours"])


def test_a_station_day_becomes_feasible_blocks() -> None:
    doc = station_day(3, packages=80, vans=3, start=START)
    plan = plan_station(read_station(doc), RoadModelTimes(), SOLVER_S)
    assert plan.blocks and not plan.unassigned
    _check_plan(doc, plan)
    out = plan.to_dict()
    assert out["vehicles"] == len(plan.blocks) and out["distance_m"] > 0
    assert all(b["route"]["version"] == 1 and b["block"]["station"] == "DXX1" for b in out["blocks"])


def test_what_fits_no_van_is_reported_not_planned() -> None:
    doc = station_day(4, packages=30, vans=1, start=START)
    doc["vans"][0]["weight_kg"] = 20.0  # a cargo bike
    plan = plan_station(read_station(doc), RoadModelTimes(), SOLVER_S)
    assert plan.unassigned
    _check_plan(doc, plan)


def test_a_closed_area_drops_its_stops_and_a_slowdown_stretches_legs() -> None:
    doc = station_day(5, packages=30, vans=2, start=START, window_share=0.0)
    day = read_station(doc)
    centre = day.parcels[0]
    closed = Slowdowns(RoadModelTimes(), (Slowdown("a", centre.lat, centre.lon, 300.0, math.inf),))
    plan = plan_station(day, closed, SOLVER_S)
    inside = {p.package.id for p in day.parcels if distance_m(p.lat, p.lon, centre.lat, centre.lon) <= 300.0}
    assert centre.package.id in inside and set(plan.unassigned) == inside
    slow = Slowdowns(RoadModelTimes(), (Slowdown("b", day.lat, day.lon, 50_000.0, 2.0),))
    points = [(day.lat, day.lon), (centre.lat, centre.lon)]
    assert np.allclose(slow.seconds(points, 36000), 2 * RoadModelTimes().seconds(points, 36000))


def test_an_operator_matrix_is_a_second_travel_times_provider(tmp_path: Path) -> None:
    doc = station_day(6, packages=12, vans=1, start=START, window_share=0.0)
    day = read_station(doc)
    points = [(day.lat, day.lon), *((p.lat, p.lon) for p in day.parcels)]
    base = RoadModelTimes()
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps({"points": points, "distances": base.metres(points).tolist(),
                                "durations": base.seconds(points, 36000).tolist()}))
    matrix = MatrixTimes.from_file(path)
    assert np.allclose(matrix.metres(points[::-1]), base.metres(points[::-1]))
    plan = plan_station(day, matrix, SOLVER_S)
    assert not plan.unassigned and sum(len(b.route.stops) for b in plan.blocks) == len(
        {(p.address, p.lat, p.lon) for p in day.parcels})


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["packages"][0].pop("lat"), "packages[0].lat"),
    (lambda d: d["packages"][1].update(window_end="tomorrow"), "packages[1].window_end"),
    (lambda d: d["vans"][0].update(shift_hours=-1), "vans[0].shift_hours"),
    (lambda d: d["packages"].append(dict(d["packages"][0])), "appears twice"),
    (lambda d: d.update(vans=[]), "station.vans"),
])
def test_a_bad_station_file_is_rejected_by_name(mutate, field: str) -> None:
    doc = station_day(7, packages=5, vans=1, start=START)
    mutate(doc)
    with pytest.raises(PlanError, match=field.replace("[", r"\[").replace("]", r"\]")):
        read_station(doc)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.cli", "plan", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


@pytest.mark.parametrize("name", ["C201", "R107", "RC208"])
def test_solomon_through_the_cli_is_feasible_by_an_independent_check(name: str) -> None:
    done = _cli("--solomon", str(SOLOMON / f"{name}.txt"), "--time-limit", "1", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"routes", "vehicles", "distance"} and doc["vehicles"] == len(doc["routes"])
    problems, distance = check(SOLOMON / f"{name}.txt", doc["routes"])
    assert problems == []
    assert distance == pytest.approx(doc["distance"], abs=1e-3)


def test_the_checker_catches_what_it_must() -> None:
    path = SOLOMON / "C201.txt"
    done = _cli("--solomon", str(path), "--time-limit", "1", "--json")
    routes = json.loads(done.stdout)["routes"]
    assert any("exactly once" in p for p in check(path, [routes[0][1:], *routes[1:]])[0])
    assert any("load" in p for p in check(path, [[c for r in routes for c in r]])[0])
    assert any("due" in p for p in check(path, [list(reversed(r)) for r in routes])[0])


def test_station_cli_and_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "day.json"
    path.write_text(json.dumps(station_day(8, packages=20, vans=2, start=START)))
    done = _cli("--station", str(path), "--time-limit", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["blocks"]
    path.write_text("{not json")
    done = _cli("--station", str(path), "--json")
    assert done.returncode == 2 and "flexedge plan:" in done.stdout
