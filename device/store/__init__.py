"""The durable event store on SQLite (sqlite-utils): the outbox (events, hash chain, acks, retention) and the state
kept beside it (key/value, routes, photo index, commands received)."""
from device.store.errors import StoreClosed, StoreError, StoreFull
from device.store.outbox import (
    ChainReport,
    DiskCondition,
    EventStore,
    OutboxStats,
    PruneReport,
    RetentionPolicy,
    StoredEvent,
)
from device.store.received_commands import ReceivedCommand
from device.store.state import StoreState

__all__ = ["ChainReport", "DiskCondition", "EventStore", "OutboxStats", "PruneReport", "ReceivedCommand",
           "RetentionPolicy", "StoreClosed", "StoreError", "StoreFull", "StoreState", "StoredEvent"]
