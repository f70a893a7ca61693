"""Broker connection settings, the aiomqtt client factory and the jittered reconnect backoff.

Shared by the device sync and the reference cloud. aiomqtt drives paho-mqtt from the asyncio loop with
add_reader/add_writer (STYLE.md item 6): no second network thread, callbacks run on our loop, and a lost
connection surfaces as an exception in the task that owns it, which then reconnects explicitly.
"""
from __future__ import annotations

import contextlib
import random
import ssl
from dataclasses import dataclass
from typing import Iterator

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEFAULT_SESSION_EXPIRY_S = 7 * 86400  # the broker keeps a device's subscriptions and queued acks this long


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    ca_file: str = ""  # empty: plain TCP (loopback development only)
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.ca_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file or None)
        return context


def mqtt_properties(packet_type: int) -> Properties:
    """MQTT 5 properties for one packet type (CONNECT, PUBLISH...)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho-mqtt leaves Properties.__init__ unannotated


def make_client(settings: BrokerSettings, client_id: str, *, will: aiomqtt.Will | None = None,
                persistent: bool = True, session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
                max_inflight: int = 100) -> aiomqtt.Client:
    """An MQTT 5 client. `persistent`: clean start false + session expiry, so the broker keeps the
    subscriptions and queues QoS 1 messages (acks, routes) while the client is away."""
    props = mqtt_properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = session_expiry_s
    client = aiomqtt.Client(
        settings.host, settings.port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5,
        will=will, keepalive=settings.keepalive_s, timeout=settings.connect_timeout_s,
        clean_start=not persistent, properties=props,
        tls_context=settings.tls_context(), max_inflight_messages=max_inflight)
    # aiomqtt warns past 10 publishes awaiting their PUBACK; a cloud worker acking a group of batches has 64 out
    # by design, so the warning is kept for what is worth it: more than the broker's in-flight window.
    client.pending_calls_threshold = max_inflight
    return client


def make_will(topic: str, payload: bytes, delay_s: int) -> aiomqtt.Will:
    """A retained QoS 1 Last Will the broker publishes `delay_s` after the connection is lost, unless the client
    is back by then (MQTT 5 Will Delay Interval); JSON, marked UTF-8."""
    props = mqtt_properties(PacketTypes.WILLMESSAGE)
    props.WillDelayInterval = delay_s
    props.PayloadFormatIndicator = 1
    props.ContentType = "application/json"
    return aiomqtt.Will(topic, payload, qos=1, retain=True, properties=props)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: a fleet that lost its broker does not come back in lockstep."""

    initial_s: float = 0.2
    maximum_s: float = 30.0
    factor: float = 2.0

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        rng = rng or random.Random()
        ceiling = self.initial_s
        while True:
            yield rng.uniform(self.initial_s / 2, ceiling)
            ceiling = min(self.maximum_s, ceiling * self.factor)


def release(client: aiomqtt.Client) -> None:
    """Close what aiomqtt left of a connection while our loop still runs.

    After a failed or broken connection aiomqtt can leave paho's socket open; paho then closes it from
    `__del__`, whose callbacks reach into our event loop, perhaps closed by then ("Event loop is closed").
    """
    paho_client = client._client  # noqa: SLF001 - aiomqtt offers no public handle on this
    sock = paho_client.socket()
    if sock is None:
        return
    for callback in (paho_client.on_socket_unregister_write, paho_client.on_socket_close):
        if callback is not None:
            with contextlib.suppress(Exception):  # the connection is being thrown away either way
                callback(paho_client, None, sock)
    paho_client.on_socket_unregister_write = None
    paho_client.on_socket_close = None
    with contextlib.suppress(OSError):
        sock.close()
