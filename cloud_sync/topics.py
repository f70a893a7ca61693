"""The MQTT topic contract (DESIGN.md section 3) in one place: every topic string is built here."""
from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_ROOT = "flex/v1"
INGEST_SHARE_GROUP = "ingest"  # MQTT 5 shared subscription group of the cloud's ingest workers
DISPATCH_SHARE_GROUP = "dispatch"


def topic_level_ok(value: str) -> bool:
    """A topic level taken from config, a certificate or a payload must not smuggle in wildcards or separators."""
    return bool(value) and not any(c in value for c in "/+#\x00") and not value.startswith("$")


def _segment(value: str, what: str) -> str:
    if not topic_level_ok(value):
        raise ValueError(f"{what} {value!r} cannot be an MQTT topic level")
    return value


@dataclass(frozen=True)
class FleetTopics:
    """Topics of one fleet: `flex/v1/{fleet}/...`."""

    fleet: str

    def __post_init__(self) -> None:
        _segment(self.fleet, "fleet")

    @property
    def root(self) -> str:
        return f"{PROTOCOL_ROOT}/{self.fleet}"

    def device(self, device_id: str) -> DeviceTopics:
        return DeviceTopics(self.fleet, _segment(device_id, "device id"))

    def offers(self, station: str) -> str:
        return f"{self.root}/station/{_segment(station, 'station')}/offers"

    # Wildcard subscriptions of the cloud.
    def all_devices(self, leaf: str) -> str:
        return f"{self.root}/dev/+/{leaf}"

    def shared(self, group: str, topic: str) -> str:
        return f"$share/{group}/{topic}"

    def device_of(self, topic: str) -> str | None:
        """The device id in `.../dev/{device}/...`, or None for a topic outside this fleet's devices."""
        prefix = f"{self.root}/dev/"
        if not topic.startswith(prefix):
            return None
        device, _, _ = topic[len(prefix):].partition("/")
        return device if topic_level_ok(device) else None


@dataclass(frozen=True)
class DeviceTopics:
    fleet: str
    device_id: str

    @property
    def base(self) -> str:
        return f"{PROTOCOL_ROOT}/{self.fleet}/dev/{self.device_id}"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def ack(self) -> str:
        return f"{self.base}/ack"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def claim(self) -> str:
        return f"{self.base}/claim"

    @property
    def claim_result(self) -> str:
        return f"{self.base}/claim/result"

    @property
    def route(self) -> str:
        return f"{self.base}/route"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    def photo(self, photo_id: str) -> str:
        return f"{self.base}/photo/{_segment(photo_id, 'photo id')}"

    def outbound(self) -> tuple[str, ...]:
        """What a device publishes on (topic filters: photos come one topic per photo)."""
        return (self.events, self.status, self.claim, f"{self.base}/photo/+")

    def inbound(self) -> tuple[str, ...]:
        """What a device subscribes to on its own tree (its station's offers come on top)."""
        return (self.ack, self.claim_result, self.route, self.cmd)
