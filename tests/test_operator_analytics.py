"""The operator page's driver analytics: each figure computed by hand from the known event stream (plain
Python over the events the vans sent) and compared with the SQL the page runs over the cloud database."""
from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from cloud_sync.cloud.web.analytics import day_figures
from cloud_sync.cloud.web.readonly import ReadOnlyDb
from device.contract.domain import Event, EventType
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import OTHER_STATION, STATION
from tests.helpers.operator import DAY_TEXT, known_day, van_a_day, van_b_day


def _of_day(events: list[Event], kind: EventType, day: str) -> list[Event]:
    return [e for e in events if e.type is kind and e.ts.startswith(day)]


def _hours(a: str, b: str) -> float:
    return (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))
            ).total_seconds() / 3600


def by_hand(events: list[Event], day: str = DAY_TEXT) -> dict:
    done = _of_day(events, EventType.STOP_COMPLETED, day)
    arrived = _of_day(events, EventType.STOP_ARRIVED, day)
    photos = _of_day(events, EventType.PHOTO_CHECKED, day)
    windowed = [e for e in done if e.data["on_time"] is not None]
    stops_photographed = {(e.block, e.stop) for e in photos}
    exceptions: Counter[str] = Counter()
    for e in _of_day(events, EventType.DELIVERY_EXCEPTION, day):
        exceptions[e.data["reason"]] += len(e.data["packages"])
    return {
        "stops_per_hour": len(done) / _hours(min(e.ts for e in arrived), max(e.ts for e in done)),
        "on_time": (sum(e.data["on_time"] is True for e in windowed), len(windowed)),
        "first_attempt": (sum(e.data["outcome"] == "delivered" for e in done), len(done)),
        "photo_match": (sum(e.data["verdict"] == "match" for e in photos), len(photos)),
        "retakes": len(photos) - len(stops_photographed),
        "exceptions": dict(exceptions),
    }


@pytest.fixture(scope="module")
def db(module_cloud_target: CloudTarget, tmp_path_factory: pytest.TempPathFactory) -> ReadOnlyDb:
    """The known day on each engine: the figures are the same SQL definitions in either dialect."""
    known_day(tmp_path_factory.mktemp("analytics"), module_cloud_target)
    conn = ReadOnlyDb(module_cloud_target.db)
    yield conn
    conn.close()


def _row(figures: dict, device: str) -> dict:
    return next(r for r in figures["rows"] if r["device"] == device)


@pytest.mark.parametrize("device, events", [("van-a", van_a_day()), ("van-b", van_b_day())])
def test_each_figure_matches_the_hand_computation(db: ReadOnlyDb, device: str, events: list[Event]) -> None:
    row = _row(day_figures(db, DAY_TEXT, None), device)
    hand = by_hand(events)
    assert row["stops_per_hour"]["value"] == pytest.approx(hand["stops_per_hour"])
    for key in ("on_time", "first_attempt", "photo_match"):
        assert (row[key]["num"], row[key]["den"]) == hand[key], key
        assert row[key]["value"] == pytest.approx(hand[key][0] / hand[key][1])
    assert row["retakes"]["num"] == hand["retakes"]
    assert row.get("exceptions", {}) == hand["exceptions"]


def test_the_known_figures_of_van_a(db: ReadOnlyDb) -> None:
    """The same figures written out: 3 stops from 08:00 to 09:00, one of two windowed stops on time, one stop
    delivered in full, 3 of 4 photos matched after one retake, one refused and one no-access package."""
    row = _row(day_figures(db, DAY_TEXT, None), "van-a")
    assert row["stops_per_hour"]["value"] == pytest.approx(3.0)
    assert (row["on_time"]["num"], row["on_time"]["den"]) == (1, 2)
    assert (row["first_attempt"]["num"], row["first_attempt"]["den"]) == (1, 3)
    assert (row["photo_match"]["num"], row["photo_match"]["den"]) == (2, 3)
    assert (row["retakes"]["num"], row["retakes"]["den"]) == (1, 2)
    assert row["exceptions"] == {"refused": 1, "no_access": 1}


def test_a_station_manager_gets_only_their_station(db: ReadOnlyDb) -> None:
    assert [r["device"] for r in day_figures(db, DAY_TEXT, STATION)["rows"]] == ["van-a"]
    assert [r["device"] for r in day_figures(db, DAY_TEXT, OTHER_STATION)["rows"]] == ["van-b"]
    assert day_figures(db, DAY_TEXT, "NOPE")["rows"] == []


def test_other_days_are_not_counted(db: ReadOnlyDb) -> None:
    next_day = day_figures(db, "2026-11-26", None)["rows"]
    assert [(r["device"], r["first_attempt"]["den"]) for r in next_day] == [("van-a", 1)]


def test_every_figure_has_its_definition_on_the_page(db: ReadOnlyDb) -> None:
    metrics = day_figures(db, DAY_TEXT, None)["metrics"]
    assert [m["key"] for m in metrics] == ["stops_per_hour", "on_time", "first_attempt", "photo_match", "retakes",
                                           "exceptions"]
    assert all(len(m["definition"]) > 20 for m in metrics)


