"""The agent core's interface to the cloud: what it needs, in its own types (ports and adapters, STYLE.md item 16).

Inputs come in as workflow inputs (offers, routes) or a `CloudCommand`, already verified by the link; claims and
kicks go out. `device.cloud_adapter.CloudAdapter` implements it with cloud_sync; the core never sees MQTT types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from device.workflow.inputs import ClaimResult, OffersReceived, RouteReceived


@dataclass(frozen=True)
class CloudCommand:
    """A verified, unexpired, first-seen command from the cloud for this unit."""

    id: str
    name: str
    args: Mapping[str, Any]


CloudInput = OffersReceived | RouteReceived | CloudCommand


class CloudPort(Protocol):
    @property
    def online(self) -> bool:
        """Connected to the broker now."""

    async def start(self) -> None:
        """Connect (and keep reconnecting) in the background."""

    async def stop(self) -> None:
        """Say goodbye to the cloud and disconnect."""

    async def receive(self) -> CloudInput:
        """The next input from the cloud, in the order the link accepted them."""

    async def claim(self, block_id: str, request_id: str) -> ClaimResult:
        """Ask for a block with the request id the workflow recorded in its claim event (so the device's record
        and the cloud's correlation name the same request); a refusal, a timeout or a dead link come back as a
        result that is not granted."""

    def kick(self) -> None:
        """New events are in the outbox."""

    def report_status(self) -> None:
        """Something the operator should see changed (a full disk): publish the status now."""

    async def wait_drained(self, timeout_s: float | None) -> None:
        """Until the cloud acked every event in the outbox; TimeoutError after `timeout_s`."""

    def counters(self) -> dict[str, Any]:
        """The link's running totals, for the health event."""
