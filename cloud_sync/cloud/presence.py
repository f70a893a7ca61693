"""What the cloud keeps of a device's retained status: the newest figures it sent, and whether it is there.

A status the device made itself (online, stopped) replaces the record. The Last Will (offline, no `ts`) is made
at connect time and published by the broker when the device vanishes, so it knows nothing of the device's last
moments: the record keeps the last figures it had (outbox depth, oldest pending event, position, `ts` = when the
device last spoke) and only turns offline, noting when the cloud heard of it. Figures of a duration
(`oldest_pending_s`) are aged by the cloud's clock from `received_at`, never by the device's clock.
"""
from __future__ import annotations

from typing import Any, Mapping

from cloud_sync.messages import DeviceStatus, Presence


def status_record(status: DeviceStatus, previous: Mapping[str, Any] | None, received_at: float) -> dict[str, Any]:
    """The record to store for `status`, received at `received_at` (epoch seconds, the cloud's clock)."""
    if status.state is Presence.OFFLINE and not status.ts and previous:
        if previous.get("state") == Presence.OFFLINE.value:
            return dict(previous)  # the same will again (replayed to a restarted cloud): nothing new
        return {**previous, "state": Presence.OFFLINE.value, "version": status.version or previous.get("version"),
                "offline_at": received_at}
    return {"state": status.state.value, "ts": status.ts, "outbox_depth": status.outbox_depth,
            "last_ack_seq": status.last_ack_seq, "oldest_pending_s": status.oldest_pending_s,
            "version": status.version, "position": status.position, "storage": status.storage,
            "received_at": received_at}


def pending_age_s(record: Mapping[str, Any], now: float) -> float | None:
    """How long the device's oldest unacked event has waited by now: its age in the status, plus the time since
    the cloud received that status (a van offline for an hour has had its backlog waiting an hour longer)."""
    age = record.get("oldest_pending_s")
    if not isinstance(age, (int, float)) or isinstance(age, bool):
        return None
    received = record.get("received_at")
    since = now - received if isinstance(received, (int, float)) and not isinstance(received, bool) else 0.0
    return float(age) + max(0.0, since)
