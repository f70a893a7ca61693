"""Configuration: one TOML file, environment overrides, strict validation.

Every key is declared once below with its type, its default, its range or allowed values and a one-line
meaning (`setting(...)`); the loader, `flexedge config --example` and the README's reference are all made
from these declarations. Unknown keys and unknown `FLEXEDGE_*` variables are errors (a typo must not
silently fall back to a default). Errors name the key, where it was set (file or variable) and the problem.
Environment overrides: `FLEXEDGE_<SECTION>__<KEY>=value`, e.g. `FLEXEDGE_STORE__RETENTION_DAYS=3`.
Relative file paths in a config file are relative to that file's directory.

Hand-written rather than a schema library, by the numbers (Python 3.11, x86-64, on top of what the agent
already imports): pydantic 2 costs +12.8 MB RSS and 130-310 ms at import, msgspec +1.8 MB and ~10 ms, this
module nothing extra; the checks are generic over the declarations, so there is one check per rule, not per key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, TypeVar

from device.access import AccessProblem, check_readable
from device.contract.domain import Role

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "FLEXEDGE_"
# FLEXEDGE_* variables that are not config keys, and who reads them.
OTHER_VARIABLES = {
    "FLEXEDGE_CONFIG": "the config file (after --config)",
    "FLEXEDGE_DATA_DIR": "the data directory (after --data-dir)",
    "FLEXEDGE_GPSD": "flexedge selftest: the gpsd to check",
    "FLEXEDGE_SOURCE": "systemd/install.sh: the checkout to install",
}
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # an identity: certificate CN, MQTT username, topic level
HOST_PATTERN = r"[A-Za-z0-9][A-Za-z0-9.:_-]*"  # a DNS name, IPv4 or IPv6 address
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


class ConfigError(ValueError):
    def __init__(self, key: str, source: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.key = key
        self.source = source
        self.problem = problem


def setting(default: Any, doc: str, *, range: tuple[float, float] | None = None,  # noqa: A002
            allowed: tuple[Any, ...] | None = None, pattern: str | None = None, path: str | None = None) -> Any:
    """A config key: its default, one line of meaning, and what values are valid.

    `range`: inclusive (low, high); `allowed`: the valid values; `pattern`: a regular expression the whole
    string must match; `path`: "file" or "dir" (when not empty it must exist and be readable)."""
    meta = {"doc": doc, "range": range, "allowed": allowed, "pattern": pattern, "path": path}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DeviceSection:
    """Who this unit is."""

    id: str = setting("van-0001", "the unit's id: also its TLS certificate CN and MQTT username",
                      pattern=NAME_PATTERN)
    fleet: str = setting("demo", "the fleet: the second level of every MQTT topic", pattern=NAME_PATTERN)
    station: str = setting("DXX1", "the station whose block offers this unit sees", pattern=NAME_PATTERN)
    role: Role = setting(Role.VEHICLE, "a delivery van or a station loading dock")


@dataclass(frozen=True)
class StoreSection:
    """The event store (SQLite in the data directory)."""

    retention_days: float = setting(7.0, "acked events older than this are pruned (unacked never are)",
                                    range=(0.01, 3650))
    min_free_mb: int = setting(200, "under this much free space (MiB): GPS track thinned, acked events pruned early",
                               range=(0, 1_000_000))
    low_disk_track_interval_s: float = setting(30.0, "while space is low, at most one GPS point per interval",
                                               range=(1, 3600))


@dataclass(frozen=True)
class MqttSection:
    """The MQTT broker (mutual TLS: the CA, this unit's certificate and key from `flexedge pki device`)."""

    host: str = setting("127.0.0.1", "the broker's host name or address (as in its certificate)",
                        pattern=HOST_PATTERN)
    port: int = setting(8883, "the broker's TLS port", range=(1, 65535))
    tls: bool = setting(True, "mutual TLS (false only for a loopback test broker)")
    ca_file: str = setting("", "the fleet CA certificate (PEM): ca.crt", path="file")
    cert_file: str = setting("", "this unit's certificate (PEM), CN = device.id", path="file")
    key_file: str = setting("", "this unit's private key (PEM)", path="file")
    keepalive_s: int = setting(30, "MQTT keepalive: a silent link is declared dead after 1.5x this", range=(1, 3600))


@dataclass(frozen=True)
class SyncSection:
    """The cloud link (cloud_sync): without cloud_key_file the unit runs offline."""

    cloud_key_file: str = setting("", "the cloud's Ed25519 public key (PEM, signing.pub): offers, routes and "
                                  "commands must verify with it; empty: no cloud link", path="file")
    batch_max_events: int = setting(1000, "events per batch at most", range=(1, 100_000))
    batch_max_bytes: int = setting(512 * 1024, "bytes per batch at most", range=(1024, 16 * 1024 * 1024))
    compression: str = setting("zstd", "batch compression, flagged in each batch", allowed=("zstd", "none"))
    inflight_batches: int = setting(8, "batches awaiting the cloud's ack at once, at most (fewer while acks come "
                                       "slowly)", range=(1, 64))
    ack_timeout_s: float = setting(15.0, "a batch without the cloud's ack after this is sent again (longer while "
                                   "acks come slowly)", range=(0.5, 3600))
    status_interval_s: float = setting(30.0, "the retained status message is refreshed this often",
                                       range=(5, 86400))
    will_delay_s: int = setting(5, "the broker announces this unit offline (its Last Will) this long after the "
                                "connection is lost, unless it is back by then; at most status_interval_s",
                                range=(0, 3600))
    session_expiry_s: int = setting(7 * 86400, "the broker keeps this unit's session (queued acks, routes) this "
                                    "long", range=(0, 2**32 - 1))
    backoff_initial_s: float = setting(0.2, "first reconnect delay (doubles, with jitter)", range=(0.01, 60))
    backoff_max_s: float = setting(30.0, "longest reconnect delay", range=(0.1, 3600))
    track_min_batch: int = setting(24, "telemetry (GPS breadcrumbs, health) goes up once this many are pending",
                                   range=(1, 1000))
    track_linger_s: float = setting(120.0, "telemetry also goes up once the oldest pending has waited this long",
                                    range=(0.1, 86400))


@dataclass(frozen=True)
class LoggingSection:
    """Logs go to stderr (the journal under systemd)."""

    level: str = setting("INFO", "the least severe level logged", allowed=LOG_LEVELS)
    json: bool = setting(True, "one JSON object per line (false: plain text)")
    file: str = setting("", "also write the log to this file, rotated (relative: in the data directory); what "
                        "the remote upload_logs sends where there is no journal; empty: stderr only")


class GpsSourceKind(StrEnum):
    GPSD = "gpsd"  # the receiver is owned by gpsd (the Pi default)
    SERIAL = "serial"  # read NMEA from the receiver's serial port directly


@dataclass(frozen=True)
class GpsSection:
    """The GPS receiver: through gpsd, or NMEA straight from a serial port."""

    enabled: bool = setting(True, "false on a unit without a receiver (a dock)")
    source: GpsSourceKind = setting(GpsSourceKind.GPSD, "gpsd (the receiver is owned by gpsd) or serial")
    gpsd_host: str = setting("127.0.0.1", "gpsd's address (source = gpsd)", pattern=HOST_PATTERN)
    gpsd_port: int = setting(2947, "gpsd's port (source = gpsd)", range=(1, 65535))
    serial_port: str = setting("/dev/serial0", "the receiver's serial port (source = serial)")
    baudrate: int = setting(9600, "the receiver's line speed (source = serial)", allowed=BAUD_RATES)
    min_mode: int = setting(2, "2: 2D fixes are used, 3: only 3D fixes", allowed=(2, 3))
    max_eph_m: float = setting(50.0, "fixes with a worse horizontal accuracy (m) are dropped", range=(1, 10_000))
    max_speed_kmh: float = setting(200.0, "a jump implying more than this speed is rejected", range=(10, 1000))
    dwell_s: float = setting(20.0, "inside a stop's radius this long = arrived", range=(0, 3600))
    depart_margin_m: float = setting(30.0, "departure fence = the stop's radius + this", range=(0, 10_000))
    depart_confirm_s: float = setting(10.0, "outside the departure fence this long = departed", range=(0, 3600))
    thin_tolerance_m: float = setting(10.0, "stored track: how far a dropped point may lie from the kept line",
                                      range=(0, 1000))
    clock_skew_threshold_s: float = setting(2.0, "a system clock this far off GPS time is recorded",
                                            range=(0.1, 86400))


@dataclass(frozen=True)
class ScannerSection:
    """The barcode scanner (serial or USB-CDC)."""

    port: str = setting("", "the scanner's port, e.g. /dev/serial/by-id/usb-...-if00; empty: no scanner")
    baudrate: int = setting(115200, "line speed (USB-CDC scanners ignore it)", allowed=BAUD_RATES)
    require_aim: bool = setting(False, "the scanner sends AIM ids (]E0, ]C1...): lines without one are noise")
    double_read_window_s: float = setting(0.8, "the same code again within this time is one scan", range=(0, 60))


@dataclass(frozen=True)
class McuSection:
    """The peripheral microcontroller (LEDs, buzzer, inputs): firmware_bridge/PROTOCOL.md."""

    port: str = setting("", "the MCU's serial port; empty: no MCU (feedback becomes log lines)")
    baudrate: int = setting(115200, "line speed", allowed=BAUD_RATES)
    ack_timeout_s: float = setting(0.25, "a frame not acked after this is sent again", range=(0.01, 10))
    max_retries: int = setting(8, "retransmissions before a message fails", range=(0, 100))
    heartbeat_interval_s: float = setting(1.0, "a heartbeat this often", range=(0.1, 60))
    link_timeout_s: float = setting(3.5, "no frame from the MCU for this long: link down, handshake again",
                                    range=(0.5, 600))


@dataclass(frozen=True)
class DriverSection:
    """Demo and bench units only."""

    simulated: bool = setting(False, "a simulated driver acts on the agent's notices")
    seed: int = setting(0, "the simulated driver's random seed", range=(0, 2**63 - 1))


class CameraBackend(Enum):
    NONE = "none"  # no camera: proof photos cannot be taken
    PICAMERA2 = "picamera2"  # the Pi camera (picamera2 from apt: python3-picamera2)
    SIMULATED = "simulated"  # serves image files from camera.sim_dir


@dataclass(frozen=True)
class CameraSection:
    """The proof-photo camera."""

    backend: CameraBackend = setting(CameraBackend.NONE, "none, picamera2 (the Pi camera) or simulated "
                                     "(image files from sim_dir)")
    photo_dir: str = setting("", "where photos are saved; empty: <data dir>/photos")
    sim_dir: str = setting("", "the folder of images the simulated camera serves (backend = simulated)",
                           path="dir")
    live_scene: bool = setting(False, "simulated: the folder is the current view (new files = a new scene)")
    width: int = setting(2304, "capture width in pixels (Camera Module 3 binned: 2304)", range=(64, 9152))
    height: int = setting(1296, "capture height in pixels", range=(64, 6944))
    autofocus: bool = setting(True, "continuous autofocus, then one focus cycle before each capture")
    exposure_us: int = setting(0, "fixed exposure in microseconds; 0: automatic", range=(0, 10_000_000))
    jpeg_quality: int = setting(90, "JPEG quality of saved photos", range=(1, 100))


@dataclass(frozen=True)
class PhotosSection:
    """Proof photos on the way to the cloud (device/upload_copy.py) and on the device's disk."""

    upload_long_side_px: int = setting(1600, "the copy sent to the cloud is scaled to this long side (pixels)",
                                       range=(320, 10_000))
    upload_max_kb: int = setting(300, "the copy sent to the cloud is at most this many KiB", range=(16, 100_000))
    # Originals and copies are deleted once the cloud holds the photo and store.retention_days have passed.
    min_free_mb: int = setting(200, "under this much free space (MiB) on the photo disk, photos the cloud holds "
                               "are deleted at once, oldest first", range=(0, 1_000_000))


@dataclass(frozen=True)
class VisionSection:
    """The house-number check on proof photos."""

    model: str = setting("", "a model file whose folder holds the text_det/text_rec set; empty: the shipped models",
                         path="file")
    match_min_confidence: float = setting(0.75, "every character's confidence for match; below: unreadable",
                                          range=(0, 1))
    mismatch_min_confidence: float = setting(0.7, "reader confidence for mismatch; below: unreadable",
                                             range=(0, 1))
    locate_min: float = setting(0.5, "text detector: mean text probability of a region kept", range=(0, 1))
    max_megapixels: float = setting(40.0, "bigger images are rejected before decoding", range=(0.1, 400))
    min_sharpness: float = setting(60.0, "variance of the Laplacian at 640 px width; below: blurry",
                                   range=(0, 1e6))
    min_brightness: float = setting(50.0, "mean grey 0..255; below: too_dark", range=(0, 255))
    max_brightness: float = setting(215.0, "mean grey 0..255; above: too_bright", range=(0, 255))
    max_clipped_fraction: float = setting(0.25, "share of pixels crushed to black or blown to white",
                                          range=(0, 1))


@dataclass(frozen=True)
class ConsoleSection:
    """The local web console (device/console): the cab touchscreen, the driver's phone, the dock screen."""

    enabled: bool = setting(False, "true: flexedge run serves the console")
    bind: str = setting("127.0.0.1", "listen address; 0.0.0.0 lets a phone on the van's Wi-Fi reach it",
                        pattern=HOST_PATTERN)
    allowed_hosts: tuple[str, ...] = setting((), "host names the page may be opened by, besides IP addresses and "
                                             "localhost", pattern=HOST_PATTERN)
    port: int = setting(8080, "listen port", range=(1, 65535))
    pairing_code_ttl_s: float = setting(900.0, "an unused pairing code expires after this", range=(10, 86400))
    pairing_max_attempts: int = setting(5, "wrong codes before the code is burnt (a new one is made)",
                                        range=(1, 100))
    max_tokens: int = setting(4, "paired browsers kept; the oldest is dropped beyond this", range=(1, 100))
    max_connections: int = setting(64, "connections open at once; more are closed", range=(1, 1024))
    header_timeout_s: float = setting(10.0, "a connection that has not sent a whole request header this long after "
                                      "it opened (or after its last answer) is closed", range=(1, 600))
    show_code_on_loopback: bool = setting(True, "the cab screen (a loopback client) may show the current code")
    state_interval_s: float = setting(2.0, "the live stream sends the state at least this often", range=(0.1, 60))


@dataclass(frozen=True)
class UpdateSection:
    """Over-the-air updates of the agent (device/update/): where releases live, how a new one proves itself."""

    releases_dir: str = setting("", "the releases folder (<version>/, current, previous); empty: "
                                "<data dir>/releases")
    gate_s: float = setting(120.0, "a new release must reach READY with its store checked and its cloud link up "
                            "within this many seconds, or the previous release is put back", range=(5, 3600))
    max_starts: int = setting(3, "starts of a new release without passing its gate before the unit's guard puts "
                              "the previous release back", range=(1, 20))
    fetch_attempts: int = setting(8, "downloads of a release artifact tried per update command (a cut one resumes "
                                  "where it stopped) before the command answers failed", range=(1, 100))
    free_margin_mb: int = setting(64, "an update goes ahead only when the releases filesystem keeps this much free "
                                  "beyond the artifact, its unpacked files and its venv", range=(0, 65536))


@dataclass(frozen=True)
class CommandsSection:
    """Remote commands from the cloud (device/commands): how a remote config change proves itself."""

    config_confirm_s: float = setting(120.0, "after a remote set_config, the cloud link must be up within this "
                                      "many seconds of the restart, or the previous config is put back",
                                      range=(5, 3600))
    config_max_starts: int = setting(3, "after a remote set_config, this many starts without confirming it put the "
                                     "previous config back (a config the agent crashes on)", range=(1, 20))
    logs_max_bytes: int = setting(8 * 1024 * 1024, "upload_logs sends at most this many bytes of log text (the "
                                  "newest), before compression", range=(64 * 1024, 256 * 1024 * 1024))
    selftest_check_s: float = setting(15.0, "a remote selftest's check that has not answered within this many "
                                      "seconds reports failed, timed out", range=(1, 600))
    selftest_deadline_s: float = setting(60.0, "a remote selftest answers within this many seconds: checks not "
                                         "started by then report failed, timed out", range=(5, 3600))


@dataclass(frozen=True)
class Config:
    data_dir: str = setting("", "where the store and photos live; empty: /var/lib/flexedge under systemd or with "
                            "/etc/flexedge/flexedge.toml, else ~/.local/state/flexedge")
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
    commands: CommandsSection = field(default_factory=CommandsSection)
    update: UpdateSection = field(default_factory=UpdateSection)


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
        if not math.isfinite(value):
            raise ConfigError(key, source, f"expected a finite number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, source, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, source, f"unsupported type {hint!r}")


def constraint_text(meta: Mapping[str, Any], hint: Any = None) -> str:
    """The valid values of a key in words: `1..65535`, `one of: zstd, none`."""
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of: " + ", ".join(str(m.value) for m in hint)
    if meta.get("range") is not None:
        low, high = (int(v) if float(v).is_integer() else v for v in meta["range"])
        return f"{low}..{high}"
    if meta.get("allowed") is not None:
        return "one of: " + ", ".join(str(v) for v in meta["allowed"])
    return ""


def _check_value(value: Any, meta: Mapping[str, Any], key: str, source: str) -> None:
    """The declared range, allowed set or pattern of one key."""
    limits = meta.get("range")
    if limits is not None and not limits[0] <= value <= limits[1]:
        raise ConfigError(key, source, f"{value!r} is outside {constraint_text(meta)}")
    allowed = meta.get("allowed")
    if allowed is not None and value not in allowed:
        raise ConfigError(key, source, f"{value!r} is not {constraint_text(meta)}")
    pattern = meta.get("pattern")
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if pattern is not None and item == "":
            raise ConfigError(key, source, f"empty: set it ({meta['doc']})")
        if pattern is not None and not re.fullmatch(pattern, item):
            raise ConfigError(key, source, f"{item!r} is not valid here (expected the pattern {pattern})")


Section = TypeVar("Section", bound="DataclassInstance")


def _build(cls: type[Section], raw: Mapping[str, Any], prefix: str, source: str, env: Mapping[str, str],
           origins: dict[str, str], base_dir: Path | None, errors: list[ConfigError]) -> Section:
    """The section from its table and the environment; a bad key is added to `errors` and left at its default."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            errors.append(ConfigError(f"{prefix}{key}", source, f"unknown key{hint}"))
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        env_name = env_variable(key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            section = raw.get(name, {})
            if not isinstance(section, Mapping):
                errors.append(ConfigError(key, source, "expected a table"))
                section = {}
            values[name] = _build(hint, section, f"{key}.", source, env, origins, base_dir, errors)
            continue
        try:
            if env_name in env and "." in key:  # section keys only; FLEXEDGE_CONFIG/DATA_DIR are read elsewhere
                where = f"environment {env_name}"
                value = _coerce(env[env_name], hint, key, where, from_env=True)
            elif name in raw:
                where = source
                value = _coerce(raw[name], hint, key, source, from_env=False)
                if spec.metadata.get("path") and value and base_dir is not None:
                    value = str(base_dir / value)  # relative to the config file's directory
            else:
                continue
            _check_value(value, spec.metadata, key, where)
        except ConfigError as exc:
            errors.append(exc)
            continue
        values[name], origins[key] = value, where
    return cls(**values)


def env_variable(key: str) -> str:
    """`mqtt.port` -> `FLEXEDGE_MQTT__PORT`."""
    return ENV_PREFIX + key.upper().replace(".", "__")


def config_keys() -> dict[str, dataclasses.Field[Any]]:
    """Every key, dotted (`mqtt.port`), with its declaration."""
    keys: dict[str, dataclasses.Field[Any]] = {}
    for section in dataclasses.fields(Config):
        hint = typing.get_type_hints(Config)[section.name]
        if dataclasses.is_dataclass(hint):
            keys.update({f"{section.name}.{f.name}": f for f in dataclasses.fields(hint)})
        else:
            keys[section.name] = section
    return keys


def _environment_problems(env: Mapping[str, str]) -> Iterator[ConfigError]:
    """A FLEXEDGE_* variable that is no key (a typo like FLEXEDGE_MQTT__PROT) must not be ignored."""
    known = {env_variable(k) for k in config_keys() if "." in k} | set(OTHER_VARIABLES)
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            yield ConfigError(name, f"environment {name}", f"unknown variable{hint}")


def _rule_problems(config: Config, origins: Mapping[str, str], source: str) -> Iterator[ConfigError]:
    """Rules between keys."""
    def where(key: str) -> str:
        return origins.get(key, source)

    camera = config.camera
    if camera.backend is CameraBackend.SIMULATED and not camera.sim_dir:
        yield ConfigError("camera.sim_dir", where("camera.backend"),
                          'camera.backend = "simulated" needs sim_dir (a folder of images); "none" for no camera')
    if config.sync.cloud_key_file and config.mqtt.tls:
        for name in ("ca_file", "cert_file", "key_file"):
            if not getattr(config.mqtt, name):
                yield ConfigError(f"mqtt.{name}", where("sync.cloud_key_file"),
                                  "empty, but the cloud link (sync.cloud_key_file) needs mutual TLS: "
                                  "the files from `flexedge pki device`")
    if config.sync.backoff_initial_s > config.sync.backoff_max_s:
        yield ConfigError("sync.backoff_initial_s", where("sync.backoff_initial_s"),
                          f"{config.sync.backoff_initial_s} is above sync.backoff_max_s ({config.sync.backoff_max_s})")
    if config.sync.will_delay_s > config.sync.status_interval_s:
        yield ConfigError("sync.will_delay_s", where("sync.will_delay_s"),
                          f"{config.sync.will_delay_s} is longer than sync.status_interval_s "
                          f"({config.sync.status_interval_s}): a vanished unit would show online past its interval")
    if config.vision.min_brightness >= config.vision.max_brightness:
        yield ConfigError("vision.min_brightness", where("vision.min_brightness"),
                          "must be below vision.max_brightness")
    if config.mcu.link_timeout_s <= config.mcu.heartbeat_interval_s:
        yield ConfigError("mcu.link_timeout_s", where("mcu.link_timeout_s"),
                          "must be longer than mcu.heartbeat_interval_s")


def _file_problems(config: Config, origins: Mapping[str, str], source: str,
                   user: str | None) -> Iterator[ConfigError]:
    """Every configured file exists and can be read (by `user`, default: this process)."""
    for key, spec in config_keys().items():
        kind = spec.metadata.get("path")
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name) if name else getattr(config, section)
        if not kind or not value:
            continue
        if key == "camera.sim_dir" and config.camera.backend is not CameraBackend.SIMULATED:
            continue
        try:
            check_readable(Path(value), directory=kind == "dir", user=user)
        except AccessProblem as exc:
            yield ConfigError(key, origins.get(key, source), f"{exc} ({spec.metadata['doc']})")


def load_config(path: Path | None, env: Mapping[str, str] | None = None, *, check_files: bool = True,
                file_user: str | None = None) -> Config:
    """Read the TOML file (if any), apply environment overrides, validate everything; the first problem is
    raised. `check_files`: the certificate, key, model and image paths must exist and be readable by
    `file_user` (default: this process, which under systemd is the service user)."""
    config, problems = _load(path, env, check_files, file_user)
    if problems:
        raise problems[0]
    assert config is not None
    return config


def config_problems(path: Path | None, env: Mapping[str, str] | None = None, *,
                    file_user: str | None = None) -> list[ConfigError]:
    """Every problem of the config at once (a self-test lists what is still to fix)."""
    return _load(path, env, True, file_user)[1]


def _load(path: Path | None, env: Mapping[str, str] | None, check_files: bool,
          file_user: str | None) -> tuple[Config | None, list[ConfigError]]:
    env = os.environ if env is None else env
    source = str(path) if path else "defaults"
    try:
        raw = _read(path) if path is not None else {}
    except ConfigError as exc:
        return None, [exc]
    problems = list(_environment_problems(env))
    origins: dict[str, str] = {}
    base_dir = Path(path).resolve().parent if path is not None else None
    config = _build(Config, raw, "", source, env, origins, base_dir, problems)
    problems += _rule_problems(config, origins, source)
    if check_files:
        problems += _file_problems(config, origins, source, file_user)
    return config, problems


def _read(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("-", source, "file not found") from None
    except PermissionError:
        raise ConfigError("-", source, "permission denied (the file is for root and the flexedge group: "
                          "run with sudo)") from None
    except IsADirectoryError:
        raise ConfigError("-", source, "is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("-", source, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets the codec's error through
        raise ConfigError("-", source, f"not valid UTF-8 at byte {exc.start}") from None
    except RecursionError:  # tomllib parses nested arrays/tables recursively
        raise ConfigError("-", source, "nested too deeply") from None


def parse_setting(assignment: str) -> tuple[str, Any]:
    """`mqtt.port=8883` -> ("mqtt.port", 8883), converted as an environment override would be (not
    range-checked: a template may leave a value empty for the technician to fill in)."""
    key, sep, text = assignment.partition("=")
    spec = config_keys().get(key)
    if not sep or spec is None:
        raise ConfigError(key or assignment, "--set", "expected KEY=VALUE with a key of `flexedge config --example`")
    section, _, name = key.partition(".")
    hint = typing.get_type_hints(typing.get_type_hints(Config)[section])[name] if name else str
    return key, _coerce(text, hint, key, "--set", from_env=True)


def default_value(spec: dataclasses.Field[Any]) -> Any:
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def toml_value(value: Any) -> str:
    """One value as TOML (strings, numbers, booleans, enums, lists of those)."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def example_text(values: Mapping[str, Any] | None = None) -> str:
    """The complete reference config: every key with its default (or `values[key]`), meaning and valid values."""
    values = values or {}
    lines = ["# Flex Edge configuration: every key, with its default, its meaning and its valid values.",
             "# Check a file with `flexedge config --validate`. Any key can be set from the environment as",
             "# FLEXEDGE_<SECTION>__<KEY>, e.g. FLEXEDGE_MQTT__HOST=broker.example.",
             "# Relative file paths are relative to this file's directory.", ""]
    current = None
    hints = typing.get_type_hints(Config)
    for key, spec in config_keys().items():
        section, _, name = key.partition(".")
        if name and section != current:
            current = section
            lines += ["", f"[{section}]", f"# {(hints[section].__doc__ or '').strip().splitlines()[0]}"]
        value = values.get(key, default_value(spec))
        hint = typing.get_type_hints(hints[section])[name] if name else hints[key]
        valid = constraint_text(spec.metadata, hint)
        lines.append(f"# {spec.metadata['doc']}" + (f" ({valid})" if valid else ""))
        lines.append(f"{name or key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def config_to_dict(config: Config) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value
    return {k: ({kk: plain(vv) for kk, vv in v.items()} if isinstance(v, dict) else plain(v))
            for k, v in dataclasses.asdict(config).items()}
