"""The command framework: a registry of handlers by name, and the executor that runs one command at a time and
commits its `command.result` event (see the package docstring for the interface)."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from device.cloud_port import CloudCommand, CloudPort
from device.commands.pending import MarkerError, PendingMarker
from device.contract.domain import Event, EventType
from device.store import EventStore, StoreError

log = logging.getLogger(__name__)

# The agent exits with this after a requested restart. The unit has Restart=always (only 2, a config error, is not
# restarted), so 0 restarts it without marking the unit failed; the tests' supervisor does the same.
RESTART_EXIT_CODE = 0
ONLINE_POLL_S = 0.25  # how often wait_online looks at the link
# The result event's id is derived from the command's id (UUIDv5 in this namespace): the store's unique event ids
# then refuse a second result for one command, whatever path it came by.
RESULT_ID_NAMESPACE = uuid.UUID("5d7c1f0e-6a43-4f0b-9d59-3c0b8f1e2a17")


def result_event_id(command_id: str) -> str:
    return str(uuid.uuid5(RESULT_ID_NAMESPACE, command_id))


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"  # accepted, tried, did not work
    REJECTED = "rejected"  # not tried: unknown command, bad arguments, busy


@dataclass(frozen=True)
class CommandOutcome:
    status: Status
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)
    restart: bool = False  # once the result is committed: stop cleanly, exit RESTART_EXIT_CODE


@dataclass(frozen=True)
class Deferred:
    """The command finishes after a restart; its `Resume` gives the result then.

    `apply`: the change itself (a rename), run by the executor once the pending marker is on disk, so no change is
    ever made without a marker to judge it after the restart. A stop between the two leaves a marker for a change
    not made: the `Resume` must tell (set_config compares the file's sha256 with the one in `state`)."""

    detail: str
    state: Mapping[str, Any]
    timeout_s: float
    apply: Callable[[], None] | None = None


@dataclass(frozen=True)
class CommandContext:
    """What a handler may use."""

    store: EventStore
    data_dir: Path
    config_path: Path | None  # the config file this agent was started with (None: defaults and environment)
    cloud: CloudPort | None

    async def wait_online(self, timeout_s: float) -> bool:
        """True once the cloud link is connected, False if it is not within `timeout_s` (or there is none)."""
        if self.cloud is None:
            return False
        deadline = time.monotonic() + timeout_s
        while not self.cloud.online:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(ONLINE_POLL_S)
        return True


Handler = Callable[[CloudCommand, CommandContext], Awaitable["CommandOutcome | Deferred"]]
Resume = Callable[[PendingMarker, CommandContext], Awaitable[CommandOutcome]]


class CommandRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[Handler, Resume | None]] = {}

    def register(self, name: str, handler: Handler, *, resume: Resume | None = None) -> None:
        if name in self._entries:
            raise ValueError(f"command {name!r} registered twice")
        self._entries[name] = (handler, resume)

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def handler(self, name: str) -> Handler | None:
        entry = self._entries.get(name)
        return entry[0] if entry else None

    def resume(self, name: str) -> Resume | None:
        entry = self._entries.get(name)
        return entry[1] if entry else None


@dataclass
class CommandCounters:
    received: int = 0
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    replays: int = 0  # a command whose result was already committed: not run again
    deferred: int = 0  # finished after a restart
    unrecorded: int = 0  # a result the store refused (full disk): logged


