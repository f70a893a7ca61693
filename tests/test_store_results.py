"""What an append returns: one item per event given, made from the committed rows when first read."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from device.contract.domain import Event, EventType, Lane
from device.store import EventStore, RetentionPolicy
from device.store.outbox import StoredEvents


def test_results_read_back_as_a_list_of_the_stored_rows(tmp_path: Path) -> None:
    events = [Event(EventType.PACKAGE_SCANNED, {"package": f"TBA{i:06d}"}) for i in range(3)] + \
        [Event(EventType.GPS_FIX, {"n": 1})]
    with EventStore(tmp_path / "e.db") as store:
        stored = store.append_many(events)
        pending = store.pending()
    assert isinstance(stored, StoredEvents) and len(stored) == 4
    assert stored == pending and pending == stored  # the same rows as read back from the outbox
    assert stored[-1] is not None and stored[-1].lane is Lane.TRACK and stored[-1].type is EventType.GPS_FIX
    assert [s.seq for s in stored[1:3] if s is not None] == [2, 3]
    assert [json.loads(s.body)["id"] for s in stored if s is not None] == [e.id for e in events]
    assert repr(stored).startswith("StoredEvents([StoredEvent(seq=1,")


def test_appends_committed_together_each_get_their_own_rows_with_thinned_points_as_none(tmp_path: Path) -> None:
    always_low = RetentionPolicy(min_free_bytes=1 << 62, low_disk_track_interval_s=10.0, disk_check_interval_s=0)

    def burst(k: int) -> list[Event]:  # a scan between two fixes 1 s apart: the second fix is thinned
        return [Event(EventType.GPS_FIX, {"k": k}, mono=100.0 * k), Event(EventType.PACKAGE_SCANNED, {"k": k}),
                Event(EventType.GPS_FIX, {"k": k}, mono=100.0 * k + 1)]

    async def appends(store: EventStore) -> list[list[int | None]]:
        # queued before any is awaited: the writer takes them in one group when it can
        results = await asyncio.gather(*(store.append_async(burst(k)) for k in range(1, 6)))
        return [[None if s is None else s.seq for s in r] for r in results]

    with EventStore(tmp_path / "e.db", always_low) as store:
        seqs = asyncio.run(appends(store))
        assert store.verify_chain().ok
    assert seqs == [[2 * k - 1, 2 * k, None] for k in range(1, 6)]
