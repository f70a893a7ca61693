"""The uplink: drains the outbox to the cloud in batches, most urgent lane first, and keeps the retained status.

The outbox is the source of truth (STYLE.md item 7): an event is marked acked only when the cloud's ack for its
batch arrives; whatever is in flight when a connection drops is sent again on the next one (event ids make that
harmless), and a batch without an ack within the timeout is sent again too. How many batches wait for their
acks at once (at most `inflight_batches`) and how long (at least `ack_timeout_s`) follow the acks seen
(`AckPacing`): a slow cloud gets fewer batches and later resends, not more. With no event waiting, a photo
chunk goes (`PhotoUploads`); its ack comes back through the same window of batches in flight.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import aiomqtt
import orjson

from cloud_sync.ack_pacing import AckPacing
from cloud_sync.connection import make_will
from cloud_sync.messages import BatchAck, Compression, DeviceStatus, EventBatch, Presence
from cloud_sync.photos import PhotoGone, PhotoUploads
from cloud_sync.sync_settings import SyncCounters, SyncSettings
from cloud_sync.topics import DeviceTopics
from device.contract.domain import EventType, Lane, new_event_id
from device.store import EventStore, StoreError
from device.store.outbox import StoredEvent

log = logging.getLogger(__name__)

LANE_ORDER = (Lane.EVENTS, Lane.TRACK)  # proofs, scans, blocks before the telemetry (breadcrumbs, health)
IDLE_POLL_S = 1.0  # with nothing to send, look at the outbox again this often (kick() wakes sooner)
SUPERSEDED_BATCHES_KEPT = 512  # batches sent on an earlier connection whose late acks are still honoured
DRAINED_POLL_S = 0.1  # wait_drained looks at the outbox this often
PHOTO_CHUNKS_IN_FLIGHT = 2  # 64 KiB each: on a 32 KiB/s cell link, two are acked well within the ack timeout


@dataclass(frozen=True)
class _Sent:
    lane: Lane | None  # None: a photo chunk
    seqs: tuple[int, ...]  # event seqs, or (chunk index, chunk count) of a photo chunk
    sent_at: float
    photo_id: str | None = None


class Uplink:
    def __init__(self, store: EventStore, settings: SyncSettings, topics: DeviceTopics, counters: SyncCounters,
                 photos: PhotoUploads) -> None:
        self.store = store
        self.settings = settings
        self.topics = topics
        self.counters = counters
        self.photos = photos
        self._wakeup = asyncio.Event()
        self._status_due = asyncio.Event()
        self._inflight: dict[str, _Sent] = {}
        self.pacing = AckPacing(settings.ack_timeout_s, settings.inflight_batches)
        self._superseded: OrderedDict[str, _Sent] = OrderedDict()
        self._rewind = False  # set when an ack could not be recorded: resend from the oldest unacked event
        self._track_waiting_since: float | None = None  # when unsent telemetry was first seen waiting
        self._flush = 0  # wait_drained() callers: telemetry goes at once while any waits

    def kick(self) -> None:
        """New events are in the outbox: look now instead of at the next idle poll."""
        self._wakeup.set()

    async def wait_drained(self, timeout_s: float | None) -> None:
        """Until the outbox is empty (every event acked by the cloud)."""
        self._flush += 1
        self.kick()
        try:
            async with asyncio.timeout(timeout_s):
                while await asyncio.to_thread(self._floor_seq):
                    await asyncio.sleep(DRAINED_POLL_S)
        finally:
            self._flush -= 1

    # --- status ------------------------------------------------------------------------------------

    def offline_status(self) -> DeviceStatus:
        """The Last Will: the broker publishes it (retained) when this device vanishes, long after it was made, so
        it carries no time and no figures; the cloud keeps the last ones it had."""
        return DeviceStatus(Presence.OFFLINE, self.settings.device_id, self.settings.version, ts="")

    def will(self) -> aiomqtt.Will:
        """Retained, published `will_delay_s` after the connection is lost unless the device is back by then: a
        short network change does not show the van offline."""
        return make_will(self.topics.status, self.offline_status().to_payload(), self.settings.will_delay_s)

    async def publish_status(self, client: aiomqtt.Client, state: Presence, live: StoredEvent | None) -> None:
        """`live`: the newest breadcrumb, if the caller has it; else the newest one still waiting in the outbox (the
        cloud has not seen it: the status shows the operator where the van is while telemetry gathers)."""
        stats = await asyncio.to_thread(self.store.stats)
        if live is None:
            live = await asyncio.to_thread(self.store.newest_pending, Lane.TRACK, EventType.GPS_FIX)
        position = orjson.loads(live.body).get("fix") if live is not None else None
        status = DeviceStatus(state, self.settings.device_id, self.settings.version, stats.depth,
                              stats.last_acked_seq, position, storage=self.store.disk_condition.value,
                              oldest_pending_s=stats.oldest_pending_age_s)
        await client.publish(self.topics.status, status.to_payload(), qos=1, retain=True)

    def report_status(self) -> None:
        """Something the operator should see changed (the disk filled up): publish the status now."""
        self._status_due.set()

    async def refresh_status(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_interval_s):
                    await self._status_due.wait()
            self._status_due.clear()
            await self.publish_status(client, Presence.ONLINE, None)

    # --- the outbox drain --------------------------------------------------------------------------

    def supersede_inflight(self) -> None:
        """Batches of a closed connection (or timed out) go again; a late ack for them still counts."""
        for batch_id, sent in self._inflight.items():
            self._superseded[batch_id] = sent
            self.counters.batches_resent += 1
        self._inflight.clear()
        while len(self._superseded) > SUPERSEDED_BATCHES_KEPT:
            self._superseded.popitem(last=False)

    def _floor_seq(self) -> int:
        """The lowest unacked seq (0 if none). Per lane: each lookup is one step on the pending index."""
        heads = [events[0].seq for lane in LANE_ORDER if (events := self.store.pending(limit=1, lane=lane))]
        return min(heads, default=0)

    def _next_batch(self, cursors: dict[Lane, int], now: float) -> tuple[Lane, list[StoredEvent], int]:
        """(lane, events, floor seq): the oldest unsent events of the most urgent lane with any; telemetry only
        once enough has gathered (track_min_batch) or waited long enough (track_linger_s). Store thread."""
        floor_seq = self._floor_seq()
        for lane in LANE_ORDER:
            events = self.store.pending(self.settings.batch_max_events, self.settings.batch_max_bytes, lane,
                                        after_seq=cursors[lane])
            if events and lane is Lane.TRACK and not self._telemetry_due(len(events), now):
                continue
            if events:
                return lane, events, floor_seq
        return Lane.EVENTS, [], floor_seq

    def _telemetry_due(self, pending: int, now: float) -> bool:
        if self._track_waiting_since is None:
            self._track_waiting_since = now
        due = (self._flush or pending >= self.settings.track_min_batch
               or now - self._track_waiting_since >= self.settings.track_linger_s)
        if due:
            self._track_waiting_since = None
        return bool(due)

    async def _send(self, client: aiomqtt.Client, lane: Lane, events: list[StoredEvent], floor_seq: int) -> None:
        docs = []
        size = 0
        for event in events:
            docs.append(orjson.loads(event.body))
            size += len(event.body)
        docs[-1]["hash"] = events[-1].hash  # the chain checkpoint: the cloud computes the others itself
        batch = EventBatch(new_event_id(), self.settings.device_id, int(lane), floor_seq, tuple(docs))
        compression = self.settings.compression if size >= self.settings.compress_min_bytes else Compression.NONE
        self._inflight[batch.batch_id] = _Sent(lane, tuple(e.seq for e in events), time.monotonic())
        await client.publish(self.topics.events, batch.to_payload(compression), qos=1)
        self.counters.batches_sent += 1
        self.counters.events_sent += len(events)

    async def drain(self, client: aiomqtt.Client, live: StoredEvent | None) -> None:
        """A session task: send until the connection ends. `live`: the newest breadcrumb, sent first."""
        cursors = {lane: 0 for lane in LANE_ORDER}
        if live is not None:  # the newest position first: the operator sees where the van is now
            await self._send(client, Lane.TRACK, [live], await asyncio.to_thread(self._floor_seq))
        while True:
            if self._inflight:
                oldest = min(sent.sent_at for sent in self._inflight.values())
                now = time.monotonic()
                if now - oldest > self.pacing.timeout_s:
                    log.warning("no cloud ack within %.0f s for %d batches; sending them again",
                                self.pacing.timeout_s, len(self._inflight))
                    self.pacing.timed_out(now)
                    self._rewind = True
            if self._rewind:
                self._rewind = False
                self.supersede_inflight()
                cursors = {lane: 0 for lane in LANE_ORDER}
            if len(self._inflight) >= self.pacing.window:
                await self._sleep_until_woken(self.pacing.timeout_s / 4)
                continue
            lane, events, floor_seq = await asyncio.to_thread(self._next_batch, cursors, time.monotonic())
            if not events:
                if not await self._send_photo_chunk(client):
                    await self._sleep_until_woken(IDLE_POLL_S)
                continue
            await self._send(client, lane, events, floor_seq)
            cursors[lane] = events[-1].seq

    async def _send_photo_chunk(self, client: aiomqtt.Client) -> bool:
        in_flight = [sent for sent in self._inflight.values() if sent.photo_id is not None]
        if len(in_flight) >= PHOTO_CHUNKS_IN_FLIGHT:
            return False
        busy = {(sent.photo_id, sent.seqs[0]) for sent in in_flight if sent.photo_id is not None}
        chunk = await self.photos.next_chunk(busy)
        if chunk is None:
            return False
        if isinstance(chunk, PhotoGone):  # a photo whose file is gone: dropped, look again
            return True
        self._inflight[chunk.batch_id] = _Sent(None, (chunk.seq, chunk.total), time.monotonic(), chunk.photo_id)
        await client.publish(self.topics.photo(chunk.photo_id), chunk.to_payload(), qos=1)
        self.counters.photo_chunks_sent += 1
        return True

    async def _sleep_until_woken(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()
        self._wakeup.clear()

    async def on_ack(self, ack: BatchAck) -> None:
        """The cloud stored a batch (or a photo chunk): its events leave the outbox."""
        sent = self._inflight.pop(ack.batch_id, None) or self._superseded.pop(ack.batch_id, None)
        if sent is None:
            self.counters.acks_unknown += 1
            log.debug("ack for unknown batch %s (sent by an earlier run)", ack.batch_id)
            return
        now = time.monotonic()
        self.pacing.acked(now - sent.sent_at, now)
        if sent.photo_id is not None:
            await self.photos.acked(sent.photo_id, *sent.seqs)
            self._wakeup.set()
            return
        try:
            changed = await asyncio.to_thread(self.store.mark_acked, sent.seqs)
        except StoreError:
            self._rewind = True  # not marked: the drain goes back and sends those events again
            raise
        self.counters.events_acked += changed
        self._wakeup.set()
