"""Re-planning under traffic and weather: a closed area drops its stops, finished stops stay in front, windows
still ahead are kept; factor updates are parsed strictly and a bad one is a counted rejection. The whole loop
with real processes: a factor for an area -> the cloud's new route version -> the van's console shows it."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cloud_sync.cloud.planning.replan import replan, touches
from cloud_sync.cloud.planning.station import plan_station, read_station
from cloud_sync.cloud.planning.travel import RoadModelTimes, Slowdown, Slowdowns
from cloud_sync.cloud.replanner import FactorError, parse_update
from device.console.api import REQUEST_HEADER, TOKEN_HEADER
from device.contract.domain import Route
from device.contract.travel import distance_m
from device.testbench.procs import free_tcp_port, wait_for_port
from device.testbench.stations import station_day
from tests.helpers.fleet import CLI_CLOUD_PREFIX, FLEET, STATION, FleetPki, device_config
from tests.test_console_run import _request

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)


def _route(seed: int = 11, packages: int = 14) -> Route:
    doc = station_day(seed, packages=packages, vans=1, start=NOW - timedelta(hours=1), window_share=0.0)
    return plan_station(read_station(doc), RoadModelTimes(), 1.0).blocks[0].route


def test_a_closure_drops_its_stops_and_keeps_finished_ones_in_front() -> None:
    route = _route()
    finished = {s.id for s in route.stops[:3]}
    target = route.stops[5]
    closed = Slowdown("works", target.lat, target.lon, 150.0, math.inf)
    assert touches(route, finished, [closed], NOW)
    here = (route.stops[2].lat, route.stops[2].lon)
    new = replan(route, finished, here, NOW, Slowdowns(RoadModelTimes(), (closed,)), 1.0)
    inside = {s.id for s in route.stops if s.id not in finished
              and distance_m(s.lat, s.lon, target.lat, target.lon) <= 150.0}
    assert target.id in inside
    assert [s.id for s in new.stops[:3]] == [s.id for s in route.stops[:3]]
    assert {s.id for s in new.stops} == {s.id for s in route.stops} - inside
    etas = [s.eta for s in new.stops[3:]]
    assert all(e is not None and e > NOW for e in etas) and etas == sorted(etas)
    assert not touches(route, finished | inside, [closed], NOW)


def test_windows_still_ahead_are_kept() -> None:
    route = _route(12, 10)
    far = max(route.stops, key=lambda s: distance_m(s.lat, s.lon, route.stops[0].lat, route.stops[0].lon))
    due = NOW + timedelta(minutes=25)
    stops = tuple(s if s.id != far.id else type(s)(**{**s.__dict__, "window_end": due}) for s in route.stops)
    route = Route(route.block_id, 1, stops)
    new = replan(route, set(), (route.stops[0].lat, route.stops[0].lon), NOW, RoadModelTimes(), 1.0)
    assert next(s for s in new.stops if s.id == far.id).eta <= due


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not JSON"),
    ('{"area": "a", "lat": 47.6, "lon": -122.3, "radius_m": 500, "factor": 0.5}', "factor"),
    ('{"area": "a", "lat": 147.6, "lon": -122.3, "radius_m": 500, "factor": 2}', "lat"),
    ('{"lat": 47.6, "lon": -122.3, "radius_m": 500, "factor": 2}', "area"),
    ('{"area": "a", "lat": 47.6, "lon": -122.3, "radius_m": 500, "factor": 2, "from": "soon"}', "from"),
    ("[1, 2]", "object"),
])
def test_bad_factor_updates_are_rejected_by_name(line: str, problem: str) -> None:
    with pytest.raises(FactorError, match=problem):
        parse_update(line)


def test_a_factor_update_is_read() -> None:
    update = parse_update('{"area": "bridge", "lat": 47.6, "lon": -122.3, "radius_m": 800, "factor": "closed"}')
    assert update.closed and update.area == "bridge" and update.start_s == 0
    assert parse_update('{"area": "rain", "lat": 47.6, "lon": -122.3, "radius_m": 9000, "factor": 1.4}').factor == 1.4


# --- the whole loop, real processes ------------------------------------------------------------------------


def _agent_config(tmp_path: Path, fleet: FleetPki, mqtt_port: int, console_port: int) -> Path:
    """van-b's config of the end-to-end sync tests, with its console on and no GPS."""
    path = device_config(tmp_path, fleet, mqtt_port, "van-b", 'batch_max_events = 100\n[logging]\nlevel = "WARNING"')
    path.write_text(path.read_text() + f"""
[gps]
enabled = false
[console]
enabled = true
port = {console_port}
""")
    return path


