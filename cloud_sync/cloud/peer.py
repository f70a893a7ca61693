"""The reference cloud peer: ingest workers and a dispatcher, each its own MQTT 5 client on one asyncio loop.

Ingest workers share `$share/ingest/flex/v1/{fleet}/dev/+/events`: the broker hands each batch to one of them,
so N workers (in this process or in N processes on other machines) split a fleet's load. Workers use clean
sessions on purpose: a persistent session of a worker that is gone would keep taking its share of the batches
(queued for it until the session expires); with clean sessions the live workers get everything, and a batch
lost with a crashed worker is simply sent again by its device after the ack timeout. A worker stores the
batch (idempotent, chain-checked) and only then publishes the ack. The dispatcher takes claims from
`$share/dispatch/.../dev/+/claim`, grants each block once (atomic in the database), answers on the claim's
response topic with its correlation data, and publishes signed offers and routes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, Mapping, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_sync.cloud.commands import new_command, publish
from cloud_sync.cloud.db import CloudDb, CloudDbError, PhotoLimits, PhotoStatus, StoredPhoto
from cloud_sync.cloud.presence import status_record
from cloud_sync.connection import Backoff, BrokerSettings, make_client, release
from cloud_sync.errors import MessageRejected, RejectReason
from cloud_sync.messages import (
    BatchAck,
    ClaimRequest,
    ClaimResult,
    ClaimStatus,
    Command,
    DeviceStatus,
    EventBatch,
    Offers,
    PhotoChunk,
    RouteAssignment,
    encode,
)
from cloud_sync.pki import CLOUD_IDENTITY, cloud_client_ids
from cloud_sync.signing import Signer
from cloud_sync.topics import DISPATCH_SHARE_GROUP, INGEST_SHARE_GROUP, FleetTopics
from device.contract.domain import Block, Route

log = logging.getLogger(__name__)
T = TypeVar("T")


Credentials = Callable[[str], BrokerSettings]  # client id -> broker settings with that identity's certificate


@dataclass(frozen=True)
class CloudSettings:
    fleet: str
    db: Path | str  # a SQLite file or a postgresql:// URL (cloud_sync.cloud.engine)
    ingest_workers: int = 1
    dispatch: bool = True
    client_prefix: str = CLOUD_IDENTITY  # client ids = certificate CNs: cloud_client_ids(prefix, workers)
    photo_dir: Path | None = None  # photo files; None: beside a SQLite database (db.default_photo_dir)
    # A worker process of `flexedge cloud --workers N`: only ingest worker number `ingest_index` runs here
    ingest_index: int | None = None
    backoff: Backoff = Backoff(initial_s=0.1, maximum_s=5.0)
    stations: Mapping[str, str] = field(default_factory=dict)  # device -> its station: it claims blocks there only
    max_open_blocks: int = 2  # blocks a device holds at once (granted, no block.completed event yet)
    photo_limits: PhotoLimits = PhotoLimits()


class CloudPeer:
    """`await run()` until `stop()`; the dispatch API (`add_block`, `revise_route`, `send_command`) is awaited
    on the same loop. `counters` for tests and status views."""

    def __init__(self, settings: CloudSettings, credentials: Credentials, signer: Signer) -> None:
        """`credentials(client_id)`: the broker binds each client id to the certificate of that name."""
        self.settings = settings
        self.credentials = credentials
        self.signer = signer
        self.fleet = FleetTopics(settings.fleet)
        self.counters: Counter[str] = Counter()
        self.ready = asyncio.Event()  # set when every worker has subscribed once
        self._stop = asyncio.Event()
        self._dispatch_client: aiomqtt.Client | None = None
        self._dispatch_db: CloudDb | None = None
        self._subscribed = 0

    # --- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        ids: tuple[str, ...]
        if s.ingest_index is not None:
            ids = (cloud_client_ids(s.client_prefix, s.ingest_index + 1, dispatch=False)[-1],)
        else:
            ids = cloud_client_ids(s.client_prefix, s.ingest_workers, s.dispatch)
        workers = [self._worker(client_id, self._dispatch_session if client_id.endswith("-dispatch")
                                else self._ingest_session) for client_id in ids]
        self._expected = len(workers)
        if not workers:  # the other processes do everything (--workers N --no-dispatch)
            self.ready.set()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(w) for w in workers]
            await self._stop.wait()
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, client_id: str,
                      session: Callable[[aiomqtt.Client, CloudDb, bool], Awaitable[None]]) -> None:
        db = await asyncio.to_thread(CloudDb, self.settings.db, self.settings.photo_dir)
        first = True
        try:
            delays = self.settings.backoff.delays()
            while True:
                client = make_client(self.credentials(client_id), client_id, persistent=False)
                try:
                    async with client:
                        delays = self.settings.backoff.delays()
                        await session(client, db, first)
                except aiomqtt.MqttError as exc:
                    log.warning("%s: broker connection lost: %s", client_id, exc)
                finally:
                    release(client)
                first = False
                await asyncio.sleep(next(delays))
        finally:
            db.close()

    def _note_subscribed(self, first: bool) -> None:
        if first:
            self._subscribed += 1
            if self._subscribed >= self._expected:
                self.ready.set()

    async def _guarded(self, topic: str, handle: Awaitable[T]) -> T | None:
        """The one reject path of every inbound channel: whatever a payload makes its handler raise becomes a
        counted, logged reject, and the session goes on. A database failure is logged and not acked (the
        device resends). Only a lost broker connection ends the session (the worker reconnects)."""
        self.counters["inbound"] += 1
        try:
            return await handle
        except MessageRejected as exc:
            self._reject(topic, exc.reason, str(exc))
        except CloudDbError as exc:
            self.counters["db_errors"] += 1
            log.error("cloud database error on %s, not acked (the device will resend): %s", topic, exc)
        except aiomqtt.MqttError:
            raise
        except Exception as exc:  # noqa: BLE001 - nothing a peer sends may end the cloud
            self._reject(topic, RejectReason.MALFORMED, f"{type(exc).__name__}: {exc}")
            log.debug("handler failure on %s", topic, exc_info=True)
        return None

    def _reject(self, topic: str, reason: RejectReason, detail: str) -> None:
        self.counters["rejected"] += 1
        self.counters[f"rejected.{reason.value}"] += 1
        log.warning("cloud rejected message on %.200s: %.300s", topic, detail)

    # --- ingest ------------------------------------------------------------------------------------

    async def _ingest_session(self, client: aiomqtt.Client, db: CloudDb, first: bool) -> None:
        for leaf in ("events", "photo/+"):
            await client.subscribe(self.fleet.shared(INGEST_SHARE_GROUP, self.fleet.all_devices(leaf)), qos=1)
        self.counters["ingest_sessions"] += 1
        self._note_subscribed(first)
        acks: set[asyncio.Task[None]] = set()
        async for message in client.messages:
            topic = message.topic.value
            stored = await self._guarded(topic, self._ingest(db, topic, message.payload))
            if stored is None:
                continue
            # Not awaited in line: the next batch is stored while this ack's PUBACK is on its way.
            task = asyncio.create_task(self._publish_ack(client, *stored))
            acks.add(task)
            task.add_done_callback(acks.discard)

    async def _ingest(self, db: CloudDb, topic: str, payload: Any) -> tuple[str, BatchAck]:
        device = self.fleet.device_of(topic)
        if device is None:
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, topic)
        if topic.endswith("/events"):
            return device, await self._ingest_batch(db, device, _payload_bytes(payload))
        return device, await self._ingest_photo_chunk(db, device, topic, _payload_bytes(payload))

    async def _ingest_batch(self, db: CloudDb, device: str, payload: bytes) -> BatchAck:
        batch = EventBatch.from_payload(payload)
        if batch.device != device:  # the topic is the authenticated identity (the broker: username = CN)
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"batch says {batch.device!r:.40}")
        result = await asyncio.to_thread(db.ingest, device, batch)
        self.counters["batches"] += 1
        self.counters["events_stored"] += result.stored
        self.counters["events_duplicate"] += result.duplicates
        self.counters["flags"] += result.flagged
        self.counters["clock_flags"] += result.clock_flagged
        return BatchAck(batch.batch_id, max(e["seq"] for e in batch.events), result.stored, result.duplicates)

    async def _ingest_photo_chunk(self, db: CloudDb, device: str, topic: str, payload: bytes) -> BatchAck:
        chunk = PhotoChunk.from_payload(payload)
        if topic != self.fleet.device(device).photo(chunk.photo_id):
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, f"chunk of {chunk.photo_id!r:.40} on {topic}")
        limits = self.settings.photo_limits
        self.counters["photo_chunks_expired"] += await asyncio.to_thread(db.expire_photo_chunks, limits.max_age_s)
        stored = await asyncio.to_thread(db.store_photo_chunk, device, chunk, limits)
        self.counters["photo_chunks"] += 1
        if stored is not None:
            self._on_photo_complete(stored)
        return BatchAck(chunk.batch_id, chunk.seq)

    def _on_photo_complete(self, stored: StoredPhoto) -> None:
        """Count the photo by its check; a photo that does not match its event is flagged in the db and
        logged here, never dropped."""
        self.counters["photos_complete"] += 1
        self.counters[f"photos.{stored.status.value}"] += 1
        if stored.status in (PhotoStatus.CORRUPT, PhotoStatus.SHA_MISMATCH):
            log.warning("photo %s from %s stored but flagged: %s (%s)", stored.photo_id, stored.device,
                        stored.status.value, stored.path)

    async def _publish_ack(self, client: aiomqtt.Client, device: str, ack: BatchAck) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # lost ack: the device resends, the batch dedups
            await client.publish(self.fleet.device(device).ack, ack.to_payload(), qos=1)

    # --- dispatch ----------------------------------------------------------------------------------

    async def _dispatch_session(self, client: aiomqtt.Client, db: CloudDb, first: bool) -> None:
        await client.subscribe(self.fleet.shared(DISPATCH_SHARE_GROUP, self.fleet.all_devices("claim")), qos=1)
        await client.subscribe(self.fleet.all_devices("status"), qos=1)
        self._dispatch_client, self._dispatch_db = client, db
        if first:
            await asyncio.to_thread(db.set_device_stations, self.settings.stations)
        self.counters["dispatch_sessions"] += 1
        self._note_subscribed(first)
        try:
            async for message in client.messages:
                topic = message.topic.value
                if topic.endswith("/status"):
                    await self._guarded(topic, self._on_status(db, topic, message.payload))
                else:
                    await self._guarded(topic, self._on_claim(client, db, topic, message.payload, message.properties))
        finally:
            self._dispatch_client = None

    async def _on_status(self, db: CloudDb, topic: str, payload: Any) -> None:
        device = self.fleet.device_of(topic)
        if device is None:
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, topic)
        if not payload:
            self.counters["statuses_cleared"] += 1  # a retained status taken away
            return
        status = DeviceStatus.from_payload(_payload_bytes(payload))
        if status.device != device:  # the topic is the authenticated identity
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"status says {status.device!r:.40}")
        self.counters["statuses"] += 1
        received_at = time.time()
        previous = await asyncio.to_thread(db.device_status, device)
        await asyncio.to_thread(db.record_status, device, status_record(status, previous, received_at))

    async def _on_claim(self, client: aiomqtt.Client, db: CloudDb, topic: str, payload: Any,
                        props: Properties | None) -> None:
        device = self.fleet.device_of(topic)
        if device is None:
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, topic)
        request = ClaimRequest.from_payload(_payload_bytes(payload))
        status, block, route = await asyncio.to_thread(db.grant, request.block_id, device,
                                                       self.settings.stations.get(device),
                                                       self.settings.max_open_blocks)
        self.counters[f"claims.{status.value}"] += 1
        result = ClaimResult(request.block_id, request.request_id, device, status)
        reply = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho ships no annotations here
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        reply.CorrelationData = correlation if correlation is not None else request.request_id.encode()
        # Answer only on the claimant's own result topic, whatever response topic it named: the cloud may
        # write anywhere, so it must never be steered into another device's tree.
        await client.publish(self.fleet.device(device).claim_result, encode(self.signer.sign(result.to_body())),
                             qos=1, properties=reply)
        if status is ClaimStatus.GRANTED and block is not None and route is not None:
            await self._publish_route(client, device, route)
            await self._publish_offers(client, db, block.station)

    async def _publish_route(self, client: aiomqtt.Client, device: str, route: Route) -> None:
        body = RouteAssignment(device, route).to_body()
        await client.publish(self.fleet.device(device).route, encode(self.signer.sign(body)), qos=1, retain=True)

    async def _publish_offers(self, client: aiomqtt.Client, db: CloudDb, station: str) -> None:
        version, blocks = await asyncio.to_thread(db.open_blocks, station)
        offers = Offers(station, version, tuple(blocks))
        await client.publish(self.fleet.offers(station), encode(self.signer.sign(offers.to_body())),
                             qos=1, retain=True)

    def _dispatcher(self) -> tuple[aiomqtt.Client, CloudDb]:
        if self._dispatch_client is None or self._dispatch_db is None:
            raise aiomqtt.MqttError("dispatcher not connected")
        return self._dispatch_client, self._dispatch_db

    # --- dispatch API ----------------------------------------------------------------------------

    async def add_blocks(self, offered: list[tuple[Block, Route]]) -> None:
        """Offer blocks (with their routes, revealed to the winner only) and republish the stations' offers."""
        client, db = self._dispatcher()
        for block, route in offered:
            await asyncio.to_thread(db.add_block, block, route)
        for station in sorted({block.station for block, _ in offered}):
            await self._publish_offers(client, db, station)

    async def revise_route(self, route: Route) -> Route:
        """A new version of a block's route (the stored version + 1), sent to the winner if there is one."""
        client, db = self._dispatcher()
        winner, revised = await asyncio.to_thread(db.revise_route, route)
        if winner is not None:
            await self._publish_route(client, winner, revised)
        return revised

    async def send_command(self, device: str, name: str, args: dict[str, Any] | None = None,
                           ttl_s: float = 300.0) -> Command:
        """Signed and published through the dispatcher's own connection (one connection per identity)."""
        command = new_command(device, name, args or {}, ttl_s)
        await self.publish_command(command)
        return command

    async def publish_command(self, command: Command) -> None:
        """A command built elsewhere (a re-offer records its id first), sent as `send_command` sends."""
        client, _ = self._dispatcher()
        await publish(client, self.settings.fleet, self.signer, command)


