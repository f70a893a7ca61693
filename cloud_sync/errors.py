"""The cloud_sync exception family. Third-party errors (paho, cryptography, sqlite) are converted at the edge."""
from __future__ import annotations

from enum import StrEnum


class SyncError(Exception):
    """Base of every cloud_sync error."""


class BrokerUnavailable(SyncError):
    """No connection to the broker right now."""


class ClaimTimeout(SyncError):
    def __init__(self, block_id: str, timeout_s: float) -> None:
        super().__init__(f"no answer to the claim of block {block_id} within {timeout_s:.0f} s")
        self.block_id = block_id


class PkiError(SyncError):
    """A certificate or key could not be made, read or written."""


class RejectReason(StrEnum):
    """Why an inbound message was refused (the counters are keyed by these)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    SCHEMA = "schema"
    BAD_SIGNATURE = "bad_signature"
    WRONG_DEVICE = "wrong_device"
    EXPIRED = "expired"
    REPLAY = "replay"
    STALE_VERSION = "stale_version"
    UNKNOWN_BATCH = "unknown_batch"
    UNKNOWN_REQUEST = "unknown_request"
    UNEXPECTED_TOPIC = "unexpected_topic"
    QUOTA = "quota"  # within the contract, but more than the cloud keeps for one device
    MALFORMED = "malformed"  # a payload the checks let through made the handler fail: a bug, still a reject


class MessageRejected(SyncError):
    """An inbound payload failed a check; `reason` is the counter it goes to."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"MessageRejected({self.reason.value!r}, {self.detail!r})"
