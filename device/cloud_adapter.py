"""The agent's cloud port implemented with cloud_sync, and the device config turned into cloud_sync's settings.

The only module of the agent (besides the `flexedge cloud|pki|sync` commands) that imports cloud_sync.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from cloud_sync.connection import Backoff, BrokerSettings
from cloud_sync.device_sync import DeviceSync
from cloud_sync.errors import SyncError
from cloud_sync.messages import Command, Compression, Offers, RouteAssignment
from cloud_sync.signing import Verifier
from cloud_sync.sync_settings import SyncSettings
from device import __version__
from device.cloud_port import CloudCommand, CloudInput
from device.config import Config, ConfigError, MqttSection
from device.store import EventStore
from device.workflow.inputs import ClaimResult, OffersReceived, RouteReceived

log = logging.getLogger(__name__)


def broker_settings_from_config(mqtt: MqttSection) -> BrokerSettings:
    tls = mqtt.tls
    return BrokerSettings(mqtt.host, mqtt.port, mqtt.ca_file if tls else "", mqtt.cert_file if tls else "",
                          mqtt.key_file if tls else "", mqtt.keepalive_s)


def sync_settings_from_config(config: Config) -> SyncSettings:
    sync = config.sync
    try:
        compression = Compression(sync.compression)
    except ValueError:
        raise ConfigError("sync.compression", "config", f"{sync.compression!r} is not zstd or none") from None
    return SyncSettings(device_id=config.device.id, fleet=config.device.fleet, station=config.device.station,
                        version=__version__, batch_max_events=sync.batch_max_events,
                        batch_max_bytes=sync.batch_max_bytes, compression=compression,
                        inflight_batches=sync.inflight_batches, ack_timeout_s=sync.ack_timeout_s,
                        status_interval_s=sync.status_interval_s, will_delay_s=sync.will_delay_s,
                        session_expiry_s=sync.session_expiry_s,
                        backoff=Backoff(sync.backoff_initial_s, sync.backoff_max_s),
                        track_min_batch=sync.track_min_batch, track_linger_s=sync.track_linger_s)


def as_input(message: Offers | RouteAssignment | Command) -> CloudInput:
    """A verified cloud_sync message as the agent's input."""
    if isinstance(message, Offers):
        return OffersReceived(tuple(message.blocks))
    if isinstance(message, RouteAssignment):
        return RouteReceived(message.route)
    return CloudCommand(message.id, message.name, message.args)


class CloudAdapter:
    """`CloudPort` over a `DeviceSync`."""

    def __init__(self, sync: DeviceSync) -> None:
        self.sync = sync

    @classmethod
    def from_config(cls, config: Config, store: EventStore) -> CloudAdapter:
        """Raises ConfigError (bad settings) or SyncError (an unreadable cloud key)."""
        return cls(DeviceSync(store, sync_settings_from_config(config), broker_settings_from_config(config.mqtt),
                              Verifier.from_pem_files(config.sync.cloud_key_file)))

    @property
    def online(self) -> bool:
        return self.sync.connected.is_set()

    @property
    def healthy(self) -> bool:
        return self.sync.healthy

    async def start(self) -> None:
        await self.sync.start()

    async def stop(self) -> None:
        await self.sync.stop()

    async def receive(self) -> CloudInput:
        return as_input(await self.sync.inbox.get())

    async def claim(self, block_id: str, request_id: str) -> ClaimResult:
        try:
            result = await self.sync.claim(block_id, request_id=request_id)
        except (SyncError, TimeoutError) as exc:
            return ClaimResult(block_id, False, f"timeout: {exc}")
        return ClaimResult(block_id, result.granted, "" if result.granted else result.status.value)

    def kick(self) -> None:
        self.sync.kick()

    def report_status(self) -> None:
        self.sync.report_status()

    async def wait_drained(self, timeout_s: float | None) -> None:
        await self.sync.wait_drained(timeout_s)

    def counters(self) -> dict[str, Any]:
        return self.sync.counters.snapshot()


def signature_check(config: Config) -> Callable[[Any], dict[str, Any]]:
    """The fleet's signature check on a signed document (a release manifest is signed like a command): its body,
    or MessageRejected. Raises PkiError for an unreadable key file."""
    return Verifier.from_pem_files(config.sync.cloud_key_file).verify
