"""What the device side of the cloud link is told (settings) and what it counts (counters), shared by its parts."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cloud_sync.connection import DEFAULT_SESSION_EXPIRY_S, Backoff
from cloud_sync.errors import RejectReason
from cloud_sync.messages import MAX_INBOUND_BYTES, Compression


@dataclass(frozen=True)
class SyncSettings:
    device_id: str
    fleet: str
    station: str
    version: str = "unknown"  # the device software's, in the retained status
    batch_max_events: int = 1000
    batch_max_bytes: int = 512 * 1024
    compression: Compression = Compression.ZSTD
    compress_min_bytes: int = 2048  # smaller batches go plain: zstd would not pay for its header
    inflight_batches: int = 8  # batches sent and awaiting the cloud's ack at once
    ack_timeout_s: float = 15.0  # no ack within this: the batch goes again
    status_interval_s: float = 30.0  # retained status refresh (outbox depth, last ack)
    claim_timeout_s: float = 10.0
    max_inbound_bytes: int = MAX_INBOUND_BYTES
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    backoff: Backoff = Backoff()
    # Telemetry (breadcrumbs, health) waits until this many are pending or the oldest waited track_linger_s:
    # one batch of 24 costs far less on the wire than 24 batches of one. 1: sent at once.
    track_min_batch: int = 1
    track_linger_s: float = 0.0
    # Not connected and no attempt to connect for the longest backoff + the connect timeout + this: the link is
    # hung (e.g. aiomqtt's blocking connect waits for a thread of a busy executor) and is started again.
    stuck_grace_s: float = 30.0


@dataclass
class SyncCounters:
    """Running totals for status views and tests (mutated on the loop thread only)."""

    connects: int = 0
    batches_sent: int = 0
    events_sent: int = 0
    events_acked: int = 0
    batches_resent: int = 0  # batches sent again after a reconnect or an ack timeout
    acks_unknown: int = 0  # acks for batches of an earlier process (their events simply go again)
    routes_ignored: int = 0  # equal or lower version than the stored one
    photo_chunks_sent: int = 0
    photos_uploaded: int = 0
    photos_failed: int = 0  # the file went missing before it was uploaded
    inbox_dropped: int = 0
    link_restarts: int = 0  # the link task died or hung and was started again
    rejected: Counter[RejectReason] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        doc = {k: v for k, v in vars(self).items() if k != "rejected"}
        doc["rejected"] = {reason.value: n for reason, n in self.rejected.items()}
        return doc
