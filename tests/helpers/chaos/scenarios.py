"""The fault scenarios. Each builds a fresh rig, runs a steady load through a fault, lets the device recover,
and reports from the cloud's rows: produced (committed on the device), stored (in the cloud), lost,
duplicates (stored twice). Passed: lost 0, duplicates 0, the cloud's hash chain intact, the device store intact.
"""
from __future__ import annotations

import contextlib
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.helpers.chaos.proxy import Mode
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


SHORT = Scale(events=1500, rate=300.0, rounds=3)
FULL = Scale(events=12000, rate=400.0, rounds=20)


@dataclass(frozen=True)
class Result:
    scenario: str
    tally: Tally
    recovered_s: float
    extra: str = ""
    store_ok: bool = True
    failures: tuple[str, ...] = ()  # a scenario's own checks that did not hold, each said in words

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
    return Result(name, rig.tally(), recovered, extra, rig.store_intact())


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


def network_cut(rig: Rig, scale: Scale, rng: random.Random) -> Result:
    """Device <-> broker through a proxy: blackholed (half-open, only keepalive can tell) and reset, in turns."""
    assert rig.proxy is not None
    rig.start_producer(scale.events, scale.rate)
    rig.start_sync()
    cuts = max(2, scale.rounds // 4)
    for n in range(cuts):
        time.sleep(rng.uniform(0.5, 1.5))
        mode = Mode.BLACKHOLE if n % 2 == 0 else Mode.RESET
        rig.proxy.set_mode(mode)
        # A blackhole lasts past the keepalive: the client must notice a silent, open connection.
        time.sleep(rig.keepalive_s * 2.5 if mode is Mode.BLACKHOLE else rng.uniform(0.5, 2.0))
        rig.proxy.set_mode(Mode.PASS)
    # Drop the blackholed connections still open: half-open ones the client left behind are dead anyway.
    result = _finish(rig, "network_cut", time.monotonic())
    connects = rig.proxy.connections
    return Result(result.scenario, result.tally, result.recovered_s,
                  f"{cuts} cuts (blackhole/reset), {connects} connections through the proxy", result.store_ok)


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
    """The wall clock jumps back an hour, then forward a day, mid-stream: seq order and the chain hold."""
    rig.start_producer(scale.events, scale.rate, "--clock-jumps")
    rig.start_sync()
    result = _finish(rig, "clock_jump", time.monotonic())
    return Result(result.scenario, result.tally, result.recovered_s,
                  "ts back 1 h then forward 1 day; seq order checked", result.store_ok)


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
}


def run_scenario(name: str, fleet: FleetPki, scale: Scale, seed: int = 9) -> Result:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"flexedge-chaos-{name}-")))
        data_dir = stack.enter_context(small_tmpfs(work / "small", "2m")) if name == "disk_full" else None
        rig = Rig(work, fleet, drop_acks=name == "acks_lost", proxied=name == "network_cut",
                  keepalive_s=2 if name == "network_cut" else 5, data_dir=data_dir)
        stack.callback(rig.close)
        rig.start()
        return SCENARIOS[name](rig, scale, random.Random(seed))


def make_fleet(directory: Path) -> FleetPki:
    return FleetPki.create(directory, (DEVICE,))
