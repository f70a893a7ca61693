"""The delivery workflow for both roles: typed inputs in; events to store, feedback and notices out.

Pure and synchronous: `VehicleWorkflow.handle(input)` / `DockWorkflow.handle(input)` return an `Outcome`.
`runner.WorkflowRunner` commits the outcome's events to the store before anything else sees them, and keeps
the workflow's state in the store so a restart resumes where it stopped.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from device.contract.domain import Role, utc_now
from device.workflow.dock import DockPhase, DockState, DockWorkflow
from device.workflow.inputs import (
    ArrivedAt,
    BlockWithdrawn,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    ExceptionReason,
    ExceptionReported,
    LoadingDone,
    OffersReceived,
    PackageScanned,
    PhotoChecked,
    RouteReceived,
    SignatureCaptured,
    StageScan,
    StagingEntry,
    StagingPlan,
    StagingPlanReceived,
    StationManifest,
)
from device.workflow.outputs import Feedback, Notice, NoticeKind, Outcome, Rejection, RejectReason, SendClaim
from device.workflow.state import PackageState, Phase, VehicleState
from device.workflow.summary import BlockSummary
from device.workflow.vehicle import VehicleWorkflow

Workflow = VehicleWorkflow | DockWorkflow


def new_workflow(role: Role, clock: Callable[[], datetime] = utc_now) -> Workflow:
    return DockWorkflow(clock=clock) if role is Role.DOCK else VehicleWorkflow(clock=clock)


def snapshot(workflow: Workflow) -> dict[str, Any]:
    """The workflow's state as JSON-able data (what the runner keeps in the store)."""
    role = Role.DOCK if isinstance(workflow, DockWorkflow) else Role.VEHICLE
    return {"role": role.value, "state": workflow.state.to_dict()}


def restore(doc: dict[str, Any], clock: Callable[[], datetime] = utc_now) -> Workflow:
    """Rebuild a workflow from `snapshot()`; raises ValueError/KeyError on a damaged document."""
    if Role(doc["role"]) is Role.DOCK:
        return DockWorkflow(DockState.from_dict(doc["state"]), clock)
    return VehicleWorkflow(VehicleState.from_dict(doc["state"]), clock)


__all__ = [
    "ArrivedAt", "BlockSummary", "BlockWithdrawn", "ClaimRequested", "ClaimResult", "DepartedFrom", "DockPhase",
    "DockState",
    "DockWorkflow", "ExceptionReason", "ExceptionReported", "Feedback", "LoadingDone", "Notice", "NoticeKind",
    "OffersReceived", "Outcome", "PackageScanned", "PackageState", "Phase", "PhotoChecked", "RejectReason",
    "Rejection", "RouteReceived", "SendClaim", "SignatureCaptured", "StageScan", "StagingEntry", "StagingPlan",
    "StagingPlanReceived", "StationManifest", "VehicleState", "VehicleWorkflow", "Workflow",
    "new_workflow", "restore", "snapshot",
]
