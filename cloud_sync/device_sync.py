"""The device side of the cloud link: drains the outbox to the cloud and takes offers, claim results, routes and
commands from it.

Runs on the agent's asyncio loop through aiomqtt (paho-mqtt driven by add_reader/add_writer; see
connection.py): the store calls go to the store's writer thread via `asyncio.to_thread`, and everything else
(acks, claims, inbound checks) happens on the loop, so no state is shared between threads here.

The outbox is the source of truth (STYLE.md item 7): an event is marked acked only when the cloud's ack for its
batch arrives; whatever is in flight when a connection drops is sent again on the next one (event ids make that
harmless), and a batch without an ack within `ack_timeout_s` is sent again too. Proof photos go up in chunks
(`upload_photo`) only while no event is waiting; each chunk is acked like a batch, so an upload resumes.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_sync.connection import DEFAULT_SESSION_EXPIRY_S, Backoff, BrokerSettings, make_client, release
from cloud_sync.errors import BrokerUnavailable, ClaimTimeout, MessageRejected, RejectReason, SyncError
from cloud_sync.messages import (
    MAX_INBOUND_BYTES,
    PHOTO_CHUNK_BYTES,
    BatchAck,
    ClaimRequest,
    ClaimResult,
    Command,
    Compression,
    DeviceStatus,
    EventBatch,
    Offers,
    PhotoChunk,
    Presence,
    RouteAssignment,
    decode_json,
)
from cloud_sync.signing import Verifier
from cloud_sync.topics import FleetTopics
from device.contract.domain import Lane, new_event_id
from device.store import EventStore, StoreError
from device.store.event_store import StoredEvent

log = logging.getLogger(__name__)

LANE_ORDER = (Lane.EVENTS, Lane.TRACK)  # proofs, scans, blocks before the GPS breadcrumb backlog
IDLE_POLL_S = 1.0  # with nothing to send, look at the outbox again this often (kick() wakes sooner)
SEEN_COMMANDS_KEY = "cloud_sync.seen_commands"  # store state: command id -> expiry (epoch s), for replays
PHOTO_UPLOADS_KEY = "cloud_sync.photo_uploads"  # store state: photo id -> {path, sha256, total, done: [chunks]}
SUPERSEDED_BATCHES_KEPT = 512  # batches sent on an earlier connection whose late acks are still honoured


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
    rejected: Counter = field(default_factory=Counter)  # RejectReason -> count

    def snapshot(self) -> dict[str, Any]:
        doc = {k: v for k, v in vars(self).items() if k != "rejected"}
        doc["rejected"] = {reason.value: n for reason, n in self.rejected.items()}
        return doc


@dataclass(frozen=True)
class _Sent:
    lane: Lane | None  # None: a photo chunk
    seqs: tuple[int, ...]  # event seqs, or the chunk index of a photo chunk
    sent_at: float
    photo_id: str | None = None


class _StopSession(Exception):
    """Raised inside the session's task group to end it cleanly on stop()."""


