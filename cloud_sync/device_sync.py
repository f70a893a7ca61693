"""The device side of the cloud link: drains the outbox to the cloud and takes offers, claim results, routes and
commands from it. A thin composition of four parts with one job each:

- `link.Link`: the connection, its Last Will, reconnects with jittered backoff, a clean stop;
- `uplink.Uplink`: the outbox drain, the cloud's end-to-end acks, the retained status;
- `downlink.Downlink`: inbound messages (checks, command replays, claim replies) onto `inbox`;
- `photos.PhotoUploads`: proof photos in resumable chunks from the store's photo index, sent by the uplink when
  no event waits.

Runs on the agent's asyncio loop through aiomqtt (paho-mqtt driven by add_reader/add_writer; see
connection.py): the store calls go to the store's writer via `asyncio.to_thread`, off the loop, and everything else
(acks, claims, inbound checks) happens on the loop, so no state is shared between threads here.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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

LINK_CHECK_S = 0.5  # how often the supervisor looks at the link task


async def _end(task: asyncio.Task[None]) -> None:
    """Cancel until the task has ended: a cancellation that lands while a task group inside it is already
    collecting its children's errors is absorbed into that group (and the link loop goes on), so one may not do."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=LINK_CHECK_S)


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
        self._task: asyncio.Task[None] | None = None  # the supervisor
        self._link_task: asyncio.Task[None] | None = None
        self._link_up = False

    @property
    def connected(self) -> asyncio.Event:
        return self.link.connected

    @property
    def inbox(self) -> asyncio.Queue[Inbound]:
        return self.downlink.inbox

    async def start(self) -> None:
        will = self.uplink.will()
        self._link_up = True
        self._task = asyncio.create_task(self._supervise(will), name=f"device-sync:{self.settings.device_id}")

    @property
    def healthy(self) -> bool:
        """The link task runs (connected or trying to connect: a broker out of reach is no fault of this
        process); False while it is dead or hung and waiting to be started again."""
        return self._task is not None and not self._task.done() and self._link_up

    async def _supervise(self, will: aiomqtt.Will) -> None:
        """Run the link task; when it dies or hangs (not connected and no attempt to connect for too long), log
        it, report unhealthy and start it again after a backoff, until stopped."""
        delays = self.settings.backoff.delays()
        while True:
            self.link.last_attempt = time.monotonic()
            self._link_task = asyncio.create_task(self.link.run(will, self._session, self.uplink.supersede_inflight),
                                                  name=f"device-link:{self.settings.device_id}")
            self._link_up = True
            await self._watch(self._link_task)
            if self.link.stop_requested.is_set():
                return
            self._link_up = False
            self.counters.link_restarts += 1
            error = None if self._link_task.cancelled() else self._link_task.exception()
            delay = next(delays)
            log.error("cloud link task ended (%r); starting it again in %.2f s", error, delay, exc_info=error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.link.stop_requested.wait()
            if self.link.stop_requested.is_set():
                return

    async def _watch(self, task: asyncio.Task[None]) -> None:
        """Until the link task ends; a hung one is cancelled. Cancelling the watch cancels the task."""
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=LINK_CHECK_S)
                if not task.done() and self.link.stuck(time.monotonic(), self.settings.stuck_grace_s):
                    log.error("cloud link hung: not connected and no attempt for too long; cancelling it")
                    await _end(task)
        except asyncio.CancelledError:
            await _end(task)
            raise

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
        live = await asyncio.to_thread(self.store.newest_pending, Lane.TRACK, EventType.GPS_FIX)
        await self.uplink.publish_status(client, Presence.ONLINE, live)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.downlink.read(client))
            group.create_task(self.uplink.drain(client, live))
            group.create_task(self.uplink.refresh_status(client))
            group.create_task(self.link.until_stopped(
                lambda: self.uplink.publish_status(client, Presence.STOPPED, None)))
