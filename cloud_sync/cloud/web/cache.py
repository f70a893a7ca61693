"""Figures per device, kept while the device's data is unchanged.

The key's version is when the newest event of the types a figure reads arrived (`received_at`, through the
operator_events_by_type index): a stored event of those types, late or not, changes it, so a cached figure is never
older than the database, and the GPS breadcrumbs a moving van sends all day do not invalidate it. The
figures themselves are always the SQL definitions run over the stored events (analytics.py, queries.py);
this only avoids re-running them for the vans that stored nothing of those types since the last look.
Bounded (least recently used out).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

from cloud_sync.cloud.web.readonly import ReadOnlyDb
from cloud_sync.cloud.web.scope import device_in_scope

MAX_ENTRIES = 50_000  # a few figures for each of 10,000 vans


class VersionedCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._items: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = self.misses = 0

    def get(self, key: Hashable, version: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            held = self._items.get(key)
            if held is not None and held[0] == version:
                self._items.move_to_end(key)
                self.hits += 1
                return held[1]
        value = compute()
        with self._lock:
            self.misses += 1
            self._items[key] = (version, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value


def versions(db: ReadOnlyDb, station: str | None, types: tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
    """device -> (newest arrival of each type) for the devices in scope: one index seek per device and type."""
    columns = ", ".join(f"(SELECT MAX(received_at) FROM events e WHERE e.type = :t{i} AND e.device = d.device)"
                        for i in range(len(types)))
    args: dict[str, Any] = {"station": station, **{f"t{i}": t for i, t in enumerate(types)}}
    return {row[0]: row[1:] for row in db.rows(
        f"SELECT d.device, {columns} FROM devices d WHERE {device_in_scope('d.device')} ORDER BY d.device", args)}
