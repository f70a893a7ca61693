"""The [scanner] and [mcu] config sections reach firmware_bridge's settings."""
from __future__ import annotations

from pathlib import Path

import pytest

from device.config import ConfigError, load_config
from device.hardware import mcu_config, scanner_config


def test_no_ports_means_no_devices() -> None:
    config = load_config(None, env={})
    assert scanner_config(config) is None and mcu_config(config) is None


def test_sections_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "flexedge.toml"
    path.write_text('[scanner]\nport = "/dev/serial/by-id/usb-scanner"\nrequire_aim = true\n'
                    '[mcu]\nport = "/dev/ttyAMA0"\nmax_retries = 4\n')
    config = load_config(path, env={"FLEXEDGE_MCU__LINK_TIMEOUT_S": "5"})
    scanner = scanner_config(config)
    assert scanner is not None and scanner.port.path == "/dev/serial/by-id/usb-scanner" and scanner.require_aim
    mcu = mcu_config(config)
    assert mcu is not None and mcu.port.path == "/dev/ttyAMA0"
    assert (mcu.link.max_retries, mcu.link.link_timeout_s, mcu.link.ack_timeout_s) == (4, 5.0, 0.25)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "flexedge.toml"
    path.write_text('[mcu]\nretries = 4\n')
    with pytest.raises(ConfigError, match="mcu.retries: unknown key"):
        load_config(path, env={})
