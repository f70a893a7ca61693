"""The hash chain's bytes do not depend on how the store builds them: over many generated events, what the store
commits (body and hash) is byte for byte the chain's definition applied to the contract's event document."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from device.contract.chain import GENESIS_HASH, canonical_bytes, hash_body, link, next_digest
from device.contract.domain import Event, EventType
from device.contract.position import Position
from device.store import EventStore

_text = st.text(max_size=12)  # any unicode, quotes and backslashes included
_scalars = st.none() | st.booleans() | st.integers(-(2 ** 53), 2 ** 53) | \
    st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8)
_fixes = st.none() | st.builds(
    lambda lat, lon, speed: Position.from_dict({"time": "2026-11-29T18:00:00.000Z", "mode": 3, "lat": lat,
                                                "lon": lon, "speed": speed}),
    st.floats(-90, 90), st.floats(-180, 180), st.floats(0, 60))
_events = st.builds(
    lambda event_type, data, block, stop, fix, mono: Event(event_type, data, block=block, stop=stop, fix=fix,
                                                           mono=mono),
    st.sampled_from(list(EventType)), st.dictionaries(_text, _json, max_size=5), st.none() | _text,
    st.none() | _text, _fixes, st.floats(0, 1e9))


def contract_doc(event: Event, seq: int) -> dict[str, Any]:
    """The event document of DESIGN.md section 3, written out here key by key (in no particular order)."""
    return {"type": event.type.value, "id": event.id, "seq": seq, "ts": event.ts, "mono": event.mono,
            "data": dict(event.data), "block": event.block, "stop": event.stop,
            "fix": None if event.fix is None else dict(event.fix.doc)}


@given(st.lists(_events, min_size=1, max_size=80))
@settings(max_examples=60, deadline=None)
def test_stored_bodies_and_hashes_are_the_chain_definition_over_the_contract_document(
        tmp_path_factory: Any, events: list[Event]) -> None:
    path: Path = tmp_path_factory.mktemp("chain") / "events.db"
    with EventStore(path) as store:
        stored = store.append_many(events)
    assert stored == list(stored) and len(stored) == len(events)
    prev = GENESIS_HASH
    for seq, (event, row) in enumerate(zip(events, stored), start=1):
        assert row is not None and row.seq == seq and row.type is event.type and row.lane is event.lane
        doc = contract_doc(event, seq)
        body = canonical_bytes(doc)
        assert row.body.encode() == body
        prev = hash_body(prev, body)
        assert row.hash == prev


@given(st.binary(min_size=32, max_size=32), _events, st.integers(1, 2 ** 40))
def test_link_is_canonical_bytes_then_next_digest(prev: bytes, event: Event, seq: int) -> None:
    doc = contract_doc(event, seq)
    assert event.to_dict(seq) == doc
    body = canonical_bytes(doc)
    assert link(prev, event.to_dict(seq)) == (body, next_digest(prev, body))
