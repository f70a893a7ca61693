"""The device side of the cloud link: drains the outbox to the cloud and takes offers, claim results, routes and
commands from it. A thin composition of four parts with one job each:

- `link.Link`: the connection, its Last Will, reconnects with jittered backoff, a clean stop;
- `uplink.Uplink`: the outbox drain, the cloud's end-to-end acks, the retained status;
- `downlink.Downlink`: inbound messages (checks, command replays, claim replies) onto `inbox`;
- `photos.PhotoUploads`: proof photos in resumable chunks from the store's photo index, sent by the uplink when
  no event waits.

Runs on the agent's asyncio loop through aiomqtt (paho-mqtt driven by add_reader/add_writer; see
connection.py): the store calls go to the store's writer thread via `asyncio.to_thread`, and everything else
(acks, claims, inbound checks) happens on the loop, so no state is shared between threads here.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import aiomqtt

from cloud_sync.connection import BrokerSettings
from cloud_sync.downlink import Downlink, Inbound
from cloud_sync.link import Link
from cloud_sync.messages import ClaimResult, Presence
from cloud_sync.photos import PhotoUploads
from cloud_sync.signing import Verifier
from cloud_sync.sync_settings import SyncCounters, SyncSettings
from cloud_sync.topics import FleetTopics
from cloud_sync.uplink import Uplink
from device.contract.domain import EventType, Lane
from device.store import EventStore

log = logging.getLogger(__name__)


class DeviceSync:
    """start()/stop(); `claim(block_id)`; inbound offers/routes/commands on `inbox` (an asyncio.Queue of
    Offers | RouteAssignment | Command); `counters`; `kick()` after appending events."""

    def __init__(self, store: EventStore, settings: SyncSettings, broker: BrokerSettings, verifier: Verifier,
                 *, inbox_size: int = 1000) -> None:
        self.store = store
        self.settings = settings
        fleet = FleetTopics(settings.fleet)
        self.topics = fleet.device(settings.device_id)
        self.offers_topic = fleet.offers(settings.station)
        self.counters = SyncCounters()
        self.link = Link(broker, settings.device_id, session_expiry_s=settings.session_expiry_s,
                         backoff=settings.backoff, counters=self.counters)
        self.photos = PhotoUploads(store, self.topics, self.counters, self.kick)
        self.uplink = Uplink(store, settings, self.topics, self.counters, self.photos)
        self.downlink = Downlink(store, settings, self.topics, self.offers_topic, verifier, self.counters, self.link,
                                 self.uplink.on_ack, inbox_size=inbox_size)
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> asyncio.Event:
        return self.link.connected

    @property
    def inbox(self) -> asyncio.Queue[Inbound]:
        return self.downlink.inbox

    async def start(self) -> None:
        will = aiomqtt.Will(self.topics.status, self.uplink.offline_status().to_payload(), qos=1, retain=True)
        self._task = asyncio.create_task(self.link.run(will, self._session, self.uplink.supersede_inflight),
                                         name=f"device-sync:{self.settings.device_id}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish the retained 'stopped' status and disconnect cleanly (so the Last Will is not sent)."""
        if self._task is None:
            return
        self.link.request_stop()
        self.uplink.kick()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._task)
        except TimeoutError:
            log.warning("sync did not stop within %.0f s; cancelling", timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def kick(self) -> None:
        """New events are in the outbox: look now instead of at the next idle poll."""
        self.uplink.kick()

    def report_status(self) -> None:
        """Something the operator should see changed (the disk filled up): publish the status now."""
        self.uplink.report_status()

    async def claim(self, block_id: str, timeout_s: float | None = None, *,
                    request_id: str | None = None) -> ClaimResult:
        return await self.downlink.claim(block_id, timeout_s, request_id=request_id)

    async def upload_photo(self, photo_id: str, path: Path | str) -> None:
        """Queue a file as a proof photo for upload in chunks, after the events (a lower priority); it resumes
        after an outage or a restart from the first chunk not yet acked. The agent's own photos are queued
        through the store's photo index when their event commits."""
        await self.photos.add(photo_id, path)

    async def photos_pending(self) -> list[str]:
        return await self.photos.pending()

    async def wait_drained(self, timeout_s: float | None) -> None:
        """Until the outbox is empty (every event acked by the cloud)."""
        await self.uplink.wait_drained(timeout_s)

    async def _session(self, client: aiomqtt.Client) -> None:
        await self.downlink.subscribe(client)
        live = await asyncio.to_thread(self.store.newest_pending, Lane.TRACK)
        if live is not None and live.type is not EventType.GPS_FIX:
            live = None  # the newest telemetry is a health event: no position to show first
        await self.uplink.publish_status(client, Presence.ONLINE, live)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.downlink.read(client))
            group.create_task(self.uplink.drain(client, live))
            group.create_task(self.uplink.refresh_status(client))
            group.create_task(self.link.until_stopped(
                lambda: self.uplink.publish_status(client, Presence.STOPPED, None)))
