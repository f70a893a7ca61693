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
from cloud_sync.cloud.db import Claim, CloudDb, CloudDbError, PhotoLimits, PhotoStatus, StoredPhoto
from cloud_sync.cloud.presence import status_record
from cloud_sync.cloud.status_backlog import NewestPerTopic
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
Item = TypeVar("Item")
R = TypeVar("R")


# Group commit: messages an ingest worker takes from its queue at once (their batches go in few transactions)
GROUP_MAX_MESSAGES = 64
# Claims decided in one transaction at most: the group holds its claimants' device locks until its commit, and a
# claim may wait there for an ingest group holding its device
CLAIM_GROUP_MAX = 16
GROUP_LOG_INTERVAL_S = 30.0  # how often a worker logs the size and duration of its ingest groups

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


class GroupStats:
    """How many groups (of batches, of claims) a worker stored and how long they took: logged every
    GROUP_LOG_INTERVAL_S, so an operator sees a worker that falls behind (groups full and slow)."""

    def __init__(self, role: str, items: str) -> None:
        self.role, self.items = role, items
        self._since = time.monotonic()
        self._groups = self._count = 0
        self._took_s = 0.0

    def note(self, count: int, took_s: float, extra: str = "") -> None:
        self._groups += 1
        self._count += count
        self._took_s += took_s
        now = time.monotonic()
        if now - self._since >= GROUP_LOG_INTERVAL_S:
            log.info("%s: %d %s in %d groups in %.0f s (%.1f a group, %.0f ms a group)%s", self.role, self._count,
                     self.items, self._groups, now - self._since, self._count / self._groups,
                     1000 * self._took_s / self._groups, extra)
            self._since, self._groups, self._count, self._took_s = now, 0, 0, 0.0


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
        self._ingest_stats = GroupStats("ingest", "batches")
        self._claim_stats = GroupStats("dispatch", "claims")

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
        except aiomqtt.MqttError:
            raise
        except Exception as exc:  # noqa: BLE001 - nothing a peer sends may end the cloud
            self._failed(topic, exc)
        return None

    def _failed(self, topic: str, exc: Exception) -> None:
        """A message's handling raised (in line, or inside a group commit): a counted reject, or a database error
        left unacked."""
        if isinstance(exc, MessageRejected):
            self._reject(topic, exc.reason, str(exc))
        elif isinstance(exc, CloudDbError):
            self.counters["db_errors"] += 1
            log.error("cloud database error on %s, not acked (the device will resend): %s", topic, exc)
        else:
            self._reject(topic, RejectReason.MALFORMED, f"{type(exc).__name__}: {exc}")
            log.debug("handler failure on %s", topic, exc_info=(type(exc), exc, exc.__traceback__))

    def _reject(self, topic: str, reason: RejectReason, detail: str) -> None:
        self.counters["rejected"] += 1
        self.counters[f"rejected.{reason.value}"] += 1
        log.warning("cloud rejected message on %.200s: %.300s", topic, detail)

    # --- ingest ------------------------------------------------------------------------------------

    async def _ingest_session(self, client: aiomqtt.Client, db: CloudDb, first: bool) -> None:
        """Group commit: the messages waiting when the worker turns to the queue are stored together (their event
        batches in as few transactions as `CloudDb.ingest_many` allows), and their acks go after the commit.
        While a group is stored the next one gathers, so the commit round trips are paid per group, not per
        batch: under load the groups grow, when idle each message goes alone at once."""
        for leaf in ("events", "photo/+"):
            await client.subscribe(self.fleet.shared(INGEST_SHARE_GROUP, self.fleet.all_devices(leaf)), qos=1)
        self.counters["ingest_sessions"] += 1
        self._note_subscribed(first)
        acks: set[asyncio.Task[None]] = set()
        messages = client.messages
        async for message in messages:
            taken = [message]
            while len(messages) and len(taken) < GROUP_MAX_MESSAGES:  # already received: no waiting here
                taken.append(await anext(messages))
            for device, ack in await self._ingest_group(db, taken):
                # Not awaited in line: the next group is stored while these acks' PUBACKs are on their way.
                task = asyncio.create_task(self._publish_ack(client, device, ack))
                acks.add(task)
                task.add_done_callback(acks.discard)

    async def _ingest_group(self, db: CloudDb, messages: list[aiomqtt.Message]) -> list[tuple[str, BatchAck]]:
        """Every message through the one reject path; the event batches stored as a group. (device, ack) of each
        message stored, in the order they came."""
        batches: list[tuple[str, EventBatch]] = []
        topics: list[str] = []
        acks: list[tuple[str, BatchAck]] = []
        for message in messages:
            topic = message.topic.value
            if topic.endswith("/events"):
                parsed = await self._guarded(topic, self._parse_batch(topic, message.payload))
                if parsed is not None:
                    batches.append(parsed)
                    topics.append(topic)
            else:
                stored = await self._guarded(topic, self._ingest_photo_chunk(db, topic, message.payload))
                if stored is not None:
                    acks.append(stored)
        if not batches:
            return acks
        started = time.monotonic()
        results = await self._stored_together(db.ingest_many, batches)
        self._ingest_stats.note(len(batches), time.monotonic() - started)
        for topic, (device, batch), result in zip(topics, batches, results):
            if isinstance(result, Exception):
                self._failed(topic, result)
                continue
            self.counters["batches"] += 1
            self.counters["events_stored"] += result.stored
            self.counters["events_duplicate"] += result.duplicates
            self.counters["flags"] += result.flagged
            self.counters["clock_flags"] += result.clock_flagged
            acks.append((device, BatchAck(batch.batch_id, max(e["seq"] for e in batch.events), result.stored,
                                          result.duplicates)))
        return acks

    async def _parse_batch(self, topic: str, payload: Any) -> tuple[str, EventBatch]:
        device = self.fleet.device_of(topic)
        if device is None:
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, topic)
        batch = EventBatch.from_payload(_payload_bytes(payload))
        if batch.device != device:  # the topic is the authenticated identity (the broker: username = CN)
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"batch says {batch.device!r:.40}")
        return device, batch

    async def _ingest_photo_chunk(self, db: CloudDb, topic: str, payload: Any) -> tuple[str, BatchAck]:
        device = self.fleet.device_of(topic)
        if device is None:
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, topic)
        chunk = PhotoChunk.from_payload(_payload_bytes(payload))
        if topic != self.fleet.device(device).photo(chunk.photo_id):
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, f"chunk of {chunk.photo_id!r:.40} on {topic}")
        limits = self.settings.photo_limits
        self.counters["photo_chunks_expired"] += await asyncio.to_thread(db.expire_photo_chunks, limits.max_age_s)
        stored = await asyncio.to_thread(db.store_photo_chunk, device, chunk, limits)
        self.counters["photo_chunks"] += 1
        if stored is not None:
            self._on_photo_complete(stored)
        return device, BatchAck(chunk.batch_id, chunk.seq)

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
        """Claims first: the claims waiting are decided in one transaction (a few at a time) and answered, while
        the statuses go to a task of their own, one short transaction each. A fleet's status refreshes (one per
        van per interval) never queue a claim behind them; and a status waits only for the one ingest group that
        holds its device, holding nothing else meanwhile (a group of statuses would hold its devices' rows while
        waiting for the next, and stall the ingest groups that need them)."""
        await client.subscribe(self.fleet.shared(DISPATCH_SHARE_GROUP, self.fleet.all_devices("claim")), qos=1)
        await client.subscribe(self.fleet.all_devices("status"), qos=1)
        self._dispatch_client, self._dispatch_db = client, db
        if first:
            await asyncio.to_thread(db.set_device_stations, self.settings.stations)
        self.counters["dispatch_sessions"] += 1
        self._note_subscribed(first)
        statuses: NewestPerTopic[aiomqtt.Message] = NewestPerTopic()
        offers_due: set[str] = set()
        offers_wake = asyncio.Event()
        background = [asyncio.create_task(self._store_statuses(db, statuses)),
                      asyncio.create_task(self._republish_offers(client, db, offers_due, offers_wake))]
        messages = client.messages
        try:
            async for message in messages:
                taken = [message]
                while len(messages) and len(taken) < GROUP_MAX_MESSAGES:
                    taken.append(await anext(messages))
                claims = []
                for m in taken:
                    if m.topic.value.endswith("/status"):
                        if statuses.put(m.topic.value, m):
                            self.counters["statuses_superseded"] += 1  # its van's newer status came first
                    else:
                        claims.append(m)
                for start in range(0, len(claims), CLAIM_GROUP_MAX):
                    group, started = claims[start:start + CLAIM_GROUP_MAX], time.monotonic()
                    offers_due.update(await self._on_claims(client, db, group))
                    offers_wake.set()
                    self._claim_stats.note(len(group), time.monotonic() - started,
                                           f", {len(statuses)} statuses waiting")
        finally:
            self._dispatch_client = None
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task

    async def _republish_offers(self, client: aiomqtt.Client, db: CloudDb, due: set[str],
                                wake: asyncio.Event) -> None:
        """Publish the offers of the stations that lost a block: each once, however many blocks it lost meanwhile,
        and never in a claim's way."""
        while True:
            await wake.wait()
            wake.clear()
            while due:
                station = min(due)
                due.discard(station)
                try:
                    await self._publish_offers(client, db, station)
                except CloudDbError as exc:
                    self._failed(self.fleet.offers(station), exc)

    async def _store_statuses(self, db: CloudDb, statuses: NewestPerTopic[aiomqtt.Message]) -> None:
        while True:
            topic, message = await statuses.get()
            await self._guarded(topic, self._on_status(db, topic, message.payload))

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

    async def _on_claims(self, client: aiomqtt.Client, db: CloudDb, messages: list[aiomqtt.Message]) -> set[str]:
        """Decide the claims together and answer each (its route after its answer); the stations that lost a
        block, whose offers are due."""
        parsed: list[tuple[str, Claim, ClaimRequest, Properties | None]] = []
        for message in messages:
            topic = message.topic.value
            got = await self._guarded(topic, self._parse_claim(topic, message.payload))
            if got is not None:
                parsed.append((topic, *got, message.properties))
        if not parsed:
            return set()
        results = await self._stored_together(
            lambda claims: db.grant_many(claims, self.settings.max_open_blocks), [claim for _, claim, _, _ in parsed])
        answers = []
        stations: set[str] = set()
        for (topic, claim, request, props), result in zip(parsed, results):
            if isinstance(result, Exception):
                self._failed(topic, result)
                continue
            status, block, route = result
            self.counters[f"claims.{status.value}"] += 1
            answers.append(self._answer_claim(client, claim.device, request, props, status, route))
            if status is ClaimStatus.GRANTED and block is not None and route is not None:
                stations.add(block.station)
        await asyncio.gather(*answers)  # each claim's answer before its route; the claims side by side
        return stations

    async def _parse_claim(self, topic: str, payload: Any) -> tuple[Claim, ClaimRequest]:
        device = self.fleet.device_of(topic)
        if device is None:
            raise MessageRejected(RejectReason.UNEXPECTED_TOPIC, topic)
        request = ClaimRequest.from_payload(_payload_bytes(payload))
        return Claim(request.block_id, device, self.settings.stations.get(device)), request

    async def _answer_claim(self, client: aiomqtt.Client, device: str, request: ClaimRequest,
                            props: Properties | None, status: ClaimStatus, route: Route | None) -> None:
        result = ClaimResult(request.block_id, request.request_id, device, status)
        reply = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho ships no annotations here
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        reply.CorrelationData = correlation if correlation is not None else request.request_id.encode()
        # Answer only on the claimant's own result topic, whatever response topic it named: the cloud may
        # write anywhere, so it must never be steered into another device's tree.
        await client.publish(self.fleet.device(device).claim_result, encode(self.signer.sign(result.to_body())),
                             qos=1, properties=reply)
        if status is ClaimStatus.GRANTED and route is not None:
            await self._publish_route(client, device, route)

    @staticmethod
    async def _stored_together(store: Callable[[list[Item]], list[R | Exception]], items: list[Item]
                               ) -> list[R | Exception]:
        """`store` (a CloudDb group method) in a thread; a failure of the whole (no connection to be had) is
        every item's."""
        try:
            return await asyncio.to_thread(store, items)
        except CloudDbError as exc:
            return [exc] * len(items)

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
