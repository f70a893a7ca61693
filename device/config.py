"""Configuration: one TOML file, environment overrides, strict validation.

Unknown keys are errors (a typo must not silently fall back to a default). Errors name the key and the file.
Environment overrides: `FLEXEDGE_<SECTION>__<KEY>=value`, e.g. `FLEXEDGE_STORE__RETENTION_DAYS=3`.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from device.contract.domain import Role

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "FLEXEDGE_"


class ConfigError(ValueError):
    def __init__(self, key: str, source: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.key = key
        self.source = source


@dataclass(frozen=True)
class DeviceSection:
    id: str = "van-0001"  # also the TLS certificate CN and MQTT username
    fleet: str = "demo"
    station: str = "DXX1"
    role: Role = Role.VEHICLE


@dataclass(frozen=True)
class StoreSection:
    retention_days: float = 7.0  # acked events older than this are pruned
    min_free_mb: int = 200  # under this, GPS track is thinned and acked events pruned early
    low_disk_track_interval_s: float = 30.0


@dataclass(frozen=True)
class MqttSection:
    host: str = "127.0.0.1"
    port: int = field(default=8883, metadata={"range": (1, 65535)})
    tls: bool = True
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = field(default=30, metadata={"range": (1, 3600)})


@dataclass(frozen=True)
class SyncSection:
    """The cloud link (cloud_sync.device_sync)."""

    cloud_key_file: str = ""  # the cloud's Ed25519 public key (PEM): offers, routes, commands must verify
    batch_max_events: int = 1000
    batch_max_bytes: int = 512 * 1024
    compression: str = "zstd"  # zstd | none
    inflight_batches: int = 8  # batches awaiting the cloud's ack at once
    ack_timeout_s: float = 15.0  # a batch without an ack after this goes again
    status_interval_s: float = 30.0
    session_expiry_s: int = 7 * 86400  # the broker keeps our session (queued acks, routes) this long
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    # Telemetry (GPS breadcrumbs, health) goes up once this many are pending (24: two minutes of breadcrumbs)
    # or the oldest has waited track_linger_s: the data plan pays per batch far more than per event.
    track_min_batch: int = field(default=24, metadata={"range": (1, 1000)})
    track_linger_s: float = 120.0


@dataclass(frozen=True)
class LoggingSection:
    level: str = "INFO"
    json: bool = True


class GpsSourceKind(StrEnum):
    GPSD = "gpsd"  # the receiver is owned by gpsd (the Pi default)
    SERIAL = "serial"  # read NMEA from the receiver's serial port directly


@dataclass(frozen=True)
class GpsSection:
    enabled: bool = True  # false on a unit without a receiver (a dock)
    source: GpsSourceKind = GpsSourceKind.GPSD
    gpsd_host: str = "127.0.0.1"
    gpsd_port: int = field(default=2947, metadata={"range": (1, 65535)})
    serial_port: str = "/dev/serial0"  # for source = "serial"
    baudrate: int = 9600
    min_mode: int = 2  # gpsd mode: 2 = 2D fixes are used, 3 = only 3D fixes
    max_eph_m: float = 50.0  # fixes with a worse horizontal accuracy are dropped
    max_speed_kmh: float = 200.0  # a jump implying more than this is rejected
    dwell_s: float = 20.0  # inside a stop's radius this long = arrived
    depart_margin_m: float = 30.0  # departure fence = stop radius + this
    depart_confirm_s: float = 10.0  # outside the departure fence this long = departed
    thin_tolerance_m: float = 10.0  # stored track: max distance of a dropped point from the kept line
    clock_skew_threshold_s: float = 2.0  # system clock vs GPS time beyond this is recorded


@dataclass(frozen=True)
class ScannerSection:
    port: str = ""  # empty: no scanner; e.g. /dev/serial/by-id/usb-...-if00 or /dev/ttyACM0
    baudrate: int = 115200  # ignored by USB-CDC scanners
    require_aim: bool = False  # true when the scanner sends AIM ids (]E0, ]C1...): lines without one are noise
    double_read_window_s: float = 0.8  # the same code again within this time is one scan


@dataclass(frozen=True)
class McuSection:
    port: str = ""  # empty: no MCU; feedback (LED/buzzer) becomes log lines
    baudrate: int = 115200
    ack_timeout_s: float = 0.25  # see firmware_bridge/PROTOCOL.md section 4.4
    max_retries: int = 8
    heartbeat_interval_s: float = 1.0
    link_timeout_s: float = 3.5  # no frame from the MCU for this long: link down


@dataclass(frozen=True)
class DriverSection:
    simulated: bool = False  # demo and bench units: a simulated driver acts on the agent's notices
    seed: int = 0


class CameraBackend(Enum):
    PICAMERA2 = "picamera2"  # the Pi camera (needs the `pi` extra)
    SIMULATED = "simulated"  # serves image files from camera.sim_dir


@dataclass(frozen=True)
class CameraSection:
    backend: CameraBackend = CameraBackend.SIMULATED
    photo_dir: str = ""  # empty: <data dir>/photos
    sim_dir: str = ""  # folder of images the simulated camera serves
    live_scene: bool = False  # simulated: the folder is the current view (new files = a new scene)
    width: int = 2304  # Camera Module 3 binned full field of view
    height: int = 1296
    autofocus: bool = True  # continuous autofocus, then one focus cycle before each capture
    exposure_us: int = 0  # 0: automatic exposure
    jpeg_quality: int = 90


@dataclass(frozen=True)
class PhotosSection:
    """Proof photos on the way to the cloud (device/upload_copy.py) and on the device's disk."""

    upload_long_side_px: int = field(default=1600, metadata={"range": (320, 10_000)})  # the uploaded copy
    upload_max_kb: int = field(default=300, metadata={"range": (16, 100_000)})  # KiB per uploaded copy
    # Originals and copies are deleted once the cloud holds the photo and store.retention_days have passed;
    # under this much free space on the photo disk, acknowledged photos go at once (oldest first).
    min_free_mb: int = 200