def _poll(get, predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = get()
        if predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {value!r:.600}")


def test_a_traffic_closure_reaches_the_vans_console(tls_broker, fleet: FleetPki, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    doc = station_day(21, packages=10, vans=1, start=now - timedelta(minutes=5), window_share=0.0,
                      station=STATION)
    planned = plan_station(read_station(doc), RoadModelTimes(), 1.0).blocks[0]
    blocks, feed = tmp_path / "blocks.json", tmp_path / "traffic.jsonl"
    blocks.write_text(json.dumps([{"block": planned.block.to_dict(), "route": planned.route.to_dict()}]))
    feed.write_text("")
    cloud_log, agent_log = open(tmp_path / "cloud.log", "wb"), open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    cloud = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "cloud", "--db", str(tmp_path / "cloud.db"), "--fleet", FLEET,
         "--broker", f"127.0.0.1:{tls_broker.port}", "--pki", str(fleet.pki.dir), "--client-prefix", CLI_CLOUD_PREFIX,
         "--blocks", str(blocks), "--traffic", str(feed), "--replan-time-limit", "1", "--log-level", "INFO"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=cloud_log)
    console_port = free_tcp_port()
    agent = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config",
                              str(_agent_config(tmp_path, fleet, tls_broker.port, console_port))],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=agent_log)
    base = f"http://127.0.0.1:{console_port}"
    try:
        assert json.loads(cloud.stdout.readline())["ready"]
        wait_for_port(console_port, timeout_s=30)
        code = _request(f"{base}/api/pairing-code")[1]["code"]
        token = {TOKEN_HEADER: _request(f"{base}/api/pair", {"code": code}, {REQUEST_HEADER: "1"})[1]["token"]}
        post = {REQUEST_HEADER: "1", **token}

        def view() -> dict:
            return _request(f"{base}/api/view", headers=token)[1]["view"]
        _poll(view, lambda v: any(b["id"] == planned.block.id for b in v["offers"]), 30, "the offer")
        _request(f"{base}/api/claim", {"block_id": planned.block.id}, post)
        _poll(view, lambda v: v["phase"] == "loading", 30, "route v1")
        for package in planned.route.manifest():
            _request(f"{base}/api/scan", {"code": package}, post)
        _request(f"{base}/api/loading-done", {}, post)
        before = _poll(view, lambda v: v["phase"] == "on_route", 10, "on route")
        assert before["route_version"] == 1 and len(before["etas"]) == len(planned.route.stops)
        target = planned.route.stops[len(planned.route.stops) // 2]
        with feed.open("a") as out:
            out.write("not a factor update\n")
            out.write(json.dumps({"area": "works", "lat": target.lat, "lon": target.lon, "radius_m": 60,
                                  "factor": "closed"}) + "\n")
        after = _poll(view, lambda v: v["route_version"] == 2, 30, "route v2 on the console")
    finally:
        agent.send_signal(signal.SIGTERM)
        cloud.send_signal(signal.SIGTERM)
        agent_code, cloud_code = agent.wait(20), cloud.wait(20)
        cloud.stdout.close()
        cloud_log.close()
        agent_log.close()
    order = [s["id"] for s in after["stops"]]
    open_stops = [s["id"] for s in after["stops"] if not s["done"] and not s.get("removed")]
    assert target.id not in order and len(order) == len(planned.route.stops) - 1
    assert set(after["etas"]) == set(open_stops) and all(after["etas"][i] for i in open_stops)
    logged = (tmp_path / "cloud.log").read_text()
    assert "factor update rejected" in logged and "re-planned" in logged
    assert agent_code == 0 and cloud_code == 0
