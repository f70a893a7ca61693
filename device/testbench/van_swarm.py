"""Simulated vans for fleet load: many light MQTT 5 + mutual-TLS clients on one asyncio loop, each speaking the
device's side of the contract (DESIGN.md section 3) with no agent or event store behind it.

A van connects with its own certificate (client id = certificate name, as the broker demands), with the Last
Will and a retained status, subscribes to its own downlink and its station's offers, and then:
- makes events (breadcrumbs with a fix, package scans) with seqs and the device's hash chain
  (`device.contract.chain`), and sends them in batches (`EventBatch`, zstd from `compress_min_bytes` like the
  device) keeping up to `inflight_batches` unacked; an event is done only when the cloud's ack for its batch
  comes; batches without an ack within the timeout go again with new batch ids, as the device's uplink does;
  the window and the timeout follow the acks as the device's do (`cloud_sync.ack_pacing`, unless `paced` is off:
  then `inflight_batches` and `ack_timeout_s` stay fixed);
- claims blocks of its station's (signature-checked) offers with the MQTT 5 response topic and correlation
  data, and counts every answer per request id (each must come exactly once); a claim with no answer within
  `claim_timeout_s` (the device's, `SyncSettings.claim_timeout_s`) is asked again, as a device's claim times out
  then and its driver taps the block again, and so is one still unanswered when a connection ended;
- refreshes its retained status every `status_interval_s` and says `stopped` at the end.

`rate_per_van` 0 means a backlog (a fleet back after an outage): each van sends as fast as its acks come.
`swarm_process` runs a swarm in a child process, driven over a multiprocessing pipe by the bench.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import resource
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_sync.ack_pacing import AckPacing
from cloud_sync.connection import Backoff, BrokerSettings, make_client, mqtt_properties, release
from cloud_sync.errors import MessageRejected
from cloud_sync.messages import (
    BatchAck,
    ClaimRequest,
    ClaimResult,
    Compression,
    DeviceStatus,
    EventBatch,
    Offers,
    Presence,
    RouteAssignment,
    decode_json,
)
from cloud_sync.signing import Verifier
from cloud_sync.sync_settings import SyncSettings
from cloud_sync.topics import FleetTopics
from device.contract.chain import GENESIS_HASH, chain_hash
from device.contract.domain import Event, EventType, Lane, iso_utc, new_event_id, utc_now
from device.contract.position import Position

log = logging.getLogger(__name__)

VERSION = "fleet-load"  # the software version a simulated van reports in its status
MAX_INBOUND_BYTES = SyncSettings.max_inbound_bytes
CLAIM_POLL_S = 1.0  # how often the claimer looks for claims to ask again while it waits
HALT_GRACE_S = 10.0  # at the end, how long the vans' tasks get to close their connections


@dataclass(frozen=True)
class VanPlan:
    device: str
    station: str
    broker: BrokerSettings


@dataclass(frozen=True)
class SwarmSettings:
    fleet: str
    seconds: float  # how long the vans make events
    rate_per_van: float = 0.0  # events/s each van makes; 0: a backlog, sent as fast as the cloud acks
    batch_events: int = 50
    inflight_batches: int = 2
    ack_timeout_s: float = SyncSettings.ack_timeout_s
    claim_timeout_s: float = SyncSettings.claim_timeout_s  # no answer by then: the claim is asked again
    paced: bool = True  # window and ack timeout from the acks seen (cloud_sync.ack_pacing), as the device does
    status_interval_s: float = SyncSettings.status_interval_s
    claims_per_van: int = 1  # claims made at random moments in the first half of the run
    compression: Compression = Compression.ZSTD
    compress_min_bytes: int = SyncSettings.compress_min_bytes
    drain_timeout_s: float = 120.0  # after `seconds`: how long a van may take to get its last acks and answers
    connects_at_once: int = 16  # TLS handshakes in flight per process (aiomqtt connects in executor threads)
    tick_s: float = 0.25  # rate mode: a van adds its due events and sends this often
    backoff: Backoff = Backoff(initial_s=0.2, maximum_s=5.0)


@dataclass
class VanReport:
    """What one van did, for the bench to hold against the cloud's database."""

    device: str
    produced: int = 0  # events made: seqs 1..produced
    head_hash: str = GENESIS_HASH  # the chain hash of the last event made
    acked: int = 0
    batches: int = 0
    batches_resent: int = 0
    acks_unknown: int = 0
    ack_latencies_s: list[float] = field(default_factory=list)
    claims: dict[str, list[str]] = field(default_factory=dict)  # request id -> the answers' statuses
    claimed_blocks: dict[str, str] = field(default_factory=dict)  # request id -> block id
    claim_asks: dict[str, int] = field(default_factory=dict)  # request id -> times published
    claims_skipped: int = 0  # no open block of the station to claim at the planned moment
    claims_republished: int = 0  # asked again on a new connection, still unanswered when the old one ended
    claims_reasked: int = 0  # asked again after `claim_timeout_s` without an answer
    claim_latencies_s: list[float] = field(default_factory=list)
    routes: int = 0
    route_blocks: set[str] = field(default_factory=set)  # blocks whose route came
    offers: int = 0
    statuses: int = 0
    connects: int = 0
    connect_failures: int = 0
    rejects: int = 0
    last_ack_at: float = 0.0  # wall clock of the last ack
    connected: bool = False
    drained: bool = False  # every event acked and every claim answered before the deadline
    unacked_at_end: int = 0  # events still without an ack when the van stopped
    errors: list[str] = field(default_factory=list)
    phase: str = "connecting"  # how far it got: connecting, running, stopping, done

    def routes_missing(self) -> set[str]:
        """Blocks this van was granted whose route has not come (the cloud sends it after the answer)."""
        granted = {self.claimed_blocks[r] for r, answers in self.claims.items() if "granted" in answers}
        return granted - self.route_blocks