@dataclass(frozen=True)
class VisionSection:
    model: str = ""  # empty: the model shipped in the package
    match_min_confidence: float = 0.75  # reader confidence for "match"; lower is "unreadable"
    mismatch_min_confidence: float = 0.7
    locate_min: float = 0.5
    max_megapixels: float = 40.0  # bigger images are rejected before decoding
    min_sharpness: float = 60.0  # variance of the Laplacian at 640 px width; below: "blurry"
    min_brightness: float = 50.0  # mean grey 0..255; below: "too_dark"
    max_brightness: float = 215.0  # above: "too_bright"
    max_clipped_fraction: float = 0.25  # share of pixels crushed to black or blown to white


@dataclass(frozen=True)
class ConsoleSection:
    """The local web console (device/console): the cab touchscreen, the driver's phone, the dock screen."""

    enabled: bool = False
    bind: str = "127.0.0.1"  # loopback only; "0.0.0.0" to let a phone on the van's Wi-Fi reach it
    allowed_hosts: tuple[str, ...] = ()  # names the page may be opened by, besides IP addresses and localhost
    port: int = field(default=8080, metadata={"range": (1, 65535)})
    pairing_code_ttl_s: float = 900.0  # an unused pairing code expires after this
    pairing_max_attempts: int = 5  # wrong codes before the code is burnt (a new one is made)
    max_tokens: int = 4  # paired browsers kept; the oldest is dropped beyond this
    show_code_on_loopback: bool = True  # the cab screen (a loopback client) may show the current code
    state_interval_s: float = 2.0  # the live stream sends the state at least this often


@dataclass(frozen=True)
class Config:
    device: DeviceSection = field(default_factory=DeviceSection)
    store: StoreSection = field(default_factory=StoreSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    sync: SyncSection = field(default_factory=SyncSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    gps: GpsSection = field(default_factory=GpsSection)
    driver: DriverSection = field(default_factory=DriverSection)
    scanner: ScannerSection = field(default_factory=ScannerSection)
    mcu: McuSection = field(default_factory=McuSection)
    camera: CameraSection = field(default_factory=CameraSection)
    photos: PhotosSection = field(default_factory=PhotosSection)
    vision: VisionSection = field(default_factory=VisionSection)
    console: ConsoleSection = field(default_factory=ConsoleSection)
    data_dir: str = ""  # empty: the platform default (see device.paths)


def _coerce(value: Any, hint: Any, key: str, source: str, from_env: bool) -> Any:
    """Check (TOML) or convert (environment strings) one value against its annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (from_env and value == ""):
            return None
        return _coerce(value, options[0], key, source, from_env)
    if origin is tuple:
        (item_hint, _) = typing.get_args(hint)
        items = value.split(",") if from_env and isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(key, source, f"expected a list, got {value!r}")
        return tuple(_coerce(v, item_hint, key, source, from_env) for v in items)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in hint)
            raise ConfigError(key, source, f"{value!r} is not one of: {allowed}") from None
    if hint is bool:
        if from_env and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(key, source, f"expected true or false, got {value!r}")
    if hint in (int, float):
        if from_env and isinstance(value, str):
            try:
                value = hint(value)
            except ValueError:
                raise ConfigError(key, source, f"expected {hint.__name__}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and isinstance(value, float)):
            raise ConfigError(key, source, f"expected {hint.__name__}, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, source, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, source, f"unsupported type {hint!r}")


Section = TypeVar("Section", bound="DataclassInstance")


def _build(cls: type[Section], raw: Mapping[str, Any], prefix: str, source: str, env: Mapping[str, str]) -> Section:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{prefix}{key}", source, "unknown key")
    values: dict[str, Any] = {}
    for name in fields:
        hint = hints[name]
        key = f"{prefix}{name}"
        env_name = ENV_PREFIX + key.upper().replace(".", "__")
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            section = raw.get(name, {})
            if not isinstance(section, Mapping):
                raise ConfigError(key, source, "expected a table")
            values[name] = _build(hint, section, f"{key}.", source, env)
        elif env_name in env and "." in key:  # section keys only; FLEXEDGE_CONFIG/DATA_DIR are read elsewhere
            values[name] = _coerce(env[env_name], hint, key, f"environment {env_name}", from_env=True)
        elif name in raw:
            values[name] = _coerce(raw[name], hint, key, source, from_env=False)
        limits = fields[name].metadata.get("range")  # a field may carry its valid (low, high) range
        if limits is not None and name in values and not limits[0] <= values[name] <= limits[1]:
            where = f"environment {env_name}" if env_name in env else source
            raise ConfigError(key, where, f"{values[name]} outside [{limits[0]}, {limits[1]}]")
    return cls(**values)


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply environment overrides, validate everything."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("-", source, "file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("-", source, f"not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets the codec's error through
            raise ConfigError("-", source, f"not valid UTF-8 at byte {exc.start}") from None
        except RecursionError:  # tomllib parses nested arrays/tables recursively
            raise ConfigError("-", source, "nested too deeply") from None
    return _build(Config, raw, "", source, env)


def config_to_dict(config: Config) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value
    return {k: ({kk: plain(vv) for kk, vv in v.items()} if isinstance(v, dict) else plain(v))
            for k, v in dataclasses.asdict(config).items()}
