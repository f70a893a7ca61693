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
from typing import Any

from cloud_sync.cloud.web.cache import VersionedCache, versions
from cloud_sync.cloud.web.readonly import ReadOnlyDb

DAY_OF = "substr(json_extract(body, '$.ts'), 1, 10) = :day"
READS = ("stop.arrived", "stop.completed", "photo.checked", "delivery.exception")  # every type the SQL below reads


def _of(types: str) -> str:
    return f"FROM events WHERE type IN ({types}) AND device = :device AND {DAY_OF}"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    definition: str
    sql: str  # -> (device, numerator, denominator)
    percent: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "definition": self.definition, "percent": self.percent}


METRICS = (
    Metric("stops_per_hour", "Stops / hour",
           "stops completed ÷ hours from the day's first stop arrival to its last stop completion",
           f"""SELECT device, SUM(type = 'stop.completed'),
                      24 * (julianday(MAX(CASE WHEN type = 'stop.completed' THEN json_extract(body, '$.ts') END))
                            - julianday(MIN(CASE WHEN type = 'stop.arrived' THEN json_extract(body, '$.ts') END)))
               {_of("'stop.arrived', 'stop.completed'")} GROUP BY device""", percent=False),
    Metric("on_time", "On time",
           "stops completed within their delivery window ÷ completed stops that had a window and a delivery",
           f"""SELECT device, SUM(json_extract(body, '$.data.on_time') = 1),
                      SUM(json_extract(body, '$.data.on_time') IS NOT NULL)
               {_of("'stop.completed'")} GROUP BY device"""),
    Metric("first_attempt", "First-attempt success",
           "stops where every package was delivered at the visit (outcome 'delivered') ÷ stops completed",
           f"""SELECT device, SUM(json_extract(body, '$.data.outcome') = 'delivered'), COUNT(*)
               {_of("'stop.completed'")} GROUP BY device"""),
    Metric("photo_match", "Photo match",
           "proof photos whose house number matched the stop ÷ proof photos checked",
           f"""SELECT device, SUM(json_extract(body, '$.data.verdict') = 'match'), COUNT(*)
               {_of("'photo.checked'")} GROUP BY device"""),
    Metric("retakes", "Photo retakes",
           "proof photos beyond the first at the same stop of the same block (numerator); stops photographed "
           "(denominator)",
           f"""SELECT device, COUNT(*) - COUNT(DISTINCT json_extract(body, '$.block') || '/' ||
                                          json_extract(body, '$.stop')),
                      COUNT(DISTINCT json_extract(body, '$.block') || '/' || json_extract(body, '$.stop'))
               {_of("'photo.checked'")} GROUP BY device""", percent=False),
)
EXCEPTIONS = Metric(
    "exceptions", "Exceptions by reason", "packages reported undelivered, by the reason given",
    f"""SELECT device, json_extract(body, '$.data.reason'), SUM(json_array_length(body, '$.data.packages'))
        {_of("'delivery.exception'")} GROUP BY device, 2 ORDER BY device, 2""", percent=False)


def device_figures(db: ReadOnlyDb, device: str, day: str) -> dict[str, Any]:
    """One device's figures of a day: {<key>: {"num", "den", "value"}, "exceptions": {reason: packages}}."""
    args = {"day": day, "device": device}
    row: dict[str, Any] = {}
    for metric in METRICS:
        for _, num, den in db.rows(metric.sql, args):
            row[metric.key] = {"num": num, "den": den, "value": None if not den or den <= 0 else num / den}
    for _, reason, packages in db.rows(EXCEPTIONS.sql, args):
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
