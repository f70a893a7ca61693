"""The fault scenarios. Each builds a fresh rig, runs a steady load through a fault, lets the device recover,
and reports from the cloud's rows: produced (committed on the device), stored (in the cloud), lost,
duplicates (stored twice). Passed: lost 0, duplicates 0, the cloud's hash chain intact, the device store intact,
no clock flag unless the scenario stepped the clock, and the scenario's own checks (`Result.failures`).
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from cloud_sync.cloud.clock import FUTURE_TOLERANCE_S, ClockFlagKind
from cloud_sync.messages import PHOTO_CHUNK_BYTES
from tests.helpers.chaos.checks import bench_sync_rate, drain_order
from tests.helpers.chaos.hostile import HOSTILE, HostileVan
from tests.helpers.chaos.producer import clock_offset, clock_steps
from tests.helpers.chaos.proxy import Mode, SlowLink
from tests.helpers.chaos.rig import DEVICE, Rig, Tally
from tests.helpers.fleet import FleetPki
from tests.helpers.tmpfs import small_tmpfs

DRAIN_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Scale:
    """How hard each scenario pushes: the short form for `make test`, the full form for `make chaos`."""

    events: int
    rate: float  # events per second from the producer
    rounds: int  # kills, restarts or cuts
    # proof photos of the photo scenario. They go up one chunk at a time over its slow link (~1.4 s a chunk):
    # the short form's 10 (about 21 chunks) still outlast its 3 faults several times over, and each fault still
    # has to strike a photo part way up; the full form keeps 20.
    photos: int


SHORT = Scale(events=1500, rate=300.0, rounds=3, photos=10)
FULL = Scale(events=12000, rate=400.0, rounds=20, photos=20)


@dataclass(frozen=True)
class Figure:
    """A speed a scenario measured, with the reference it is compared with. A bench figure, not a criterion of
    the scenario (`Result.passed` never looks at it; a test must not assert a timing): `make chaos` prints it
    and fails below the reference, the short form in `make test` only prints it."""

    name: str
    value: float  # as a ratio of the reference's measure
    reference: float  # the least ratio `make chaos` accepts
    text: str

    @property
    def held(self) -> bool:
        return self.value >= self.reference

    def line(self) -> str:
        return (f"  {self.name}: {self.value:.2f} ({self.text}); reference >= {self.reference}: "
                f"{'held' if self.held else 'BELOW'}")


@dataclass(frozen=True)
class Result:
    scenario: str
    tally: Tally
    recovered_s: float
    extra: str = ""
    store_ok: bool = True
    failures: tuple[str, ...] = ()  # a scenario's own checks that did not hold, each said in words
    figures: tuple[Figure, ...] = ()  # speeds measured on the way (bench figures, not part of `passed`)

    @property
    def passed(self) -> bool:
        t = self.tally
        return (t.lost == 0 and t.duplicates == 0 and t.chain_ok and self.store_ok and t.produced > 0
                and not self.failures)

    def line(self) -> str:
        t = self.tally
        text = (f"{self.scenario}: {'passed' if self.passed else 'failed'}, events produced {t.produced}, "
                f"stored {t.stored}, lost {t.lost}, duplicates {t.duplicates}, recovered in {self.recovered_s:.1f} s")
        details = [f"resends deduplicated by the cloud {t.cloud_duplicates_discarded}"]
        if not t.chain_ok:
            details.append("CLOUD CHAIN BROKEN")
        if not self.store_ok:
            details.append("DEVICE STORE DAMAGED")
        details.extend(f"FAILED: {failure}" for failure in self.failures)
        if self.extra:
            details.append(self.extra)
        return f"{text} ({'; '.join(details)})"


def _finish(rig: Rig, name: str, fault_end: float, extra: str = "") -> Result:
    """Common ending: the producer is done, the sync runs; wait for the cloud to hold everything."""
    rig.wait_producer(DRAIN_TIMEOUT_S)
    if rig.sync_proc is None or rig.sync_proc.poll() is not None:
        rig.start_sync()
    # Recovery counts from the end of the fault or of the load, whichever is later, to the cloud holding all.
    started = max(fault_end, time.monotonic())
    rig.wait_cloud_has_all(DRAIN_TIMEOUT_S)
    recovered = time.monotonic() - started
    time.sleep(0.5)  # resends still in flight would show up as duplicates now, if dedup failed
    rig.stop_sync()
    tally = rig.tally()
    # Only clock_jump steps the device's clock (and replaces this with its own check): elsewhere a flag is false.
    false_flags = (f"{tally.clock_flags} clock flags without a clock step",) if tally.clock_flags else ()
    return Result(name, tally, recovered, extra, rig.store_intact(), false_flags)


def _running_time(scale: Scale) -> float:
    return scale.events / scale.rate


def sync_sigkill(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """`flexedge sync` SIGKILLed at random moments under steady load, restarted each time."""
    rig.start_producer(scale.events, scale.rate)
    rig.start_sync()
    slot = _running_time(scale) / (scale.rounds + 1)
    for _ in range(scale.rounds):
        time.sleep(rng.uniform(0.3, max(0.4, slot)))
        rig.kill_sync()
        rig.start_sync()
    return _finish(rig, "sync_sigkill", time.monotonic(), f"{scale.rounds} SIGKILLs")


def broker_restart(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """The broker SIGKILLed and restarted (down 0.2-1.5 s each time) under steady load."""
    rig.start_producer(scale.events, scale.rate)
    rig.start_sync()
    slot = _running_time(scale) / (scale.rounds + 1)
    for _ in range(scale.rounds):
        time.sleep(rng.uniform(0.2, max(0.3, slot / 2)))
        rig.broker.kill()
        time.sleep(rng.uniform(0.2, 1.5))
        rig.broker.start()
    return _finish(rig, "broker_restart", time.monotonic(), f"{scale.rounds} broker kills")


def acks_lost(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """The cloud stores every batch but drops every other ack: the device resends, the cloud dedups."""
    rig.start_producer(scale.events, scale.rate)
    rig.start_sync()
    result = _finish(rig, "acks_lost", time.monotonic())
    dropped = rig.cloud.peer.counters["acks_dropped"] if rig.cloud and rig.cloud.peer else 0
    return Result(result.scenario, result.tally, result.recovered_s, f"acks dropped {dropped}", result.store_ok)


SLOW_PERIOD_S = 2.0


def network_cut(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """Device <-> broker through a proxy: blackholed (half-open, only keepalive can tell) and reset, in turns,
    each cut preceded by a slow period (latency and a bandwidth cap): the link degrades, then fails."""
    assert rig.proxy is not None
    rig.start_producer(scale.events, scale.rate)
    rig.start_sync()
    cuts = max(2, scale.rounds // 4)
    for n in range(cuts):
        time.sleep(rng.uniform(0.5, 1.5))
        rig.proxy.set_mode(Mode.SLOW)
        time.sleep(SLOW_PERIOD_S)
        mode = Mode.BLACKHOLE if n % 2 == 0 else Mode.RESET
        rig.proxy.set_mode(mode)
        # A blackhole lasts past the keepalive: the client must notice a silent, open connection.
        time.sleep(rig.keepalive_s * 2.5 if mode is Mode.BLACKHOLE else rng.uniform(0.5, 2.0))
        rig.proxy.set_mode(Mode.PASS)
    # Drop the blackholed connections still open: half-open ones the client left behind are dead anyway.
    result = _finish(rig, "network_cut", time.monotonic())
    proxy = rig.proxy
    slowed_nothing = () if proxy.delayed_chunks else ("the slow periods delayed no traffic",)
    return replace(result, failures=result.failures + slowed_nothing,
                   extra=f"{cuts} cuts (blackhole/reset), {cuts} slow periods of {SLOW_PERIOD_S:.0f} s "
                         f"({proxy.slow.describe()}: {proxy.delayed_chunks} chunks, "
                         f"{proxy.delayed_bytes / 1024:.0f} KiB delayed), {proxy.connections} connections through "
                         f"the proxy")


def disk_full(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """The store on a small tmpfs fills up while events arrive; space returns (remount) after a while."""
    assert rig.data_dir is not None
    rig.start_producer(scale.events, scale.rate * 2, "--pad", "600")
    rig.start_sync()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while rig.producer is not None and rig.producer.poll() is None and time.monotonic() < deadline:
        if _df_free(rig.data_dir) < 64 * 1024:
            break
        time.sleep(0.1)
    time.sleep(1.5)  # full for a while: the producer is refused, the sync keeps running
    subprocess.run(["mount", "-o", "remount,size=64m", str(rig.data_dir)], check=True)
    fault_end = time.monotonic()
    result = _finish(rig, "disk_full", fault_end)
    return Result(result.scenario, result.tally, result.recovered_s,
                  f"appends refused while full {rig.producer_refusals}, track points thinned by the low-disk "
                  f"policy {rig.producer_thinned}", result.store_ok)


def clock_jump(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """The wall clock jumps back an hour, then forward a day, mid-stream: seq order and the chain hold, and the
    cloud flags exactly those two steps (at their seqs, with their size) and where ts runs ahead of it."""
    rig.start_producer(scale.events, scale.rate, "--clock-jumps")
    rig.start_sync()
    result = _finish(rig, "clock_jump", time.monotonic())
    # seq = index + 1: the producer is the only writer of a fresh store
    steps = [(index + 1, step) for index, step in clock_steps(scale.events)]
    ahead_from = [seq for seq, _ in steps
                  if clock_offset(seq - 1, scale.events, True).total_seconds() > FUTURE_TOLERANCE_S]
    flags = rig.clock_flags()
    jumps = [(f["seq"], f["jump_s"]) for f in flags if f["kind"] == ClockFlagKind.JUMP]
    ahead = [f["seq"] for f in flags if f["kind"] == ClockFlagKind.FUTURE]
    failures = []
    if len(rig.produced) != scale.events:
        failures.append(f"{len(rig.produced)} events produced, the steps' seqs assume {scale.events}")
    if [seq for seq, _ in jumps] != [seq for seq, _ in steps] or \
            any(abs(got - want) >= 1.0 for (_, got), (_, want) in zip(jumps, steps)):
        failures.append("the clock jumps flagged are not the steps made")
    if ahead != ahead_from:
        failures.append("the future timestamps flagged are not where the clock ran ahead")

    def listed(pairs: list[tuple[int, float]]) -> str:
        return ", ".join(f"{jump:+.0f} s at seq {seq}" for seq, jump in pairs) or "none"
    # This scenario's own flag check replaces the common "no clock flag" one.
    return replace(result, failures=tuple(failures),
                   extra=f"ts back 1 h then forward 1 day; seq order checked; clock jumps flagged: {listed(jumps)} "
                         f"(expected {listed(steps)}); ts ahead of the cloud flagged at seq "
                         f"{', '.join(map(str, ahead)) or 'none'} (expected {', '.join(map(str, ahead_from))})")


BROKER_DOWN_S = 300.0  # the outage the backlog stands for
WARMUP_EVENTS = 50
DRAIN_RATE_REFERENCE = 0.25  # of the sync bench's rate, for `make chaos`: this rig shares 2 cores with the load
# From the broker's return to the last backlog event stored. A hang, not a speed: the short backlog drains in well
# under a second at the bench's rate, so only a drain that stalled takes this long.
DRAIN_HANG_S = 60.0


def broker_down(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """The broker down for 5 minutes, then back. The time is simulated by the backlog it leaves: the producer
    writes `scale.events` (5 minutes of a van at scale.events / 300 events/s) at its own fast rate while the
    broker is down. The cloud's side comes back first (its workers sit next to the broker; the device's path
    through the proxy opens once the cloud has subscribed again, so no batch goes to a broker with nobody
    listening); then the backlog must drain, all of it, oldest first (per lane), and without a stall
    (`DRAIN_HANG_S`). The drain rate against the sync bench's, with the device's own sync settings (batches of
    1000, as in the bench), is a figure `make chaos` judges, not a check of the scenario."""
    assert rig.proxy is not None
    rig.start_sync()
    rig.start_producer(WARMUP_EVENTS, scale.rate)
    rig.wait_producer(DRAIN_TIMEOUT_S)
    rig.wait_cloud_has_all(DRAIN_TIMEOUT_S)
    down_at = time.monotonic()
    rig.broker.stop()
    rig.start_producer(scale.events, scale.rate)
    rig.wait_producer(DRAIN_TIMEOUT_S)
    sessions = rig.cloud_ingest_sessions()
    rig.proxy.set_mode(Mode.RESET)
    rig.broker.start()
    deadline = time.monotonic() + 30
    while rig.cloud_ingest_sessions() <= sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    down_s = time.monotonic() - down_at
    back_at, back_mono = time.time(), time.monotonic()
    rig.proxy.set_mode(Mode.PASS)
    result = _finish(rig, "broker_down", back_mono)
    arrivals = rig.arrivals()
    order = drain_order([(seq, kind, batch) for seq, kind, batch, _ in arrivals])
    backlog = [(at, batch) for seq, _, batch, at in arrivals if seq > WARMUP_EVENTS]
    first_at, first_batch = min(backlog) if backlog else (back_at, "")
    last_at = max(at for at, _ in backlog) if backlog else back_at
    after_first = sum(batch != first_batch for _, batch in backlog)  # stored after the first batch arrived
    rate = after_first / (last_at - first_at) if last_at > first_at else float("inf")
    expected, source = bench_sync_rate()
    failures = list(result.failures)
    if order.out_of_order:
        failures.append(f"{order.out_of_order} backlog events arrived after newer ones of their lane")
    if len(backlog) != scale.events:
        failures.append(f"the cloud holds {len(backlog)} backlog events of {scale.events}")
    if last_at - back_at > DRAIN_HANG_S:
        failures.append(f"the backlog took {last_at - back_at:.0f} s to drain after the broker came back: "
                        f"a stall (bound {DRAIN_HANG_S:.0f} s)")
    figure = Figure("drain rate", rate / expected, DRAIN_RATE_REFERENCE,
                    f"{rate:,.0f} events/s of the bench's {expected:,.0f} events/s, {source}")
    return replace(result, failures=tuple(failures), figures=(figure,), extra=(
        f"backlog {scale.events} events = {BROKER_DOWN_S / 60:.0f} min at {scale.events / BROKER_DOWN_S:.0f} "
        f"events/s, broker down {down_s:.1f} s; drained oldest first: {order.out_of_order} out of order "
        f"({order.live_positions} newest positions sent first by design); reconnect {first_at - back_at:.2f} s, "
        f"then the backlog in {last_at - first_at:.2f} s"))


MID_UPLOAD_WAIT_S = 20.0  # a fault waits this long at most for a photo to be part way up
PHOTO_EVENT_RATE = 4.0  # events per second during the photo scenario (a third of them scans)
PHOTO_LINK = SlowLink(latency_s=0.3, bytes_per_s=128 * 1024)  # a cell link: the photos take seconds each


def photo_upload(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """Proof photos (`scale.photos`, 1-4 chunks each) committed among the events and uploaded over a slow link while
    `flexedge sync` (the agent's cloud link) is SIGKILLed and the broker restarted, in turns. Every photo must
    reach the cloud whole (its sha256 the one its event recorded), none stored twice, each after its event,
    and the uploads resume rather than restart (chunks received stay near the chunks needed)."""
    assert rig.proxy is not None and rig.data_dir is not None
    rig.proxy.slow = PHOTO_LINK
    rig.proxy.set_mode(Mode.SLOW)
    # A van's pace, not a flood: photos go up between the events (which always go first; a flood of scans on
    # a slow link would hold the photos back until it ebbs, by design).
    events, rate = max(100, scale.events // 40), PHOTO_EVENT_RATE
    rig.start_producer(events, rate, "--photos", str(scale.photos), "--photo-dir", str(rig.data_dir / "photos"))
    rig.start_sync()
    slot = events / rate / (scale.rounds + 1)
    mid_upload = 0  # faults that struck while a photo was part way up
    for n in range(scale.rounds):
        time.sleep(rng.uniform(0.2 * slot, 0.5 * slot))
        deadline = time.monotonic() + MID_UPLOAD_WAIT_S  # strike while a photo is part way up
        while time.monotonic() < deadline:
            if rig.device_partial_uploads():
                mid_upload += 1
                break
            time.sleep(0.03)
        if n % 2 == 0:
            rig.kill_sync()
            rig.start_sync()
        else:
            rig.broker.kill()
            time.sleep(rng.uniform(0.2, 1.0))
            rig.broker.start()
    fault_end = time.monotonic()
    rig.wait_producer(DRAIN_TIMEOUT_S)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while len(rig.cloud_photos()) < scale.photos and time.monotonic() < deadline:
        time.sleep(0.2)
    result = _finish(rig, "photo_upload", fault_end)
    photos, arrivals = rig.cloud_photos(), rig.photo_event_arrivals()
    needed = sum(-(-row["bytes"] // PHOTO_CHUNK_BYTES) for row in photos)
    received = rig.cloud.peer.counters["photo_chunks"] if rig.cloud and rig.cloud.peer else 0
    failures = list(result.failures)
    if len(photos) != scale.photos or {r["photo_id"] for r in photos} != set(rig.device_photo_ids()):
        failures.append(f"the cloud holds {len(photos)} photos of the {scale.photos} committed")
    bad = [r["photo_id"] for r in photos if r["status"] != "ok" or r["sha256"] != r["expected_sha256"]
           or hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest() != r["sha256"]]
    if bad:
        failures.append(f"{len(bad)} photos do not match the sha256 of their event: {bad[:3]}")
    files = list((rig.cloud_db.parent / "cloud-photos").rglob("*.jpg"))
    if len(files) != len(photos) or len({r["photo_id"] for r in photos}) != len(photos):
        failures.append(f"{len(files)} photo files for {len(photos)} photos: stored twice")
    late = [r["photo_id"] for r in photos if arrivals.get(r["photo_id"], float("inf")) > r["received_at"]]
    if late:
        failures.append(f"{len(late)} photos complete in the cloud before their event")
    if not mid_upload:
        failures.append("no fault struck while a photo was part way up")
    if received > 2 * needed:
        failures.append(f"{received} chunks received for {needed} needed: uploads restarted instead of resuming")
    return replace(result, failures=tuple(failures), extra=(
        f"{len(photos)}/{scale.photos} photos in the cloud, sha256 as their events {len(photos) - len(bad)}, "
        f"each after its event; chunks received {received} for {needed} needed; {mid_upload} of {scale.rounds} "
        f"faults struck mid-upload; {(scale.rounds + 1) // 2} sync "
        f"SIGKILLs and {scale.rounds // 2} broker kills over a {PHOTO_LINK.describe()} link "
        f"({rig.proxy.delayed_bytes / 1024:.0f} KiB through it)"))


def hostile_device(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """Another van (a real certificate) publishes garbage on every uplink channel, leaves retained junk that
    crashed the cloud before, subscribes to the cloud's `$share` groups and to `#`, and connects with the
    honest van's and the cloud's client ids, while the honest van delivers; the cloud restarts once (the
    retained junk is replayed to it). The cloud stays up and counts every junk message as a reject; the
    broker refuses every subscription; nobody is kicked off."""
    hostile = HostileVan(rig.fleet, rig.broker.port, DEVICE, seed=rng.randrange(1 << 30))
    hostile.leave_retained_junk()
    hostile.try_takeovers()
    rig.start_producer(scale.events, scale.rate)
    rig.start_sync()
    hostile.start()
    assert rig.cloud is not None and rig.cloud.peer is not None
    try:
        time.sleep(_running_time(scale) / 2)
        hostile.pause()
        _wait_for(lambda: rig.cloud.peer.counters["rejected"] >= hostile.sent, 20)  # type: ignore[union-attr]
        earlier = rig.restart_cloud()  # the broker replays the retained junk to the new cloud
        hostile.resume()
        time.sleep(_running_time(scale) / 2)
    finally:
        hostile.stop()
    result = _finish(rig, "hostile_device", time.monotonic())
    counters = rig.cloud.peer.counters

    def rejected() -> int:
        return earlier["rejected"] + counters["rejected"]
    _wait_for(lambda: rejected() >= hostile.sent, 20)
    failures = list(hostile.breaches)
    if not rig.cloud.running:
        failures.append("the cloud stopped")
    if rejected() < hostile.sent:
        failures.append(f"{hostile.sent} junk messages sent, {rejected()} rejects counted")
    if hostile.heard:
        failures.append(f"the hostile van received {len(hostile.heard)} messages ({hostile.heard[0]})")
    kicked = [line for line in rig.broker.log_path.read_text().splitlines()
              if "already connected" in line and DEVICE in line]
    failures += [f"broker: {line}" for line in kicked]
    return replace(result, failures=result.failures + tuple(failures), extra=(
        f"hostile van: {hostile.sent} junk messages (garbage on 4 channels, retained junk replayed at a cloud "
        f"restart), {rejected()} rejects counted ({earlier['rejected.malformed'] + counters['rejected.malformed']} "
        f"by the catch-all), shares and # refused, client-id takeovers bound to its own id"))


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def _df_free(path: Path) -> int:
    import os

    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


SCENARIOS: dict[str, Callable[[Rig, Scale, random.Random], Result]] = {
    "sync_sigkill": sync_sigkill,
    "broker_restart": broker_restart,
    "acks_lost": acks_lost,
    "network_cut": network_cut,
    "disk_full": disk_full,
    "clock_jump": clock_jump,
    "broker_down": broker_down,
    "photo_upload": photo_upload,
    "hostile_device": hostile_device,
}


def scenario_dirs(stack: contextlib.ExitStack, name: str, small_disk: str | None) -> tuple[Path, Path | None]:
    """A scenario's work directory, and its device data directory on a small tmpfs when it fills the disk."""
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"flexedge-chaos-{name}-")))
    data_dir = stack.enter_context(small_tmpfs(work / "small", small_disk)) if small_disk else None
    return work, data_dir


def run_scenario(name: str, fleet: FleetPki, scale: Scale, seed: int = 9) -> Result:
    with contextlib.ExitStack() as stack:
        work, data_dir = scenario_dirs(stack, name, "2m" if name == "disk_full" else None)
        rig = Rig(work, fleet, drop_acks=name == "acks_lost",
                  proxied=name in ("network_cut", "broker_down", "photo_upload"),
                  keepalive_s=2 if name == "network_cut" else 5, data_dir=data_dir,
                  batch_max_events=1000 if name == "broker_down" else 100)
        stack.callback(rig.close)
        rig.start()
        return SCENARIOS[name](rig, scale, random.Random(seed))


def make_fleet(directory: Path) -> FleetPki:
    return FleetPki.create(directory, (DEVICE, HOSTILE))
