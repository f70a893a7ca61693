"""Builds the agent from its config: the store, the workflow, and whichever hardware this unit has.

A section without a port/path means "not attached": no scanner, no MCU (feedback becomes log lines), no
camera. The cloud link is attached when `[sync] cloud_key_file` is set (inbound messages must verify).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from device import __version__
from device.agent import Agent, PhotoTaker, ProofPhoto
from device.cloud_port import CloudPort
from device.commands import CommandContext, CommandExecutor, CommandRegistry
from device.commands.builtin import builtin_registry
from device.commands.withdraw import register_withdraw
from device.config import Config
from device.contract.domain import Role, Stop
from device.hardware import mcu_config, scanner_config
from device.paths import store_path
from device.photo_retention import PhotoRetention, PhotoRetentionPolicy
from device.positioning import setup as positioning
from device.sdnotify import Notifier
from device.store import EventStore, RetentionPolicy
from device.update.command import register_update
from device.update.fetch import TlsFiles
from device.update.handler import running_release_facts
from device.update.service import UpdateService, update_settings
from device.workflow.runner import WorkflowRunner
from firmware_bridge.fix import Fix
from firmware_bridge.indicator import Indicator
from firmware_bridge.mcu.bridge import McuBridge
from firmware_bridge.scanner import ScannerReader

log = logging.getLogger(__name__)


def retention_policy(config: Config) -> RetentionPolicy:
    return RetentionPolicy(
        acked_max_age_s=config.store.retention_days * 86400.0,
        min_free_bytes=config.store.min_free_mb * 1024 * 1024,
        low_disk_track_interval_s=config.store.low_disk_track_interval_s,
    )


def open_store(config: Config, data_dir: Path) -> EventStore:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the agent's records and keys: its user's only
    return EventStore(store_path(data_dir), retention_policy(config))


@dataclass
class Assembly:
    """The agent plus the hardware it owns, for start-up and orderly shutdown."""

    agent: Agent
    scanner: ScannerReader | None = None
    mcu: McuBridge | None = None
    gps: Any = None
    console: Any = None  # device.console.server.ConsoleServer when [console] enabled
    closers: list[Any] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        if self.mcu is not None:
            self.mcu.start()
            self.agent.start("mcu", self.agent.mcu_input_loop(self.mcu))
        if self.scanner is not None:
            self.scanner.start()
            self.agent.start("scanner", self.agent.scanner_loop(self.scanner))
        if self.gps is not None:
            self.agent.start("gps", self.agent.gps_loop(self.gps))
        if self.console is not None:
            await self.console.start()
        try:
            await self.agent.run(stop)
        finally:
            if self.console is not None:
                await self.console.stop()
            if self.scanner is not None:
                await self.scanner.close()
            if self.mcu is not None:
                await self.mcu.close()
            for close in self.closers:
                close()


def _photo_taker(config: Config, data_dir: Path) -> tuple[PhotoTaker | None, Callable[[], None] | None]:
    """Camera + house-number check as one awaitable step, and the camera's close; (None, None) when the unit has
    no camera."""
    from device.photos import camera_from_config, photo_dir, upload_limits
    from device.upload_copy import UploadCopy, UploadCopyError, make_upload_copy
    from device.vision.check import checker_from_config
    from firmware_bridge.camera import capture_photo

    section = config.camera
    if section.backend.value == "none":
        return None, None
    camera = camera_from_config(section)
    camera.open()
    checker = checker_from_config(config.vision)
    folder = photo_dir(section, data_dir)
    limits = upload_limits(config.photos)

    def check_and_copy(stop: Stop, fix: Fix | None) -> ProofPhoto:
        saved = capture_photo(camera, folder, fix, section.jpeg_quality)
        result = checker.check(saved.path, stop.house_number)
        box = None
        if result.boxes:
            x0, y0, x1, y1 = result.boxes[0]
            box = (x0, y0, x1 - x0, y1 - y0)
        try:
            copy = make_upload_copy(saved.path, limits)
        except UploadCopyError as exc:  # the original still goes up: proof first, data plan second
            log.error("photo %s: no upload copy (%s); the original will be uploaded", saved.photo_id, exc)
            copy = UploadCopy(saved.path, saved.sha256, saved.bytes, 0, 0, 0)
        return ProofPhoto(saved.photo_id, str(saved.path), saved.sha256, result.verdict,
                          result.read, result.confidence, box, result.ms, str(copy.path), copy.sha256,
                          saved.bytes, copy.bytes)

    def capture_and_check(stop: Stop, fix: Fix | None) -> ProofPhoto:
        try:
            return check_and_copy(stop, fix)
        finally:  # a van takes a photo every few minutes: between them it carries no detector buffers (~130 MB)
            checker.release()

    async def take_photo(stop: Stop, fix: Fix | None) -> ProofPhoto:
        # The camera and the interpreter block: they run in a worker thread, the loop stays free.
        return await asyncio.to_thread(capture_and_check, stop, fix)

    return take_photo, camera.close


def _photo_retention(config: Config, store: EventStore, data_dir: Path, camera: bool) -> PhotoRetention:
    """Files the cloud holds: proof photos (on a unit with a camera) and blobs such as uploaded logs (any unit;
    they live in the data directory)."""
    policy = PhotoRetentionPolicy(max_age_s=config.store.retention_days * 86400.0,
                                  min_free_bytes=config.photos.min_free_mb * 1024 * 1024)
    if not camera:
        return PhotoRetention(store, data_dir, policy)
    from device.photos import photo_dir  # Pillow: only on a unit with a camera

    return PhotoRetention(store, photo_dir(config.camera, data_dir), policy)


def _cloud(config: Config, store: EventStore) -> CloudPort | None:
    if not config.sync.cloud_key_file:
        log.warning("no [sync] cloud_key_file configured: running without a cloud link")
        return None
    from device.cloud_adapter import CloudAdapter  # cloud_sync (paho, zstd) is imported only with a cloud link

    return CloudAdapter.from_config(config, store)


def _updates(config: Config, data_dir: Path, agent: Agent, registry: CommandRegistry) -> UpdateService:
    """Over-the-air updates: the gate and outcome report at start; the `update` command where there is a cloud."""
    cloud = agent.cloud
    service = UpdateService(update_settings(config, data_dir), agent.store, agent.ready,
                            lambda: cloud is not None and cloud.online, agent.request_restart)
    if cloud is not None:
        from device.cloud_adapter import signature_check

        mqtt = config.mqtt
        tls = TlsFiles(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if mqtt.cert_file else None
        register_update(registry, service, running_release_facts(__version__), signature_check(config), tls)
    return service


async def assemble(config: Config, data_dir: Path, notifier: Notifier | None = None,
                   config_path: Path | None = None) -> Assembly:
    """`config_path`: the file `config` was read from (remote `set_config` rewrites it); None: not changeable."""
    store = open_store(config, data_dir)
    runner = await WorkflowRunner.open(store, config.device.role)
    mcu_settings = mcu_config(config)
    mcu = McuBridge(mcu_settings) if mcu_settings else None
    scanner_settings = scanner_config(config)
    scanner = ScannerReader(scanner_settings) if scanner_settings else None
    take_photo, close_camera = _photo_taker(config, data_dir)
    retention = _photo_retention(config, store, data_dir, take_photo is not None)
    gps_section = config.gps
    agent = Agent(
        store=store,
        runner=runner,
        role=config.device.role,
        indicator=Indicator(mcu),
        cloud=_cloud(config, store),
        tracker_factory=lambda stops: positioning.tracker(gps_section, stops),
        take_photo=take_photo,
        photo_retention=retention,
        notifier=notifier or Notifier(),
    )
    registry = builtin_registry()
    if config.device.role is Role.VEHICLE:  # the cloud may take a van's block back
        register_withdraw(registry, agent.submit, lambda: getattr(agent.runner.workflow.state, "withdrawn", None))
    agent.start("update", _updates(config, data_dir, agent, registry).run())
    agent.commands = CommandExecutor(registry, CommandContext(store, data_dir, config_path, agent.cloud),
                                     agent.request_restart)
    gps = positioning.fix_source(gps_section) if gps_section.enabled else None
    closers = ([close_camera] if close_camera else []) + [store.close]
    console = None
    if config.console.enabled:
        from device.console.server import ConsoleServer  # aiohttp is imported only when the console runs

        console = ConsoleServer(agent, config.console, data_dir)
    assembly = Assembly(agent, scanner, mcu, gps, console, closers)
    if config.driver.simulated:
        from device.driver_sim import DriverSettings, SimulatedDriver

        driver = SimulatedDriver(agent, DriverSettings(seed=config.driver.seed))
        agent.start("driver", driver.run())
    return assembly