def _payload_bytes(payload: Any) -> bytes:
    """aiomqtt hands over bytes for every payload a client sends; anything else is no payload of ours."""
    if not isinstance(payload, (bytes, bytearray)):
        raise MessageRejected(RejectReason.SCHEMA, f"payload of type {type(payload).__name__}")
    return bytes(payload)


class CloudThread:
    """A CloudPeer on its own loop in a background thread: for the demo and tests that drive it from sync code."""

    def __init__(self, peer_factory: Callable[[], CloudPeer]) -> None:
        self._factory = peer_factory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cloud-peer", daemon=True)
        self.peer: CloudPeer | None = None
        self._run: Future[None] | None = None

    def start(self, ready_timeout_s: float = 20.0) -> CloudThread:
        self._thread.start()

        async def create() -> CloudPeer:
            return self._factory()
        self.peer = self.call(create())
        self._run = asyncio.run_coroutine_threadsafe(self.peer.run(), self._loop)
        self.call(self._ready_or_failed(self.peer, self._run, ready_timeout_s), timeout_s=ready_timeout_s + 1)
        return self

    @staticmethod
    async def _ready_or_failed(peer: CloudPeer, run: Future[None], timeout_s: float) -> None:
        """Wait for the peer's readiness; a peer whose run() ended first raises why (not a bare timeout)."""
        ended: asyncio.Future[Any] = asyncio.wrap_future(run)
        ready: asyncio.Future[Any] = asyncio.ensure_future(peer.ready.wait())
        done, _ = await asyncio.wait({ended, ready}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if ended in done:
            ended.result()
            raise RuntimeError("the cloud peer ended before it was ready")
        if ready not in done:
            raise TimeoutError(f"the cloud peer was not ready within {timeout_s} s")

    @property
    def running(self) -> bool:
        """The peer's run() has not ended (a peer that crashed has)."""
        return self._run is not None and not self._run.done()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the peer, cancel whatever still runs on the loop, then close it. A task left pending on a closed
        loop would run its cleanup at garbage collection, long after, in whatever code runs then."""
        if self.peer is not None and self._run is not None:
            self._loop.call_soon_threadsafe(self.peer.stop)
            with contextlib.suppress(Exception):
                self._run.result(timeout_s)
            self._run.cancel()  # a peer that did not stop in time (a no-op when it did)
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(_cancel_all_but_me(), timeout_s)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()


async def _cancel_all_but_me() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
