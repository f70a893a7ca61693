"""Driver analytics, each figure defined once: a SQL query over the stored events (no second copy of the data)
and the sentence the page shows as its definition. Per device (a van and its driver) and per UTC day of the
events' own timestamps.

Each ratio query returns (device, numerator, denominator) for one device (`:device`); the value is
numerator / denominator. A day's table runs them per device in the viewer's scope, through a cache that keeps
a device's figures until it sends a new batch (cache.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from cloud_sync.cloud.engine import Dialect
from cloud_sync.cloud.web.cache import VersionedCache, versions
from cloud_sync.cloud.web.readonly import ReadOnlyDb

READS = ("stop.arrived", "stop.completed", "photo.checked", "delivery.exception")  # every type the SQL below reads


def _of(d: Dialect, types: str) -> str:
    day_of = f"substr({d.json_text('body', 'ts')}, 1, 10) = :day"
    return f"FROM events WHERE type IN ({types}) AND device = :device AND {day_of}"


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    definition: str
    sql: Callable[[Dialect], str]  # -> (device, numerator, denominator)
    percent: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "definition": self.definition, "percent": self.percent}


def _stop(d: Dialect) -> str:
    return f"{d.json_text('body', 'block')} || '/' || {d.json_text('body', 'stop')}"


METRICS = (
    Metric("stops_per_hour", "Stops / hour",
           "stops completed ÷ hours from the day's first stop arrival to its last stop completion",
           lambda d: f"""SELECT device, {_count("type = 'stop.completed'")},
                      {d.hours_between(f"MIN(CASE WHEN type = 'stop.arrived' THEN {d.json_text('body', 'ts')} END)",
                                       f"MAX(CASE WHEN type = 'stop.completed' THEN {d.json_text('body', 'ts')} END)")}
               {_of(d, "'stop.arrived', 'stop.completed'")} GROUP BY device""", percent=False),
    Metric("on_time", "On time",
           "stops completed within their delivery window ÷ completed stops that had a window and a delivery",
           lambda d: f"""SELECT device, {_count(f"{d.json_flag('body', 'data', 'on_time')} = 1")},
                      {_count(f"{d.json_flag('body', 'data', 'on_time')} IS NOT NULL")}
               {_of(d, "'stop.completed'")} GROUP BY device"""),
    Metric("first_attempt", "First-attempt success",
           "stops where every package was delivered at the visit (outcome 'delivered') ÷ stops completed",
           lambda d: f"""SELECT device, {_count(f"{d.json_text('body', 'data', 'outcome')} = 'delivered'")}, COUNT(*)
               {_of(d, "'stop.completed'")} GROUP BY device"""),
    Metric("photo_match", "Photo match",
           "proof photos whose house number matched the stop ÷ proof photos checked",
           lambda d: f"""SELECT device, {_count(f"{d.json_text('body', 'data', 'verdict')} = 'match'")}, COUNT(*)
               {_of(d, "'photo.checked'")} GROUP BY device"""),
    Metric("retakes", "Photo retakes",
           "proof photos beyond the first at the same stop of the same block (numerator); stops photographed "
           "(denominator)",
           lambda d: f"""SELECT device, COUNT(*) - COUNT(DISTINCT {_stop(d)}), COUNT(DISTINCT {_stop(d)})
               {_of(d, "'photo.checked'")} GROUP BY device""", percent=False),
)
EXCEPTIONS = Metric(
    "exceptions", "Exceptions by reason", "packages reported undelivered, by the reason given",
    lambda d: f"""SELECT device, {d.json_text('body', 'data', 'reason')},
                         SUM({d.json_array_length('body', 'data', 'packages')})
        {_of(d, "'delivery.exception'")} GROUP BY device, 2 ORDER BY device, 2""", percent=False)


def device_figures(db: ReadOnlyDb, device: str, day: str) -> dict[str, Any]:
    """One device's figures of a day: {<key>: {"num", "den", "value"}, "exceptions": {reason: packages}}."""
    args = {"day": day, "device": device}
    row: dict[str, Any] = {}
    for metric in METRICS:
        for _, num, den in db.rows(metric.sql(db.dialect), args):
            row[metric.key] = {"num": num, "den": den, "value": None if not den or den <= 0 else num / den}
    for _, reason, packages in db.rows(EXCEPTIONS.sql(db.dialect), args):
        row.setdefault("exceptions", {})[reason] = packages
    return row


def day_figures(db: ReadOnlyDb, day: str, station: str | None, cache: VersionedCache | None = None
                ) -> dict[str, Any]:
    """{"metrics": definitions, "rows": [{"device", <key>: {"num", "den", "value"}, "exceptions": {...}}]}"""
    cache = cache or VersionedCache()
    rows = []
    for device, version in versions(db, station, READS).items():
        if all(v is None for v in version):
            continue  # none of these events from this device yet
        figures = cache.get(("day", device, day), version, partial(device_figures, db, device, day))
        if figures:
            rows.append({"device": device, **figures})
    return {"day": day, "metrics": [m.to_dict() for m in (*METRICS, EXCEPTIONS)], "rows": rows}
