"""The link: one MQTT connection to the broker at a time, made again with jittered backoff until stopped.

`run()` connects (with the Last Will), hands the client to the session callback, and after the session ended
for any reason (the broker went away, a bug in the session) cleans up and reconnects. `until_stopped()` is the
session task that ends the session cleanly once `request_stop()` was called.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Awaitable, Callable

import aiomqtt
from paho.mqtt.properties import Properties

from cloud_sync.connection import Backoff, BrokerSettings, make_client, release
from cloud_sync.errors import BrokerUnavailable
from cloud_sync.sync_settings import SyncCounters

log = logging.getLogger(__name__)

CLIENT_WAIT_S = 0.05  # connected, but the client not yet handed over: look again this soon
REPUBLISH_PAUSE_S = 0.1  # a publish failed on a dying connection: wait this long before the next try


class _StopSession(Exception):
    """Raised inside the session's task group to end it cleanly on a requested stop."""


class Link:
    def __init__(self, broker: BrokerSettings, client_id: str, *, session_expiry_s: int, backoff: Backoff,
                 counters: SyncCounters) -> None:
        self.broker = broker
        self.client_id = client_id
        self.session_expiry_s = session_expiry_s
        self.backoff = backoff
        self.counters = counters
        self.connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self.stop_requested = asyncio.Event()
        self.last_attempt = time.monotonic()  # when run() last tried to connect (a stuck link stops trying)

    def stuck(self, now: float, grace_s: float) -> bool:
        """Not connected, and no attempt to connect for longer than the longest backoff plus a connect timeout
        plus `grace_s`: the loop hangs somewhere it should not."""
        limit = self.backoff.maximum_s + self.broker.connect_timeout_s + grace_s
        return not self.connected.is_set() and now - self.last_attempt > limit

    def request_stop(self) -> None:
        self.stop_requested.set()

    async def run(self, will: aiomqtt.Will, session: Callable[[aiomqtt.Client], Awaitable[None]],
                  on_close: Callable[[], None]) -> None:
        """Connect, run `session(client)`, and after it ended call `on_close()` and connect again, until stopped."""
        delays = self.backoff.delays()
        while not self.stop_requested.is_set():
            self.last_attempt = time.monotonic()
            client: aiomqtt.Client | None = None
            try:
                # Inside the try: a certificate file missing for a moment (a renewal) or no file descriptor
                # left (EMFILE) is one failed attempt, not the end of the link.
                client = make_client(self.broker, self.client_id, will=will, session_expiry_s=self.session_expiry_s)
                async with client:
                    self.counters.connects += 1
                    delays = self.backoff.delays()  # a good connection resets the backoff
                    self.client = client
                    self.connected.set()
                    log.info("connected to %s:%d as %s", self.broker.host, self.broker.port, self.client_id)
                    await session(client)
            except* _StopSession:
                log.info("sync stopped cleanly")
            except* (aiomqtt.MqttError, BrokerUnavailable, OSError) as group:
                log.warning("broker connection lost: %s", "; ".join(str(e) for e in group.exceptions))
            except* Exception as group:  # a bug must not end the sync for good: log it, reconnect
                log.error("sync session failed", exc_info=group)
            finally:
                self.connected.clear()
                self.client = None
                if client is not None:
                    release(client)
                on_close()
            if self.stop_requested.is_set():
                return
            delay = next(delays)
            log.info("reconnecting in %.2f s", delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stop_requested.wait()

    async def until_stopped(self, goodbye: Callable[[], Awaitable[None]]) -> None:
        """A session task: once a stop is requested, say `goodbye()` (best effort) and end the session."""
        await self.stop_requested.wait()
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await goodbye()
        raise _StopSession

    async def publish(self, topic: str, payload: bytes, properties: Properties, what: str) -> None:
        """Publish (QoS 1) as soon as the link is up; a publish lost to a dropped connection goes again on the
        next one. Callers bound the wait with a timeout."""
        while True:
            await self.connected.wait()
            client = self.client
            if client is None:
                await asyncio.sleep(CLIENT_WAIT_S)
                continue
            try:
                await client.publish(topic, payload, qos=1, properties=properties)
                return
            except aiomqtt.MqttError as exc:
                log.info("%s not sent (%s); retrying after reconnect", what, exc)
                await asyncio.sleep(REPUBLISH_PAUSE_S)
