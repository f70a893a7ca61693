"""The downlink: everything the cloud sends a device. Acks go to the uplink; offers, claim results, routes and
commands are size-capped, signature-checked, schema-checked and addressed to this device before use; a command
must be unexpired and not seen before (replays are refused). One reject path: whatever a message raises is a
counted, logged reject and the session goes on (STYLE.md item 18).

Claims are request/response: `claim()` publishes the request with the MQTT 5 response topic and correlation data
and waits for the matching result here.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Awaitable, Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_sync.connection import mqtt_properties
from cloud_sync.errors import ClaimTimeout, MessageRejected, RejectReason
from cloud_sync.link import Link
from cloud_sync.messages import (
    BatchAck,
    ClaimRequest,
    ClaimResult,
    Command,
    Offers,
    RouteAssignment,
    decode_json,
)
from cloud_sync.signing import Verifier
from cloud_sync.sync_settings import SyncCounters, SyncSettings
from cloud_sync.topics import DeviceTopics
from device.contract.domain import new_event_id
from device.store import EventStore, StoreError

log = logging.getLogger(__name__)

SEEN_COMMANDS_KEY = "cloud_sync.seen_commands"  # store state: command id -> expiry (epoch s), for replays

Inbound = Offers | RouteAssignment | Command


def _message_bytes(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    return str(payload).encode()  # aiomqtt gives bytes for MQTT payloads; numbers/None only locally


class Downlink:
    """Verified offers, routes and commands go on `inbox` (an asyncio.Queue), in the order they arrived."""

    def __init__(self, store: EventStore, settings: SyncSettings, topics: DeviceTopics, offers_topic: str,
                 verifier: Verifier, counters: SyncCounters, link: Link,
                 on_ack: Callable[[BatchAck], Awaitable[None]], *, inbox_size: int) -> None:
        self.store = store
        self.settings = settings
        self.topics = topics
        self.offers_topic = offers_topic
        self.verifier = verifier
        self.counters = counters
        self.link = link
        self._on_ack = on_ack
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=inbox_size)
        self._claims: dict[str, asyncio.Future[ClaimResult]] = {}
        self._offers_version = -1

    async def subscribe(self, client: aiomqtt.Client) -> None:
        for topic in (*self.topics.inbound(), self.offers_topic):
            codes = await client.subscribe(topic, qos=1)
            if any(getattr(code, "is_failure", False) for code in codes):
                log.error("broker refused subscription to %s: %s", topic, codes)

    async def claim(self, block_id: str, timeout_s: float | None = None, *,
                    request_id: str | None = None) -> ClaimResult:
        """Ask for a block; the cloud answers on the MQTT 5 response topic with our correlation data.
        `request_id`: the id the workflow recorded in its claim event (a new one if None)."""
        timeout_s = self.settings.claim_timeout_s if timeout_s is None else timeout_s
        request_id = request_id or new_event_id()
        future: asyncio.Future[ClaimResult] = asyncio.get_running_loop().create_future()
        self._claims[request_id] = future
        props = mqtt_properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.topics.claim_result
        props.CorrelationData = request_id.encode()
        payload = ClaimRequest(block_id, request_id).to_payload()
        try:
            async with asyncio.timeout(timeout_s):
                await self.link.publish(self.topics.claim, payload, props, f"claim of {block_id}")
                return await future
        except TimeoutError:
            raise ClaimTimeout(block_id, timeout_s) from None
        finally:
            self._claims.pop(request_id, None)

    async def read(self, client: aiomqtt.Client) -> None:
        """A session task: every inbound message, each used or rejected."""
        async for message in client.messages:
            topic = message.topic.value
            try:
                await self.handle(topic, _message_bytes(message), message.properties)
            except MessageRejected as exc:
                self.counters.rejected[exc.reason] += 1
                log.warning("rejected message on %s: %s", topic, exc)
            except StoreError as exc:
                log.error("store error while handling %s: %s", topic, exc)
            except Exception:  # noqa: BLE001 - a payload we failed to foresee must not end the session
                self.counters.rejected[RejectReason.SCHEMA] += 1
                log.exception("unexpected error handling a message on %s; rejected", topic)

    async def handle(self, topic: str, payload: bytes, props: Properties | None) -> None:
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

    def _to_inbox(self, item: Inbound) -> None:
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
        self._to_inbox(offers)

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
        if not await asyncio.to_thread(self.store.state.save_route, assignment.route):
            self.counters.routes_ignored += 1
            log.info("route %s v%d ignored: not newer than the stored one", assignment.route.block_id,
                     assignment.route.version)
            return
        log.info("route %s v%d accepted", assignment.route.block_id, assignment.route.version)
        self._to_inbox(assignment)

    async def _on_command(self, command: Command) -> None:
        if command.device != self.settings.device_id:
            raise MessageRejected(RejectReason.WRONG_DEVICE, f"command for {command.device!r:.40}")
        now = datetime.now(timezone.utc)
        if command.expires_at <= now:
            raise MessageRejected(RejectReason.EXPIRED, f"command {command.id} expired at {command.expires_at}")
        seen: dict[str, float] = await asyncio.to_thread(self.store.state.get, SEEN_COMMANDS_KEY, {})
        if command.id in seen:
            raise MessageRejected(RejectReason.REPLAY, f"command {command.id} already executed")
        # Expired ids can go: an expired command is refused on its expiry alone.
        seen = {cid: exp for cid, exp in seen.items() if exp > now.timestamp()}
        seen[command.id] = command.expires_at.timestamp()
        await asyncio.to_thread(self.store.state.set, SEEN_COMMANDS_KEY, seen)
        self._to_inbox(command)