class CommandExecutor:
    """Runs commands one at a time; `restart(reason)` is the agent's clean stop with RESTART_EXIT_CODE."""

    def __init__(self, registry: CommandRegistry, context: CommandContext, restart: Callable[[str], None]) -> None:
        self.registry = registry
        self.context = context
        self._restart = restart
        self._lock = asyncio.Lock()
        self.counters = CommandCounters()

    async def execute(self, command: CloudCommand) -> CommandOutcome | None:
        """Run a command and commit its result; None when nothing was committed now (a replay, or a command that
        finishes after a restart)."""
        self.counters.received += 1
        async with self._lock:
            if await self._answered(command.id):
                self.counters.replays += 1
                log.warning("command %s (%s) already answered: replay ignored", command.name, command.id)
                return None
            outcome = await self._run(command)
            if isinstance(outcome, Deferred):
                marker = PendingMarker(command.id, command.name, dict(command.args), dict(outcome.state),
                                       outcome.timeout_s)
                try:
                    await asyncio.to_thread(self._apply, marker, outcome.apply)
                except OSError as exc:
                    outcome = CommandOutcome(Status.FAILED, f"not applied: {exc}")
                else:
                    self.counters.deferred += 1
                    log.warning("command %s (%s): %s", command.name, command.id, outcome.detail)
                    self._restart(f"command {command.name} {command.id}")
                    return None
            await self._commit(command.id, command.name, outcome)
            if outcome.restart:
                self._restart(f"command {command.name} {command.id}")
            return outcome

    def _apply(self, marker: PendingMarker, apply: Callable[[], None] | None) -> None:
        """Marker first, then the change; a change that fails takes its marker away again."""
        marker.save(self.context.data_dir)
        if apply is None:
            return
        try:
            apply()
        except OSError:
            PendingMarker.clear(self.context.data_dir)
            raise

    async def _run(self, command: CloudCommand) -> CommandOutcome | Deferred:
        handler = self.registry.handler(command.name)
        if handler is None:
            return CommandOutcome(Status.REJECTED, "unknown command", {"known": self.registry.names})
        try:
            marker = await asyncio.to_thread(PendingMarker.load, self.context.data_dir)
        except MarkerError:
            marker = None  # resume_pending reports and removes it
        if marker is not None:
            return CommandOutcome(Status.REJECTED, f"busy: command {marker.name} {marker.id} is not finished")
        log.info("command %s (%s) running", command.name, command.id)
        try:
            return await handler(command, self.context)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is the command's result, not the agent's end
            log.exception("command %s (%s) failed", command.name, command.id)
            return CommandOutcome(Status.FAILED, f"{type(exc).__name__}: {exc}")

    async def resume_pending(self) -> CommandOutcome | None:
        """At start: finish a command that restarted the agent (its Resume decides: kept, rolled back)."""
        async with self._lock:
            try:
                marker = await asyncio.to_thread(PendingMarker.load, self.context.data_dir)
            except MarkerError as exc:
                log.error("pending command marker unreadable, removed: %s", exc)
                await asyncio.to_thread(PendingMarker.clear, self.context.data_dir)
                return None
            if marker is None:
                return None
            if await self._answered(marker.id):  # committed, then stopped before the marker went
                await asyncio.to_thread(PendingMarker.clear, self.context.data_dir)
                return None
            resume = self.registry.resume(marker.name)
            if resume is None:
                outcome = CommandOutcome(Status.FAILED, f"no way to finish {marker.name} on this release")
            else:
                try:
                    outcome = await resume(marker, self.context)
                except Exception as exc:  # noqa: BLE001 - as for handlers
                    log.exception("finishing command %s (%s) failed", marker.name, marker.id)
                    outcome = CommandOutcome(Status.FAILED, f"{type(exc).__name__}: {exc}")
            await self._commit(marker.id, marker.name, outcome)
            await asyncio.to_thread(PendingMarker.clear, self.context.data_dir)
            if outcome.restart:
                self._restart(f"command {marker.name} {marker.id}")
            return outcome

    async def _answered(self, command_id: str) -> bool:
        return bool(await asyncio.to_thread(self.context.store.has_event, result_event_id(command_id)))

    async def _commit(self, command_id: str, name: str, outcome: CommandOutcome) -> None:
        data = {"id": command_id, "name": name, "status": outcome.status.value, "detail": outcome.detail,
                "data": dict(outcome.data)}
        try:
            await self.context.store.append_async([Event(EventType.COMMAND_RESULT, data,
                                                         id=result_event_id(command_id))])
        except StoreError as exc:
            self.counters.unrecorded += 1
            log.error("command %s (%s) result %s not recorded: %s", name, command_id, outcome.status.value, exc)
            return
        setattr(self.counters, outcome.status.value, getattr(self.counters, outcome.status.value) + 1)
        log.info("command %s (%s): %s, %s", name, command_id, outcome.status.value, outcome.detail)
        if self.context.cloud is not None:
            self.context.cloud.kick()