def _message_bytes(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    return str(payload).encode()  # aiomqtt gives bytes for MQTT payloads; numbers/None only locally


class DeviceSync:
    """start()/stop(); `claim(block_id)`; inbound offers/routes/commands on `inbox` (an asyncio.Queue of
    Offers | RouteAssignment | Command); `counters`; `kick()` after appending events."""

    def __init__(self, store: EventStore, settings: SyncSettings, broker: BrokerSettings, verifier: Verifier,
                 *, inbox_size: int = 1000) -> None:
        self.store = store
        self.settings = settings
        self.broker = broker
        self.verifier = verifier
        self.fleet = FleetTopics(settings.fleet)
        self.topics = self.fleet.device(settings.device_id)
        self.offers_topic = self.fleet.offers(settings.station)
        self.counters = SyncCounters()
        self.inbox: asyncio.Queue[Offers | RouteAssignment | Command] = asyncio.Queue(maxsize=inbox_size)
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._wakeup = asyncio.Event()
        self._status_due = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, _Sent] = {}
        self._superseded: OrderedDict[str, _Sent] = OrderedDict()
        self._claims: dict[str, asyncio.Future[ClaimResult]] = {}
        self._offers_version = -1
        self._rewind = False  # set when an ack could not be recorded: resend from the oldest unacked event
        self._photo_lock = asyncio.Lock()  # read-modify-write of the upload list in the store

    # --- API -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"device-sync:{self.settings.device_id}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish the retained 'stopped' status and disconnect cleanly (so the Last Will is not sent)."""
        if self._task is None:
            return
        self._stop_requested.set()
        self._wakeup.set()
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
        self._wakeup.set()

    async def claim(self, block_id: str, timeout_s: float | None = None) -> ClaimResult:
        """Ask for a block; the cloud answers on the MQTT 5 response topic with our correlation data."""
        timeout_s = self.settings.claim_timeout_s if timeout_s is None else timeout_s
        request_id = new_event_id()
        future: asyncio.Future[ClaimResult] = asyncio.get_running_loop().create_future()
        self._claims[request_id] = future
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topics.claim_result
        props.CorrelationData = request_id.encode()
        payload = ClaimRequest(block_id, request_id).to_payload()
        try:
            async with asyncio.timeout(timeout_s):
                while True:  # a publish lost to a dropped connection is sent again on the next one
                    await self.connected.wait()
                    client = self._client
                    if client is None:
                        await asyncio.sleep(0.05)
                        continue
                    try:
                        await client.publish(self.topics.claim, payload, qos=1, properties=props)
                        break
                    except aiomqtt.MqttError as exc:
                        log.info("claim of %s not sent (%s); retrying after reconnect", block_id, exc)
                        await asyncio.sleep(0.1)
                return await future
        except TimeoutError:
            raise ClaimTimeout(block_id, timeout_s) from None
        finally:
            self._claims.pop(request_id, None)

    async def upload_photo(self, photo_id: str, path: Path | str) -> None:
        """Queue a proof photo for upload in chunks, after the events (a lower priority). The upload list lives
        in the store, so an upload resumes after an outage or a restart from the first chunk not yet acked."""
        self.fleet.device(self.settings.device_id).photo(photo_id)  # a valid topic level, or ValueError

        def read() -> tuple[str, int]:
            data = Path(path).read_bytes()
            if not data:
                raise SyncError(f"photo {path} is empty")
            return hashlib.sha256(data).hexdigest(), -(-len(data) // PHOTO_CHUNK_BYTES)

        try:
            sha256, total = await asyncio.to_thread(read)
        except OSError as exc:
            raise SyncError(f"cannot read photo {path}: {exc}") from exc
        async with self._photo_lock:
            uploads = await asyncio.to_thread(self.store.get_state, PHOTO_UPLOADS_KEY, {})
            uploads.setdefault(photo_id, {"path": str(path), "sha256": sha256, "total": total, "done": []})
            await asyncio.to_thread(self.store.set_state, PHOTO_UPLOADS_KEY, uploads)
        self.kick()

    async def photos_pending(self) -> list[str]:
        return list(await asyncio.to_thread(self.store.get_state, PHOTO_UPLOADS_KEY, {}))

    async def wait_drained(self, timeout_s: float | None) -> None:
        """Until the outbox is empty (every event acked by the cloud)."""
        async with asyncio.timeout(timeout_s):
            while await asyncio.to_thread(self._floor_seq):
                await asyncio.sleep(0.1)

    # --- connection loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        delays = self.settings.backoff.delays()
        while not self._stop_requested.is_set():
            offline = DeviceStatus(Presence.OFFLINE, self.settings.device_id, self.settings.version)
            will = aiomqtt.Will(self.topics.status, offline.to_payload(), qos=1, retain=True)
            client = make_client(self.broker, self.settings.device_id, will=will,
                                 session_expiry_s=self.settings.session_expiry_s)
            try:
                async with client:
                    self.counters.connects += 1
                    delays = self.settings.backoff.delays()  # a good connection resets the backoff
                    self._client = client
                    self.connected.set()
                    log.info("connected to %s:%d as %s", self.broker.host, self.broker.port,
                             self.settings.device_id)
                    await self._session(client)
            except* _StopSession:
                log.info("sync stopped cleanly")
            except* (aiomqtt.MqttError, BrokerUnavailable, OSError) as group:
                log.warning("broker connection lost: %s", "; ".join(str(e) for e in group.exceptions))
            except* Exception as group:  # a bug must not end the sync for good: log it, reconnect
                log.error("sync session failed", exc_info=group)
            finally:
                self.connected.clear()
                self._client = None
                release(client)
                self._supersede_inflight()
            if self._stop_requested.is_set():
                return
            delay = next(delays)
            log.info("reconnecting in %.2f s", delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_requested.wait()

    async def _session(self, client: aiomqtt.Client) -> None:
        for topic in (*self.topics.inbound(), self.offers_topic):
            codes = await client.subscribe(topic, qos=1)
            if any(getattr(code, "is_failure", False) for code in codes):
                log.error("broker refused subscription to %s: %s", topic, codes)
        live = await asyncio.to_thread(self.store.newest_pending, Lane.TRACK)
        await self._publish_status(client, Presence.ONLINE, live)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read(client))
            group.create_task(self._drain(client, live))
            group.create_task(self._refresh_status(client))
            group.create_task(self._watch_stop(client))

    async def _watch_stop(self, client: aiomqtt.Client) -> None:
        await self._stop_requested.wait()
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await self._publish_status(client, Presence.STOPPED, None)
        raise _StopSession

    async def _publish_status(self, client: aiomqtt.Client, state: Presence, live: StoredEvent | None) -> None:
        stats = await asyncio.to_thread(self.store.stats)
        position = orjson.loads(live.body).get("fix") if live is not None else None
        status = DeviceStatus(state, self.settings.device_id, self.settings.version, stats.depth,
                              stats.last_acked_seq, position, storage=self.store.disk_condition.value)
        await client.publish(self.topics.status, status.to_payload(), qos=1, retain=True)

    def report_status(self) -> None:
        """Something the operator should see changed (the disk filled up): publish the status now."""
        self._status_due.set()

    async def _refresh_status(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_interval_s):
                    await self._status_due.wait()
            self._status_due.clear()
            await self._publish_status(client, Presence.ONLINE, None)

    # --- uplink: the outbox drain ----------------------------------------------------------------

    def _supersede_inflight(self) -> None:
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

    def _next_batch(self, cursors: dict[Lane, int]) -> tuple[Lane, list[StoredEvent], int]:
        """(lane, events, floor seq): the oldest unsent events of the most urgent lane with any. Store thread."""
        floor_seq = self._floor_seq()
        for lane in LANE_ORDER:
            events = self.store.pending(self.settings.batch_max_events, self.settings.batch_max_bytes, lane,
                                        after_seq=cursors[lane])
            if events:
                return lane, events, floor_seq
        return Lane.EVENTS, [], floor_seq

    async def _send(self, client: aiomqtt.Client, lane: Lane, events: list[StoredEvent], floor_seq: int) -> None:
        docs = []
        size = 0
        for event in events:
            doc = orjson.loads(event.body)
            doc["hash"] = event.hash
            docs.append(doc)
            size += len(event.body)
        batch = EventBatch(new_event_id(), self.settings.device_id, int(lane), floor_seq, tuple(docs))
        compression = self.settings.compression if size >= self.settings.compress_min_bytes else Compression.NONE
        self._inflight[batch.batch_id] = _Sent(lane, tuple(e.seq for e in events), time.monotonic())
        await client.publish(self.topics.events, batch.to_payload(compression), qos=1)
        self.counters.batches_sent += 1
        self.counters.events_sent += len(events)

    async def _drain(self, client: aiomqtt.Client, live: StoredEvent | None) -> None:
        cursors = {lane: 0 for lane in LANE_ORDER}
        if live is not None:  # the newest position first: the operator sees where the van is now
            await self._send(client, Lane.TRACK, [live], await asyncio.to_thread(self._floor_seq))
        while True:
            if self._inflight:
                oldest = min(sent.sent_at for sent in self._inflight.values())
                if time.monotonic() - oldest > self.settings.ack_timeout_s:
                    log.warning("no cloud ack within %.0f s for %d batches; sending them again",
                                self.settings.ack_timeout_s, len(self._inflight))
                    self._rewind = True
            if self._rewind:
                self._rewind = False
                self._supersede_inflight()
                cursors = {lane: 0 for lane in LANE_ORDER}
            if len(self._inflight) >= self.settings.inflight_batches:
                await self._sleep_until_woken(self.settings.ack_timeout_s / 4)
                continue
            lane, events, floor_seq = await asyncio.to_thread(self._next_batch, cursors)
            if not events:
                if not await self._send_photo_chunk(client):
                    await self._sleep_until_woken(IDLE_POLL_S)
                continue
            await self._send(client, lane, events, floor_seq)
            cursors[lane] = events[-1].seq

    def _next_photo_chunk(self, busy: set[tuple[str, int]]) -> PhotoChunk | str | None:
        """The first chunk not yet acked nor in flight, read from its file; or the id of a photo whose file is
        gone (dropped from the list). Store thread."""
        uploads = self.store.get_state(PHOTO_UPLOADS_KEY, {})
        for photo_id, upload in uploads.items():
            done = set(upload["done"])
            for index in range(upload["total"]):
                if index in done or (photo_id, index) in busy:
                    continue
                try:
                    with open(upload["path"], "rb") as fh:
                        fh.seek(index * PHOTO_CHUNK_BYTES)
                        data = fh.read(PHOTO_CHUNK_BYTES)
                except OSError as exc:
                    data, problem = b"", str(exc)
                else:
                    problem = "file shorter than when it was queued"
                if not data:
                    log.error("photo %s dropped from the upload list: %s", photo_id, problem)
                    del uploads[photo_id]
                    self.store.set_state(PHOTO_UPLOADS_KEY, uploads)
                    return photo_id
                return PhotoChunk(new_event_id(), photo_id, index, upload["total"], upload["sha256"], data)
        return None

    async def _send_photo_chunk(self, client: aiomqtt.Client) -> bool:
        busy = {(sent.photo_id, sent.seqs[0]) for sent in self._inflight.values() if sent.photo_id is not None}
        async with self._photo_lock:
            chunk = await asyncio.to_thread(self._next_photo_chunk, busy)
        if chunk is None:
            return False
        if isinstance(chunk, str):
            self.counters.photos_failed += 1
            return True
        self._inflight[chunk.batch_id] = _Sent(None, (chunk.seq,), time.monotonic(), chunk.photo_id)
        await client.publish(self.topics.photo(chunk.photo_id), chunk.to_payload(), qos=1)
        self.counters.photo_chunks_sent += 1
        return True

    async def _on_photo_chunk_ack(self, photo_id: str, index: int) -> None:
        async with self._photo_lock:
            uploads = await asyncio.to_thread(self.store.get_state, PHOTO_UPLOADS_KEY, {})
            upload = uploads.get(photo_id)
            if upload is None or index in upload["done"]:
                return
            upload["done"].append(index)
            if len(upload["done"]) >= upload["total"]:
                del uploads[photo_id]
                self.counters.photos_uploaded += 1
                log.info("photo %s uploaded", photo_id)
            await asyncio.to_thread(self.store.set_state, PHOTO_UPLOADS_KEY, uploads)

    async def _sleep_until_woken(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()
        self._wakeup.clear()

    # --- downlink ----------------------------------------------------------------------------------

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            try:
                await self._handle(topic, _message_bytes(message), message.properties)
            except MessageRejected as exc:
                self.counters.rejected[exc.reason] += 1
                log.warning("rejected message on %s: %s", topic, exc)
            except StoreError as exc:
                log.error("store error while handling %s: %s", topic, exc)
            except Exception:  # noqa: BLE001 - a payload we failed to foresee must not end the session
                self.counters.rejected[RejectReason.SCHEMA] += 1
                log.exception("unexpected error handling a message on %s; rejected", topic)

    async def _handle(self, topic: str, payload: bytes, props: Properties | None) -> None:
        if topic == self.topics.ack:
            await self._on_ack(BatchAck.from_payload(payload))
            return
        if topic not in (self.topics.claim_result, self.topics.route, self.topics.cmd, self.offers_topic):
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, topic)
        body = self.verifier.verify(decode_json(payload, self.settings.max_inbound_bytes))
        if topic == self.offers_topic:
            self._on_offers(Offers.from_body(body))
        elif topic == self.topics.claim_result:
            self._on_claim_result(ClaimResult.from_body(body), props)
        elif topic == self.topics.route:
            await self._on_route(RouteAssignment.from_body(body))
        else:
            await self._on_command(Command.from_body(body))

    async def _on_ack(self, ack: BatchAck) -> None:
        sent = self._inflight.pop(ack.batch_id, None) or self._superseded.pop(ack.batch_id, None)
        if sent is None:
            self.counters.acks_unknown += 1
            log.debug("ack for unknown batch %s (sent by an earlier run)", ack.batch_id)
            return
        if sent.photo_id is not None:
            await self._on_photo_chunk_ack(sent.photo_id, sent.seqs[0])
            self._wakeup.set()
            return
        try:
            changed = await asyncio.to_thread(self.store.mark_acked, sent.seqs)
        except StoreError:
            self._rewind = True  # not marked: the drain goes back and sends those events again
            raise
        self.counters.events_acked += changed
        self._wakeup.set()

    def _deliver(self, item: Offers | RouteAssignment | Command) -> None:
        try:
            self.inbox.put_nowait(item)
        except asyncio.QueueFull:
            self.counters.inbox_dropped += 1
            log.error("inbox full: dropped %s", type(item).__name__)

    def _on_offers(self, offers: Offers) -> None:
        if offers.station != self.settings.station:
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"offers for station {offers.station!r:.30}")
        if offers.version <= self._offers_version:
            return  # a retained copy we already have
        self._offers_version = offers.version
        self._deliver(offers)

    def _on_claim_result(self, result: ClaimResult, props: Properties | None) -> None:
        if result.device != self.settings.device_id:
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"claim result for {result.device!r:.40}")
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        if correlation is not None and correlation != result.request_id.encode():
            raise MessageRejected(RejectReason.SCHEMA, "correlation data differs from request_id")
        future = self._claims.get(result.request_id)
        if future is None or future.done():
            raise MessageRejected(RejectReason.UNKNOWN_REQUEST, f"no claim waiting for {result.request_id}")
        future.set_result(result)

    async def _on_route(self, assignment: RouteAssignment) -> None:
        if assignment.device != self.settings.device_id:
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"route for {assignment.device!r:.40}")
        if not await asyncio.to_thread(self.store.save_route, assignment.route):
            self.counters.routes_ignored += 1
            log.info("route %s v%d ignored: not newer than the stored one", assignment.route.block_id,
                     assignment.route.version)
            return
        log.info("route %s v%d accepted", assignment.route.block_id, assignment.route.version)
        self._deliver(assignment)

    async def _on_command(self, command: Command) -> None:
        if command.device != self.settings.device_id:
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"command for {command.device!r:.40}")
        now = datetime.now(timezone.utc)
        if command.expires_at <= now:
            raise MessageRejected(RejectReason.EXPIRED, f"command {command.id} expired at {command.expires_at}")
        seen: dict[str, float] = await asyncio.to_thread(self.store.get_state, SEEN_COMMANDS_KEY, {})
        if command.id in seen:
            raise MessageRejected(RejectReason.REPLAY, f"command {command.id} already executed")
        # Expired ids can go: an expired command is refused on its expiry alone.
        seen = {cid: exp for cid, exp in seen.items() if exp > now.timestamp()}
        seen[command.id] = command.expires_at.timestamp()
        await asyncio.to_thread(self.store.set_state, SEEN_COMMANDS_KEY, seen)
        self._deliver(command)
