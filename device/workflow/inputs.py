"""What drives the workflow: typed readings, driver actions and cloud messages (frozen dataclasses).

Inputs are not validated on construction: a garbled reading must reach the workflow, which rejects it with a
typed reason instead of the caller getting an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Mapping

from device.contract.domain import Block, Route, Verdict

Point = tuple[float, float]


class ExceptionReason(StrEnum):
    """Why the driver could not deliver."""

    NO_ACCESS = "no_access"
    REFUSED = "refused"
    DAMAGED = "damaged"
    UNSAFE = "unsafe"


# --- vehicle role ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OffersReceived:
    """The station's open blocks (retained, so it is re-sent on every reconnect)."""

    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class StationManifest:
    """Packages of other blocks at the station (package id -> block id), to name a wrong-route scan."""

    packages: Mapping[str, str]


@dataclass(frozen=True)
class ClaimRequested:
    """The driver asks for a block."""

    block_id: str


@dataclass(frozen=True)
class ClaimResult:
    """The cloud's answer to a claim; a claim timeout is a refusal with reason "timeout"."""

    block_id: str
    granted: bool
    reason: str = ""


@dataclass(frozen=True)
class BlockWithdrawn:
    """The cloud took the van's block back (an operator re-offered it): stop working it, return what it holds."""

    block_id: str


@dataclass(frozen=True)
class RouteReceived:
    """A route for the claimed block; a higher version replaces the current one."""

    route: Route


@dataclass(frozen=True)
class PackageScanned:
    """A barcode read while loading."""

    code: str


@dataclass(frozen=True)
class LoadingDone:
    """The driver says loading is finished (or the van leaves the station geofence)."""


@dataclass(frozen=True)
class ArrivedAt:
    """The geofence (or the driver) says the van is at a stop."""

    stop_id: str


@dataclass(frozen=True)
class DepartedFrom:
    """The geofence says the van left a stop."""

    stop_id: str


@dataclass(frozen=True)
class PhotoChecked:
    """A proof photo and its house-number verdict; empty package_ids means every open package of the stop."""

    stop_id: str
    package_ids: tuple[str, ...]
    verdict: Verdict
    read: str | None
    confidence: float
    photo_id: str
    sha256: str
    box: tuple[int, int, int, int] | None = None  # where the number was found: x, y, width, height (pixels)
    upload_sha256: str | None = None  # of the bounded copy that goes to the cloud (None: the original goes)


@dataclass(frozen=True)
class SignatureCaptured:
    """A signature as pen strokes (lists of points) or a stored image; empty package_ids: all that need one."""

    stop_id: str
    package_ids: tuple[str, ...] = ()
    strokes: tuple[tuple[Point, ...], ...] = ()
    image_ref: str | None = None


@dataclass(frozen=True)
class ExceptionReported:
    """The driver cannot deliver; empty package_ids means every open package of the stop."""

    stop_id: str
    reason: ExceptionReason
    package_ids: tuple[str, ...] = ()
    note: str = ""


# --- dock role ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagingPlanReceived:
    plan: StagingPlan


@dataclass(frozen=True)
class StageScan:
    """A package scanned at the dock; route_id is the route/bag being filled at that station, if known."""

    code: str
    route_id: str | None = None


# The plan is defined here, not in domain.py, because only the dock workflow uses it.
@dataclass(frozen=True)
class StagingEntry:
    package_id: str
    route_id: str
    bag: str


@dataclass(frozen=True)
class StagingPlan:
    """Where each package of the station goes: route and bag. A higher version replaces a lower one."""

    version: int
    entries: tuple[StagingEntry, ...] = field(default=())

    @cached_property
    def _by_package(self) -> dict[str, StagingEntry]:
        return {e.package_id: e for e in self.entries}

    def entry(self, package_id: str) -> StagingEntry | None:
        return self._by_package.get(package_id)

    @classmethod
    def from_routes(cls, version: int, routes: tuple[Route, ...], stops_per_bag: int = 5) -> StagingPlan:
        """One bag per `stops_per_bag` consecutive stops, named `<route>-<n>`."""
        entries = tuple(
            StagingEntry(package.id, route.block_id, f"{route.block_id}-{index // stops_per_bag + 1}")
            for route in routes for index, stop in enumerate(route.stops) for package in stop.packages)
        return cls(version, entries)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version,
                "entries": [{"package": e.package_id, "route": e.route_id, "bag": e.bag} for e in self.entries]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StagingPlan:
        return cls(int(raw["version"]), tuple(StagingEntry(e["package"], e["route"], e["bag"])
                                                for e in raw.get("entries", [])))


VEHICLE_INPUTS = (OffersReceived, StationManifest, ClaimRequested, ClaimResult, RouteReceived, PackageScanned,
                  LoadingDone, ArrivedAt, DepartedFrom, PhotoChecked, SignatureCaptured, ExceptionReported,
                  BlockWithdrawn)
DOCK_INPUTS = (StagingPlanReceived, StageScan)
# Inputs a person made: a rejection of one gets audible feedback (a geofence or cloud rejection does not).
PERSON_INPUTS = (ClaimRequested, PackageScanned, LoadingDone, PhotoChecked, SignatureCaptured,
                 ExceptionReported, StageScan)
