"""The agent: one asyncio loop that ties sources, the workflow, the store, feedback and sync together.

Every input goes through `submit()`: the workflow runner commits its events to the store first, then the
outcome's feedback goes to the LED/buzzer, its notices to the screen (and the simulated driver), its
requests to the cloud, and the sync is kicked. Hardware parts are optional: a unit without an MCU still
runs (feedback becomes a log line), a unit without a camera cannot take proof photos.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from device.cloud_port import CloudCommand, CloudPort
from device.commands import RESTART_EXIT_CODE, CommandExecutor
from device.contract.domain import Event, EventType, Role, Stop, Verdict, iso_utc
from device.feedback import show
from device.positioning.tracker import Arrived, Departed, NextStop, PositionEvent, PositionTracker
from device.positioning.wire import position
from device.sdnotify import Notifier
from device.store import DiskCondition, EventStore, ReceivedCommand, StoreError, StoreFull
from device.workflow import (
    ArrivedAt,
    ClaimResult,
    DepartedFrom,
    Notice,
    Outcome,
    PackageScanned,
    PhotoChecked,
    SendClaim,
    StageScan,
)
from device.workflow.outputs import Feedback
from device.workflow.runner import WorkflowRunner
from firmware_bridge.fix import Fix
from firmware_bridge.indicator import Indicator
from firmware_bridge.mcu.commands import Input

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 60.0  # a health event (counters, outbox depth) this often
STORAGE_CHECK_S = 1.0  # how soon a full disk reaches the status (a flag read; a statvfs while full)
STORAGE_PROBE_MIN_FREE = 256 * 1024  # while full, try a commit again only once this much space is back
PHOTO_SWEEP_S = 60.0  # photo retention looks at the photo disk this often
STOP_DRAIN_S = 3.0  # on a clean stop, wait this long for the cloud to ack what is pending


@dataclass(frozen=True)
class ProofPhoto:
    """A captured, checked proof photo (what the camera + vision pipeline hands back)."""

    photo_id: str
    path: str
    sha256: str
    verdict: Verdict
    read: str | None
    confidence: float
    box: tuple[int, int, int, int] | None
    ms: float
    upload_path: str | None = None  # the bounded copy that goes to the cloud (device/upload_copy.py)
    upload_sha256: str | None = None
    bytes: int = 0  # of the original
    upload_bytes: int = 0


PhotoTaker = Callable[[Stop, Fix | None], Awaitable[ProofPhoto]]


def workflow_input(event: PositionEvent) -> ArrivedAt | DepartedFrom | None:
    """The geofence's Arrived/Departed as workflow inputs (the workflow then records `stop.arrived` /
    `stop.departed`); NextStop is for the driver's screen only."""
    if isinstance(event, Arrived):
        return ArrivedAt(event.stop_id)
    if isinstance(event, Departed):
        return DepartedFrom(event.stop_id)
    return None


@dataclass
class AgentCounters:
    inputs: int = 0
    rejected: int = 0
    track_points: int = 0
    photos: int = 0
    photos_queued: int = 0  # committed proof photos handed to the upload queue
    photos_deleted: int = 0  # files removed by retention (acknowledged by the cloud first)
    claims_sent: int = 0
    loop_errors: int = 0