@dataclass(frozen=True)
class _Flight:
    first_seq: int
    last_seq: int
    sent_at: float


def _fix(seq: int) -> Position:
    return Position.from_dict({"lat": 47.61 + seq * 1e-6, "lon": -122.34, "mode": 3, "speed": 8.2, "track": 91.0,
                               "eph": 4.0})


def _event(seq: int, block: str, fix: Position, ts: str, mono: float) -> Event:
    """Two breadcrumbs with a fix per package scan, as a van on its route makes them. Events made together share
    their time and fix (it costs the generator less, and the cloud nothing)."""
    if seq % 3:
        return Event(EventType.GPS_FIX, {}, fix=fix, block=block, ts=ts, mono=mono)
    return Event(EventType.PACKAGE_SCANNED, {"package": f"TBA{seq:09d}", "result": "ok"}, block=block, ts=ts,
                 mono=mono)


class Van:
    def __init__(self, plan: VanPlan, settings: SwarmSettings, verifier: Verifier, go: asyncio.Event,
                 rng: random.Random) -> None:
        self.plan = plan
        self.settings = settings
        self.verifier = verifier
        self.go = go
        self.rng = rng
        fleet = FleetTopics(settings.fleet)
        self.topics = fleet.device(plan.device)
        self.offers_topic = fleet.offers(plan.station)
        self.report = VanReport(plan.device)
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()  # drained, or halted at the deadline
        self.halted = False  # the deadline passed: every loop ends (a cancel alone may be swallowed, see below)
        self._unacked: OrderedDict[int, tuple[dict[str, Any], str]] = OrderedDict()  # seq -> (event doc, hash)
        self._to_send: deque[int] = deque()  # seqs not yet sent on this connection
        self._inflight: dict[str, _Flight] = {}
        self._pacing = AckPacing(settings.ack_timeout_s, settings.inflight_batches)
        self._superseded: dict[str, _Flight] = {}  # earlier sends whose late acks still count
        self._wake = asyncio.Event()  # the sender's: an ack came
        self._answered = asyncio.Event()  # the claimer's: a claim result came
        self._offers: bytes | None = None  # the newest offers payload, checked when a claim needs it
        self._claim_sent: dict[str, float] = {}  # request id -> first asked (monotonic)
        self._claim_asked: dict[str, float] = {}  # request id -> last asked (monotonic)
        self._claim_plan: list[float] = []  # seconds after go, still to claim
        self._go_at = 0.0  # monotonic
        self._phase = rng.random()  # rate mode: where in its first event interval the van starts (not in lockstep)
        self._block = f"B-LOAD-{plan.device}"

    # --- lifecycle ---------------------------------------------------------------------------------

    async def run(self, connects: asyncio.Semaphore) -> None:
        """Connect (again after a lost connection) until every event is acked and every claim answered."""
        offline = DeviceStatus(Presence.OFFLINE, self.plan.device, VERSION)
        will = aiomqtt.Will(self.topics.status, offline.to_payload(), qos=1, retain=True)
        delays = self.settings.backoff.delays(self.rng)
        while not self.finished.is_set():
            client = make_client(self.plan.broker, self.plan.device, will=will)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with connects:  # only the handshake holds a slot
                        await stack.enter_async_context(client)
                    self.report.connects += 1
                    delays = self.settings.backoff.delays(self.rng)
                    await self._session(client)
            except* aiomqtt.MqttError as group:
                self.report.connect_failures += 1
                log.warning("%s: connection failed or lost: %s", self.plan.device,
                            "; ".join(map(str, group.exceptions)))
            except* Exception as group:  # a bug here must show in the report, not leave the van hanging
                self.report.errors.append("; ".join(repr(e) for e in group.exceptions)[:300])
                log.error("%s: session failed", self.plan.device, exc_info=group)
            finally:
                self._supersede()
                release(client)
            if not self.finished.is_set():
                await asyncio.sleep(next(delays))

    async def _session(self, client: aiomqtt.Client) -> None:
        for topic in (*self.topics.inbound(), self.offers_topic):
            await client.subscribe(topic, qos=1)
        await self._publish_status(client, Presence.ONLINE)
        self.report.connected = True
        self.connected.set()
        await self.go.wait()
        if not self._go_at:
            self._go_at = time.monotonic()
            window = self.settings.seconds / 2
            self._claim_plan = sorted(self.rng.uniform(0.1 * window, window)
                                      for _ in range(self.settings.claims_per_van))
        self.report.phase = "running"
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(self._read(client))
            group.create_task(self._refresh_status(client, done))
            await asyncio.gather(self._send(client), self._claim(client))
            done.set()
            reader.cancel()
        if self.halted:
            return
        self.report.phase = "stopping"
        await self._publish_status(client, Presence.STOPPED)
        self.report.phase = "done"
        self.report.drained = True
        self.finished.set()

    async def _publish_status(self, client: aiomqtt.Client, state: Presence) -> None:
        status = DeviceStatus(state, self.plan.device, VERSION, len(self._unacked),
                              self.report.produced - len(self._unacked))
        await client.publish(self.topics.status, status.to_payload(), qos=1, retain=True)
        self.report.statuses += 1

    async def _refresh_status(self, client: aiomqtt.Client, done: asyncio.Event) -> None:
        """Until `done`: a cancel alone is not enough, Python 3.11's asyncio.wait_for (under aiomqtt's publish)
        can swallow a cancellation that meets the PUBACK."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_interval_s):
                    await done.wait()
            if not done.is_set():
                await self._publish_status(client, Presence.ONLINE)

    def halt(self) -> None:
        self.halted = True
        self.report.unacked_at_end = len(self._unacked)
        self._wake.set()
        self._answered.set()
        self.finished.set()

    # --- events ------------------------------------------------------------------------------------

    def _producing(self, now: float) -> bool:
        return now - self._go_at < self.settings.seconds

    def _make(self, count: int) -> None:
        report = self.report
        ts, mono, fix = iso_utc(utc_now()), time.monotonic(), _fix(report.produced)
        for _ in range(count):
            seq = report.produced + 1
            doc = _event(seq, self._block, fix, ts, mono).to_dict(seq)
            report.head_hash = chain_hash(report.head_hash, doc)
            report.produced = seq
            self._unacked[seq] = (doc, report.head_hash)
            self._to_send.append(seq)

    def _top_up(self, now: float) -> None:
        if not self._producing(now):
            return
        if self.settings.rate_per_van > 0:
            due = int(self.settings.rate_per_van * (now - self._go_at) + self._phase) - self.report.produced
            self._make(max(0, due))
        elif len(self._to_send) < self.settings.batch_events:
            self._make(self.settings.batch_events - len(self._to_send))

    def _supersede(self) -> None:
        """Whatever is in flight goes again (new batch ids); a late ack for it still counts."""
        self.report.batches_resent += len(self._inflight)
        self._superseded.update(self._inflight)
        self._inflight.clear()
        self._to_send = deque(self._unacked)

    async def _send(self, client: aiomqtt.Client) -> None:
        settings = self.settings
        while not self.halted:
            now = time.monotonic()
            timeout_s, window = self._pace()
            if self._inflight and now - min(f.sent_at for f in self._inflight.values()) > timeout_s:
                log.info("%s: no ack within %.0f s, sending %d batches again", self.plan.device,
                         timeout_s, len(self._inflight))
                self._pacing.timed_out(now)
                self._supersede()
            self._top_up(now)
            # Within a connection seqs go out in order: a rewind may leave seqs acked meanwhile at the front.
            while self._to_send and self._to_send[0] not in self._unacked:
                self._to_send.popleft()
            if self._to_send and len(self._inflight) < window:
                await self._send_batch(client)
                continue
            if not self._producing(now) and not self._unacked:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.tick_s if settings.rate_per_van > 0 else timeout_s):
                    await self._wake.wait()

    def _pace(self) -> tuple[float, int]:
        """(ack timeout, batches in flight at most) now."""
        if not self.settings.paced:
            return self.settings.ack_timeout_s, self.settings.inflight_batches
        return self._pacing.timeout_s, self._pacing.window

    async def _send_batch(self, client: aiomqtt.Client) -> None:
        seqs: list[int] = []
        while self._to_send and len(seqs) < self.settings.batch_events:
            seq = self._to_send.popleft()
            if seq in self._unacked:
                seqs.append(seq)
        docs: list[dict[str, Any]] = [self._unacked[seq][0] for seq in seqs]
        docs[-1] = {**docs[-1], "hash": self._unacked[seqs[-1]][1]}  # the chain checkpoint
        floor_seq = next(iter(self._unacked))
        batch = EventBatch(new_event_id(), self.plan.device, int(Lane.EVENTS), floor_seq, tuple(docs))
        payload = batch.to_payload(Compression.NONE)
        if len(payload) >= self.settings.compress_min_bytes and self.settings.compression is Compression.ZSTD:
            payload = batch.to_payload(Compression.ZSTD)
        self._inflight[batch.batch_id] = _Flight(seqs[0], seqs[-1], time.monotonic())
        await client.publish(self.topics.events, payload, qos=1)
        self.report.batches += 1

    def _on_ack(self, ack: BatchAck) -> None:
        flight = self._inflight.pop(ack.batch_id, None) or self._superseded.pop(ack.batch_id, None)
        if flight is None:
            self.report.acks_unknown += 1
            return
        now = time.monotonic()
        self.report.ack_latencies_s.append(now - flight.sent_at)
        self._pacing.acked(now - flight.sent_at, now)
        for seq in range(flight.first_seq, flight.last_seq + 1):
            if self._unacked.pop(seq, None) is not None:
                self.report.acked += 1
        self.report.last_ack_at = time.time()
        self._wake.set()

    # --- downlink ----------------------------------------------------------------------------------

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                self._handle(topic, payload, message.properties)
            except MessageRejected as exc:
                self.report.rejects += 1
                log.warning("%s: rejected message on %s: %s", self.plan.device, topic, exc)

    def _handle(self, topic: str, payload: bytes, props: Properties | None) -> None:
        if topic == self.topics.ack:
            self._on_ack(BatchAck.from_payload(payload))
        elif topic == self.offers_topic:
            self.report.offers += 1
            self._offers = payload
        elif topic == self.topics.claim_result:
            self._on_claim_result(payload, props)
        elif topic == self.topics.route:
            assignment = RouteAssignment.from_body(self.verifier.verify(decode_json(payload, MAX_INBOUND_BYTES)))
            self.report.routes += 1
            self.report.route_blocks.add(assignment.route.block_id)
            self._answered.set()

    # --- claims ------------------------------------------------------------------------------------

    def _open_blocks(self) -> list[str]:
        if self._offers is None:
            return []
        offers = Offers.from_body(self.verifier.verify(decode_json(self._offers, MAX_INBOUND_BYTES)))
        claimed = set(self.report.claimed_blocks.values())
        return [block.id for block in offers.blocks if block.id not in claimed]

    async def _claim(self, client: aiomqtt.Client) -> None:
        """Claim at the planned moments, then wait until every claim sent has been answered and the route of
        every block won has come. A claim still unanswered when a connection ended goes again with the same
        request id on the next one (the answer may have died with the old connection: paho acknowledges a
        message before the application has read it); so does one unanswered for `claim_timeout_s` on this one
        (the device's claim times out then, `cloud_sync.downlink`, and its driver taps the block again). The
        cloud answers a repeated request the same way."""
        for request_id in [r for r, answers in self.report.claims.items() if not answers]:
            self.report.claims_republished += 1
            await self._publish_claim(client, request_id)
        while self._claim_plan and not self.halted:
            delay = self._go_at + self._claim_plan[0] - time.monotonic()
            if delay > 0:
                await self._await_answers(client, delay)
                continue
            self._claim_plan.pop(0)
            try:
                blocks = self._open_blocks()
            except MessageRejected as exc:
                self.report.rejects += 1
                log.warning("%s: offers rejected: %s", self.plan.device, exc)
                blocks = []
            if not blocks:
                self.report.claims_skipped += 1
                continue
            request_id = new_event_id()
            self.report.claims[request_id] = []
            self.report.claimed_blocks[request_id] = self.rng.choice(blocks)
            self._claim_sent[request_id] = time.monotonic()
            await self._publish_claim(client, request_id)
        while (any(not answers for answers in self.report.claims.values()) or self.report.routes_missing()) \
                and not self.halted:
            await self._await_answers(client, CLAIM_POLL_S)

    async def _await_answers(self, client: aiomqtt.Client, seconds: float) -> None:
        """Wait up to `seconds` (less if an answer comes, or a claim's timeout runs out first), then ask again
        each claim unanswered for `claim_timeout_s`."""
        timeout_s = self.settings.claim_timeout_s
        due = [self._claim_asked[r] + timeout_s for r, answers in self.report.claims.items() if not answers]
        self._answered.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, min([seconds, CLAIM_POLL_S, *(d - time.monotonic() for d in due)]))):
                await self._answered.wait()
        now = time.monotonic()
        for request_id, answers in self.report.claims.items():
            if not answers and not self.halted and now - self._claim_asked[request_id] >= timeout_s:
                log.info("%s: no answer to claim %s within %.0f s, asking again", self.plan.device, request_id,
                         timeout_s)
                self.report.claims_reasked += 1
                await self._publish_claim(client, request_id)

    async def _publish_claim(self, client: aiomqtt.Client, request_id: str) -> None:
        props = mqtt_properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topics.claim_result
        props.CorrelationData = request_id.encode()
        payload = ClaimRequest(self.report.claimed_blocks[request_id], request_id).to_payload()
        self.report.claim_asks[request_id] = self.report.claim_asks.get(request_id, 0) + 1
        self._claim_asked[request_id] = time.monotonic()
        await client.publish(self.topics.claim, payload, qos=1, properties=props)

    def _on_claim_result(self, payload: bytes, props: Properties | None) -> None:
        result = ClaimResult.from_body(self.verifier.verify(decode_json(payload, MAX_INBOUND_BYTES)))
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        answers = self.report.claims.get(result.request_id)
        if result.device != self.plan.device or answers is None or correlation != result.request_id.encode():
            self.report.rejects += 1
            log.warning("%s: claim result for %s/%s does not match a claim of ours", self.plan.device,
                        result.device, result.request_id)
            return
        if not answers:
            self.report.claim_latencies_s.append(time.monotonic() - self._claim_sent[result.request_id])
        answers.append(result.status.value)
        self._answered.set()


async def run_swarm(plans: list[VanPlan], settings: SwarmSettings, verifier: Verifier, conn: Connection) -> None:
    """Connect every van, tell the bench (`("connected", n)`), wait for its go (a wall-clock start), run, and
    send the reports back with this process's CPU seconds since the go and peak RSS
    (`("reports", [...], {"cpu_s", "peak_rss_mb"})`)."""
    go = asyncio.Event()
    vans = [Van(plan, settings, verifier, go, random.Random(plan.device)) for plan in plans]
    connects = asyncio.Semaphore(settings.connects_at_once)
    tasks = [asyncio.create_task(van.run(connects)) for van in vans]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(60.0, len(vans) * 0.1)):
            await asyncio.gather(*(van.connected.wait() for van in vans))
    conn.send(("connected", sum(van.connected.is_set() for van in vans)))
    go_at = await asyncio.to_thread(conn.recv)
    await asyncio.sleep(max(0.0, float(go_at) - time.time()))
    cpu_at_go = time.process_time()
    go.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.seconds + settings.drain_timeout_s):
            await asyncio.gather(*(van.finished.wait() for van in vans))
    for van in vans:
        if not van.finished.is_set():
            van.halt()
    usage = {"cpu_s": time.process_time() - cpu_at_go,  # this process, from the go to the last van's end
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    # The reports go before the clean-up: a task whose cancel was swallowed must not withhold them.
    conn.send(("reports", [van.report for van in vans], usage))
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=HALT_GRACE_S)


def swarm_process(conn: Connection, plans: list[VanPlan], settings: SwarmSettings, signing_pub: Path,
                  log_level: str = "WARNING") -> None:
    """The entry point of one load-generator process (multiprocessing, spawn)."""
    logging.basicConfig(level=log_level, format="%(asctime)s swarm %(levelname)s %(name)s: %(message)s")
    verifier = Verifier.from_pem_files(signing_pub)
    try:
        asyncio.run(run_swarm(plans, settings, verifier, conn))
    finally:
        conn.close()
