"""Reads and shortcuts on an event store that only tests need (the product's store has no API for them)."""
from __future__ import annotations

import json
import sqlite3

from device.contract.domain import Lane, Route
from device.store import EventStore

ALL = 1 << 30  # "every pending event" for `EventStore.pending`


def current_route(store: EventStore, block_id: str) -> Route | None:
    """The newest stored version of a block's route, read through a read-only connection of its own (WAL: the
    store's writer is not disturbed and every committed route is seen)."""
    conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT body FROM routes WHERE block_id = ? ORDER BY version DESC LIMIT 1",
                           [block_id]).fetchone()
    finally:
        conn.close()
    return None if row is None else Route.from_dict(json.loads(row[0]))


def mark_acked_upto(store: EventStore, upto_seq: int, lane: Lane | None = None) -> int:
    """Ack every pending event with seq <= upto_seq (of one lane, if given), as the cloud's acks would."""
    return store.mark_acked([e.seq for e in store.pending(ALL, ALL, lane) if e.seq <= upto_seq])
