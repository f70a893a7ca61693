"""The durable event store on SQLite (sqlite-utils): outbox, hash chain, retention, current state."""
from device.store.errors import StoreClosed, StoreError, StoreFull
from device.store.event_store import (
    ChainReport,
    DiskCondition,
    EventStore,
    OutboxStats,
    PruneReport,
    RetentionPolicy,
    StoredEvent,
)

__all__ = ["ChainReport", "DiskCondition", "EventStore", "OutboxStats", "PruneReport", "RetentionPolicy",
           "StoreClosed", "StoreError", "StoreFull", "StoredEvent"]
