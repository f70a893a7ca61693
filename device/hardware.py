"""The agent's config sections turned into firmware_bridge settings (firmware_bridge knows no TOML)."""
from __future__ import annotations

from dataclasses import replace

from device.config import Config
from firmware_bridge.mcu.bridge import McuConfig
from firmware_bridge.mcu.link import LinkConfig
from firmware_bridge.scanner import ScannerConfig
from firmware_bridge.transport import PortSettings


def scanner_config(config: Config) -> ScannerConfig | None:
    """None when no scanner port is configured."""
    section = config.scanner
    if not section.port:
        return None
    return ScannerConfig(PortSettings(section.port, section.baudrate), require_aim=section.require_aim,
                         double_read_window_s=section.double_read_window_s)


def mcu_config(config: Config) -> McuConfig | None:
    """None when no MCU port is configured (feedback then degrades to log lines)."""
    section = config.mcu
    if not section.port:
        return None
    link = replace(LinkConfig(), name=f"flexedge {config.device.id}"[:16], ack_timeout_s=section.ack_timeout_s,
                   max_retries=section.max_retries, heartbeat_interval_s=section.heartbeat_interval_s,
                   link_timeout_s=section.link_timeout_s)
    return McuConfig(PortSettings(section.port, section.baudrate), link)