@dataclass
class Agent:
    """Build with the collaborators that exist on this unit, then `await run(stop_event)`."""

    store: EventStore
    runner: WorkflowRunner
    role: Role
    indicator: Indicator = field(default_factory=Indicator)  # without an MCU: log lines
    cloud: CloudPort | None = None  # no cloud link configured: claims are refused as offline
    tracker_factory: Callable[[list[Stop]], PositionTracker] | None = None
    take_photo: PhotoTaker | None = None
    notifier: Notifier = field(default_factory=lambda: Notifier({}))
    track_interval_s: float = 5.0  # one stored breadcrumb per this many seconds of fixes
    photo_retention: Any = None  # device.photo_retention.PhotoRetention on a unit with a camera
    commands: CommandExecutor | None = None  # remote commands (device/commands); None: logged and ignored
    counters: AgentCounters = field(default_factory=AgentCounters)

    def __post_init__(self) -> None:
        self.last_fix: Fix | None = None
        self.next_stop: NextStop | None = None
        self._tracker: PositionTracker | None = None
        self._route_key: tuple[str, int] | None = None
        self._last_track_time: datetime | None = None
        self._subscribers: list[asyncio.Queue[Notice]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()  # set once the agent told systemd READY (the update gate waits for it)
        self._stop: asyncio.Event | None = None
        self.exit_code = 0  # what `flexedge run` exits with once `run()` returned
        self.restart_reason: str | None = None
        self._sync_route_tracker()

    # --- inputs ------------------------------------------------------------------------------------

    async def submit(self, item: object, fix: Fix | None = None) -> Outcome:
        """Apply one input (from a source, the console, the CLI or the cloud) and act on its outcome."""
        outcome = await self.runner.apply(item, position(fix or self.last_fix))
        self.counters.inputs += 1
        if not outcome.accepted:
            self.counters.rejected += 1
            log.info("input %s rejected: %s", type(item).__name__, outcome.rejection)
        self._dispatch(outcome)
        return outcome

    def _dispatch(self, outcome: Outcome) -> None:
        # The events are committed (the runner awaited the store): now the world may learn of them.
        for signal in outcome.feedback:
            self._signal(signal)
        for notice in outcome.notices:
            log.info("notice %s: %s", notice.kind.value, notice.text)
            for queue in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(notice)
        for request in outcome.requests:
            if isinstance(request, SendClaim):
                self._spawn(self._claim(request.block_id, request.request_id), f"claim:{request.block_id}")
        if outcome.events and self.cloud is not None:
            self.cloud.kick()
        self._sync_route_tracker()

    def _signal(self, signal: Feedback) -> None:
        try:
            show(self.indicator, signal)
        except Exception as exc:  # feedback is best effort: a dead MCU must not stop deliveries
            log.warning("feedback %s not shown: %r", signal.value, exc)

    def subscribe(self, size: int = 1000) -> asyncio.Queue[Notice]:
        """Notices for a screen or the simulated driver."""
        queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=size)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Notice]) -> None:
        """A screen went away: stop filling its queue."""
        self._subscribers = [q for q in self._subscribers if q is not queue]

    # --- sources -----------------------------------------------------------------------------------

    async def scan(self, code: str) -> Outcome:
        """A barcode from the scanner: loading check in the van, scan-to-stage at the dock."""
        item = StageScan(code) if self.role is Role.DOCK else PackageScanned(code)
        return await self.submit(item)

    async def scanner_loop(self, reader: Any) -> None:
        """Scans from firmware_bridge.scanner's reader (one `Scan` at a time from `await reader.get()`)."""
        while True:
            scan = await reader.get()
            await self.scan(scan.sscc or scan.data)  # GS1 labels: the SSCC is the package id

    async def mcu_input_loop(self, bridge: Any) -> None:
        """The MCU's inputs: the driver's button at a stop takes the proof photo."""
        while True:
            event = await bridge.inputs.get()
            log.info("MCU input %s %s", event.input.name, "on" if event.active else "off")
            if event.input is Input.BUTTON and event.active and self.runner.workflow.phase == "at_stop":
                await self.photo()

    async def gps_loop(self, source: Any) -> None:
        """Fixes from gpsd or a serial receiver: stamp, breadcrumb, geofence."""
        async for fix in source:
            await self.on_fix(fix)

    async def on_fix(self, fix: Fix) -> None:
        if fix.has_position:
            self.last_fix = fix
            await self._breadcrumb(fix)
        if self._tracker is None:
            return
        for position_event in self._tracker.feed(fix):
            if isinstance(position_event, NextStop):
                self.next_stop = position_event
                continue
            item = workflow_input(position_event)
            if item is not None:
                await self.submit(item, fix)

    async def _breadcrumb(self, fix: Fix) -> None:
        moment = fix.time or datetime.now(timezone.utc)
        # A fix time that went backwards (receiver reset, replayed log) starts a new interval, never a silent track.
        if self._last_track_time is not None and \
                0 <= (moment - self._last_track_time).total_seconds() < self.track_interval_s:
            return
        self._last_track_time = moment
        block = getattr(self.runner.workflow.state, "block_id", None)
        try:
            await self.store.append_async([Event(EventType.GPS_FIX, fix=position(fix), block=block)])
            self.counters.track_points += 1
        except StoreError as exc:
            log.error("GPS breadcrumb not stored: %s", exc)

    def _sync_route_tracker(self) -> None:
        """Keep the geofence on the current route's unfinished stops (a revision keeps progress)."""
        if self.tracker_factory is None:
            return
        state = self.runner.workflow.state
        route = getattr(state, "route", None)
        if route is None:
            self._tracker, self._route_key = None, None
            return
        key = (route.block_id, route.version)
        if key == self._route_key:
            return
        done = {stop_id for stop_id, record in getattr(state, "stops", {}).items() if record.done}
        stops = [s for s in route.stops if s.id not in done]
        if self._tracker is None or self._route_key is None or self._route_key[0] != route.block_id:
            self._tracker = self.tracker_factory(stops)
        else:
            self._tracker.revise(stops)
        self._route_key = key

    async def photo(self, stop_id: str | None = None) -> Outcome | None:
        """Take the proof photo at the current stop and let the workflow judge it."""
        if self.take_photo is None:
            log.warning("no camera attached: cannot take a proof photo")
            return None
        state = self.runner.workflow.state
        stop_id = stop_id or getattr(state, "current_stop", None)
        route = getattr(state, "route", None)
        stop = next((s for s in route.stops if s.id == stop_id), None) if route else None
        if stop is None:
            log.warning("photo requested but not at a known stop (%s)", stop_id)
            return None
        photo = await self.take_photo(stop, self.last_fix)
        self.counters.photos += 1
        await asyncio.to_thread(self.store.state.record_photo, photo.photo_id, photo.path, photo.sha256,
                                stop_id=stop.id, taken_at=datetime.now(timezone.utc).isoformat(),
                                upload_path=photo.upload_path, upload_sha256=photo.upload_sha256,
                                size=photo.bytes, upload_size=photo.upload_bytes)
        outcome = await self.submit(PhotoChecked(stop.id, (), photo.verdict, photo.read, photo.confidence,
                                                 photo.photo_id, photo.sha256, photo.box, photo.upload_sha256))
        await self._queue_upload(photo.photo_id, outcome)
        return outcome

    async def _queue_upload(self, photo_id: str, outcome: Outcome) -> None:
        """The photo's event is committed: the photo joins the upload queue (it goes up after the events)."""
        recorded = next((e for e in outcome.events if e.type is EventType.PHOTO_CHECKED
                         and e.data.get("photo_id") == photo_id), None)
        if recorded is None:
            return  # not committed (rejected input): not proof of anything, not uploaded
        try:
            await asyncio.to_thread(self.store.state.queue_photo, photo_id, recorded.id, recorded.block)
        except StoreError as exc:  # the next start queues it from the committed event
            log.error("photo %s not queued for upload yet: %s", photo_id, exc)
            return
        self.counters.photos_queued += 1
        if self.cloud is not None:
            self.cloud.kick()

    # --- cloud -------------------------------------------------------------------------------------

    async def cloud_loop(self, cloud: CloudPort) -> None:
        """Offers and routes from the cloud, already verified by the link, into the workflow."""
        while True:
            item = await cloud.receive()
            if isinstance(item, CloudCommand):
                if self.commands is None:
                    log.info("cloud command %s (%s) received; no handler on this unit", item.name, item.id)
                else:
                    self._spawn(self._command(self.commands, item), f"command:{item.name}")
            else:
                await self.submit(item)

    async def _command(self, commands: CommandExecutor, command: CloudCommand) -> None:
        await commands.execute(command)

    async def _resume_command(self, commands: CommandExecutor, interrupted: list[ReceivedCommand]) -> None:
        """A command that restarted the agent (a new config) is finished now: kept or rolled back; then the commands
        an earlier run was cut off in (seen, never answered) are answered."""
        await commands.resume_pending()
        await commands.answer_interrupted(interrupted)

    def request_restart(self, reason: str) -> None:
        """Stop cleanly (the outbox drains, the link says goodbye) and exit with the code the unit restarts on."""
        log.warning("restart requested: %s", reason)
        self.exit_code = RESTART_EXIT_CODE
        self.restart_reason = reason
        if self._stop is not None:
            self._stop.set()

    async def _claim(self, block_id: str, request_id: str) -> None:
        """Send the claim with the request id the workflow committed in block.claim_requested, so the device's
        record and the cloud's correlation name the same request."""
        self.counters.claims_sent += 1
        if self.cloud is None:
            await self.submit(ClaimResult(block_id, False, "offline: no cloud link configured"))
            return
        await self.submit(await self.cloud.claim(block_id, request_id))

    # --- lifecycle ---------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks = [t for t in self._tasks if t is not task]
        if not task.cancelled() and task.exception() is not None:
            self.counters.loop_errors += 1
            log.error("agent task %s failed: %r", task.get_name(), task.exception(),
                      exc_info=task.exception())

    def start(self, name: str, coro: Awaitable[None]) -> None:
        """Run a long-lived loop (a source) under the agent; its failure is logged and counted."""
        self._spawn(coro, name)

    def healthy(self) -> bool:
        """Petted by the watchdog task on this loop, so a blocked loop is caught by systemd already; this
        adds: no long-lived loop has died, the store's writer thread is alive, and the cloud link's task runs
        (while it is dead or hung and waiting for its restart, the watchdog is not petted)."""
        return (self.counters.loop_errors == 0 and self.store.alive
                and (self.cloud is None or self.cloud.healthy))

    async def health_loop(self, interval_s: float = HEALTH_INTERVAL_S) -> None:
        while True:
            stats = await asyncio.to_thread(self.store.stats)
            data = {"outbox_depth": stats.depth, "last_seq": stats.last_seq, **self._counters()}
            try:
                await self.store.append_async([Event(EventType.HEALTH, data)])
            except StoreError as exc:
                log.error("health event not stored: %s", exc)
            self.notifier.status(f"outbox {stats.depth}, phase {self.runner.workflow.phase}")
            await asyncio.sleep(interval_s)

    async def storage_loop(self, interval_s: float = STORAGE_CHECK_S) -> None:
        """Report a full disk at once (log, systemd status, the cloud's retained status), probe for space while
        full, and once an event lands again, record the episode (how long, how many events were refused)."""
        full_since: datetime | None = None
        while True:
            await asyncio.sleep(interval_s)
            if self.store.disk_condition is DiskCondition.FULL and full_since is None:
                full_since = datetime.now(timezone.utc)
                log.error("storage full: events are being refused until space returns")
                self.notifier.status("STORAGE FULL: events refused")
                self._report_status()
            if full_since is None or await asyncio.to_thread(self.store.free_bytes) < STORAGE_PROBE_MIN_FREE:
                continue  # still full: no probe (each failed commit is a log line, and the log may share the disk)
            seconds = (datetime.now(timezone.utc) - full_since).total_seconds()
            episode = Event(EventType.STORE_FULL, {"since": iso_utc(full_since), "seconds": round(seconds, 1),
                                                   "refused_events": self.store.refused_while_full})
            try:  # the probe: once it lands, the disk has room again
                await self.store.append_async([episode])
            except StoreFull:
                continue
            except StoreError as exc:
                log.error("storage episode not recorded: %s", exc)
                continue
            log.warning("storage has room again after %.1f s; %d events were refused", seconds,
                        episode.data["refused_events"])
            self.notifier.status(f"storage ok, phase {self.runner.workflow.phase}")
            full_since = None
            self._report_status()
            if self.cloud is not None:
                self.cloud.kick()

    async def photo_retention_loop(self, interval_s: float = PHOTO_SWEEP_S) -> None:
        """Delete proof photos the cloud holds once they are old enough, or at once when the disk runs low."""
        while True:
            try:
                report = await asyncio.to_thread(self.photo_retention.sweep)
                self.counters.photos_deleted += report.deleted
            except (OSError, StoreError) as exc:
                log.error("photo retention sweep failed: %s", exc)
            await asyncio.sleep(interval_s)

    def _counters(self) -> dict[str, Any]:
        """The running totals of this run: the agent's, the cloud link's (rejects by reason), the commands'."""
        data: dict[str, Any] = dict(vars(self.counters))
        if self.cloud is not None:
            data["sync"] = self.cloud.counters()
        if self.commands is not None:
            data["commands"] = dict(vars(self.commands.counters))
        return data

    def _report_status(self) -> None:
        if self.cloud is not None:
            self.cloud.report_status()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await self.store.append_async([Event(EventType.AGENT_STARTED, {"role": self.role.value})])
        queued = await asyncio.to_thread(self.store.state.queue_committed_photos)
        if queued:
            log.warning("%d committed photos were not queued for upload (stopped in between): queued now", queued)
        # Before the link starts: what it receives from now on is this run's, not interrupted.
        interrupted = await self.commands.interrupted() if self.commands is not None else []
        if self.cloud is not None:
            await self.cloud.start()
            self.start("cloud", self.cloud_loop(self.cloud))
        if self.commands is not None:
            self.start("commands-resume", self._resume_command(self.commands, interrupted))
        self.start("health", self.health_loop())
        self.start("storage", self.storage_loop())
        if self.photo_retention is not None:
            self.start("photo-retention", self.photo_retention_loop())
        self.notifier.ready(f"phase {self.runner.workflow.phase}")
        self.ready.set()
        interval = self.notifier.watchdog_interval_s()
        try:
            if interval:
                from device.sdnotify import pet_watchdog

                self.start("watchdog", pet_watchdog(self.notifier, self.healthy, interval))
            await stop.wait()
        finally:
            self.notifier.stopping()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(StoreError):
                await self.store.append_async([Event(EventType.AGENT_STOPPED, self._counters())])
            if self.cloud is not None:
                # A clean stop gives the outbox a moment to drain; what is left goes at the next start.
                with contextlib.suppress(Exception):
                    self.cloud.kick()
                    await self.cloud.wait_drained(STOP_DRAIN_S)
                await self.cloud.stop()
