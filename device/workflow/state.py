"""The vehicle workflow's state: phases, per-package and per-stop progress; JSON round trip for restarts."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Mapping

from device.contract.domain import Block, Route
from device.workflow.changes import LIST, SET, FieldSpec, Tracked, mapping, value


class Phase(StrEnum):
    IDLE = "idle"  # no offers, no block
    OFFERED = "offered"  # offers to choose from
    CLAIMING = "claiming"  # a claim is out, waiting for the cloud
    CLAIMED = "claimed"  # the block is ours, waiting for its route
    LOADING = "loading"  # scanning packages into the van
    ON_ROUTE = "on_route"  # driving to the next stop
    AT_STOP = "at_stop"  # inside a stop's geofence, delivering
    BLOCK_COMPLETE = "block_complete"  # every stop delivered or excepted


class PackageState(StrEnum):
    EXPECTED = "expected"  # in the manifest, not scanned yet (loading)
    LOADED = "loaded"  # in the van, to deliver
    MISSING = "missing"  # not scanned by the end of loading (or added by a revision mid-drive)
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    REMOVED = "removed"  # a revision took it off this route: return it to the station


FINAL_PACKAGE_STATES = frozenset({PackageState.DELIVERED, PackageState.EXCEPTION})


class StopOutcome(StrEnum):
    DELIVERED = "delivered"  # every package delivered
    PARTIAL = "partial"  # some delivered, some excepted
    EXCEPTION = "exception"  # none delivered


@dataclass(frozen=True)
class StopRecord:
    """A stop as the driver met it. Finished records outlive a revision that drops their stop.

    Frozen: a handler replaces a record (`dataclasses.replace`), so the change is seen and journaled."""

    id: str
    window_end: str | None = None  # ISO UTC, for the on-time rate
    done: bool = False
    removed: bool = False  # dropped by a revision before it was finished
    outcome: StopOutcome | None = None
    on_time: bool | None = None
    arrived_at: str | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "window_end": self.window_end, "done": self.done, "removed": self.removed,
                "outcome": self.outcome.value if self.outcome else None, "on_time": self.on_time,
                "arrived_at": self.arrived_at, "finished_at": self.finished_at}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StopRecord:
        outcome = raw.get("outcome")
        return cls(raw["id"], raw.get("window_end"), bool(raw.get("done")), bool(raw.get("removed")),
                   StopOutcome(outcome) if outcome else None, raw.get("on_time"), raw.get("arrived_at"),
                   raw.get("finished_at"))


@dataclass(eq=True)
class VehicleState(Tracked):
    phase: Phase = Phase.IDLE
    offers: dict[str, Block] = field(default_factory=dict)
    claim_block: str | None = None  # the block asked for (CLAIMING)
    claim_request: str | None = None
    block_id: str | None = None
    route: Route | None = None
    packages: dict[str, PackageState] = field(default_factory=dict)  # every package this block ever had
    package_stop: dict[str, str] = field(default_factory=dict)  # package -> stop, as of the newest route
    loaded: set[str] = field(default_factory=set)  # scanned into the van during loading
    load_count: int = 0  # packages of the current manifest in `loaded` (kept, not counted per scan)
    extra_scans: dict[str, str] = field(default_factory=dict)  # scanned while loading, not ours: code -> reason
    photo_proofs: dict[str, dict[str, Any]] = field(default_factory=dict)  # package -> matching photo
    signatures: dict[str, str] = field(default_factory=dict)  # package -> signature event id
    stops: dict[str, StopRecord] = field(default_factory=dict)
    current_stop: str | None = None
    verdicts: dict[str, int] = field(default_factory=dict)
    exceptions: dict[str, int] = field(default_factory=dict)  # reason -> packages
    other_packages: dict[str, str] = field(default_factory=dict)  # package -> block, other blocks at station
    started_at: str | None = None
    completed_at: str | None = None
    summary: dict[str, Any] | None = None
    departed: dict[str, str] | None = None  # {"stop", "at"}: the last stop left, for the speed of the next leg
    speed_ratios: list[float] = field(default_factory=list)  # observed/planned speed of the last legs
    slow_ratio: float | None = None  # the speed ratio at the last re-sequence for slowness
    resequenced: int = 0  # times the van re-ordered this route version itself
    withdrawn: dict[str, Any] | None = None  # {"block", "return_packages", "at"}: the last block taken back

    FIELDS: ClassVar[Mapping[str, FieldSpec]] = {
        "phase": value(str, Phase), "offers": mapping(Block.to_dict, Block.from_dict),
        "claim_block": value(), "claim_request": value(), "block_id": value(),
        "route": value(Route.to_dict, Route.from_dict), "packages": mapping(str, PackageState),
        "package_stop": mapping(), "loaded": SET, "load_count": value(), "extra_scans": mapping(),
        "photo_proofs": mapping(), "signatures": mapping(), "stops": mapping(StopRecord.to_dict, StopRecord.from_dict),
        "current_stop": value(), "verdicts": mapping(), "exceptions": mapping(), "other_packages": mapping(),
        "started_at": value(), "completed_at": value(), "summary": value(),
        "departed": value(), "speed_ratios": LIST, "slow_ratio": value(), "resequenced": value(),
        "withdrawn": value(),
    }

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "offers": [b.to_dict() for b in self.offers.values()],
            "claim_block": self.claim_block, "claim_request": self.claim_request, "block_id": self.block_id,
            "route": self.route.to_dict() if self.route else None,
            "packages": {k: v.value for k, v in self.packages.items()},
            "package_stop": dict(self.package_stop), "loaded": sorted(self.loaded), "load_count": self.load_count,
            "extra_scans": dict(self.extra_scans),
            "photo_proofs": dict(self.photo_proofs), "signatures": dict(self.signatures),
            "stops": [s.to_dict() for s in self.stops.values()], "current_stop": self.current_stop,
            "verdicts": dict(self.verdicts), "exceptions": dict(self.exceptions),
            "other_packages": dict(self.other_packages),
            "started_at": self.started_at, "completed_at": self.completed_at, "summary": self.summary,
            "departed": self.departed, "speed_ratios": list(self.speed_ratios), "slow_ratio": self.slow_ratio,
            "resequenced": self.resequenced, "withdrawn": self.withdrawn,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VehicleState:
        route = raw.get("route")
        package_stop, loaded = dict(raw.get("package_stop", {})), set(raw.get("loaded", []))
        load_count = raw.get("load_count")
        if load_count is None:  # a snapshot from before the count was kept
            load_count = len(package_stop.keys() & loaded)
        return cls(
            phase=Phase(raw["phase"]),
            offers={b["id"]: Block.from_dict(b) for b in raw.get("offers", [])},
            claim_block=raw.get("claim_block"), claim_request=raw.get("claim_request"),
            block_id=raw.get("block_id"),
            route=Route.from_dict(route) if route else None,
            packages={k: PackageState(v) for k, v in raw.get("packages", {}).items()},
            package_stop=package_stop, loaded=loaded, load_count=int(load_count),
            extra_scans=dict(raw.get("extra_scans", {})),
            photo_proofs=dict(raw.get("photo_proofs", {})), signatures=dict(raw.get("signatures", {})),
            stops={s["id"]: StopRecord.from_dict(s) for s in raw.get("stops", [])},
            current_stop=raw.get("current_stop"),
            verdicts=dict(raw.get("verdicts", {})), exceptions=dict(raw.get("exceptions", {})),
            other_packages=dict(raw.get("other_packages", {})),
            started_at=raw.get("started_at"), completed_at=raw.get("completed_at"), summary=raw.get("summary"),
            departed=raw.get("departed"), speed_ratios=list(raw.get("speed_ratios", [])),
            slow_ratio=raw.get("slow_ratio"), resequenced=int(raw.get("resequenced", 0)),
            withdrawn=raw.get("withdrawn"),
        )
