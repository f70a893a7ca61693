from __future__ import annotations

from pathlib import Path

import pytest

from device.config import ConfigError, load_config
from device.contract.domain import Role
from device.paths import resolve_data_dir


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flexedge.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(None, env={})
    assert config.device.role is Role.VEHICLE
    assert config.store.retention_days == 7.0


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[device]\nid = "van-0042"\nrole = "dock"\n[store]\nmin_free_mb = 50\n')
    config = load_config(path, env={"FLEXEDGE_STORE__MIN_FREE_MB": "75", "FLEXEDGE_MQTT__TLS": "false"})
    assert config.device.id == "van-0042"
    assert config.device.role is Role.DOCK
    assert config.store.min_free_mb == 75
    assert config.mqtt.tls is False


@pytest.mark.parametrize(("text", "env", "key", "source"), [
    ('[device]\nrol = "dock"\n', {}, "device.rol", "flexedge.toml"),
    ('[device]\nrole = "truck"\n', {}, "device.role", "flexedge.toml"),
    ('[store]\nmin_free_mb = "lots"\n', {}, "store.min_free_mb", "flexedge.toml"),
    ('[store]\nmin_free_mb = 1.5\n', {}, "store.min_free_mb", "flexedge.toml"),
    ('[mqtt]\ntls = "yes"\n', {}, "mqtt.tls", "flexedge.toml"),
    ('device = 3\n', {}, "device", "flexedge.toml"),
    ('', {"FLEXEDGE_MQTT__PORT": "eighty"}, "mqtt.port", "FLEXEDGE_MQTT__PORT"),
    ('[device\n', {}, "-", "flexedge.toml"),
    ('[mqtt]\nport = -5\n', {}, "mqtt.port", "flexedge.toml"),
    ('[mqtt]\nport = 99999999999999999999\n', {}, "mqtt.port", "flexedge.toml"),
    ('', {"FLEXEDGE_GPS__GPSD_PORT": "0"}, "gps.gpsd_port", "FLEXEDGE_GPS__GPSD_PORT"),
])
def test_errors_name_the_key_and_the_source(tmp_path: Path, text, env, key, source) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env)
    assert info.value.key == key
    assert source in info.value.source


def test_data_dir_precedence(tmp_path: Path) -> None:
    env = {"FLEXEDGE_DATA_DIR": "/env/dir", "HOME": "/home/x"}
    assert resolve_data_dir("/flag/dir", "/config/dir", env) == Path("/flag/dir")
    assert resolve_data_dir(None, "/config/dir", env) == Path("/env/dir")
    assert resolve_data_dir(None, "/config/dir", {}) == Path("/config/dir")
    assert resolve_data_dir(None, "", {"STATE_DIRECTORY": "/var/lib/flexedge"}) == Path("/var/lib/flexedge")
    assert resolve_data_dir(None, "", {"INVOCATION_ID": "x"}) == Path("/var/lib/flexedge")
    assert resolve_data_dir(None, "", {"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/flexedge")
