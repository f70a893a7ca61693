"""Builders for the console tests: a real Agent on a real EventStore, a route with distinct stop positions,
and the real proof-photo step (simulated camera + the shipped house-number model)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from device.agent import Agent, PhotoTaker
from device.assembly import _photo_taker
from device.cloud_port import CloudPort
from device.config import CameraBackend, CameraSection, Config
from device.contract.domain import Block, Instruction, Package, Role, Route, Stop
from device.store import EventStore, RetentionPolicy
from device.vision.synth import jpeg_bytes, render_photo
from device.workflow import StagingEntry, StagingPlan
from device.workflow.runner import WorkflowRunner

T0 = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
PHOTO_SEED = 18  # a door photo showing "12A" that the shipped model reads (tests/test_photo_taker.py)


def console_block(block_id: str = "B-NORTH") -> Block:
    return Block(block_id, "DXX1", T0, T0 + timedelta(hours=4), pay_cents=12500, area="north")


def console_route(block_id: str = "B-NORTH", version: int = 1) -> Route:
    """S1: two packages, one needs a signature; S2: an access code; S3: a neighbour note."""
    return Route(block_id, version, (
        Stop("S1", "12A Pine St", "12A", 47.6100, -122.3400,
             (Package("PKG-001"), Package("PKG-002", Instruction.HAND_TO_RESIDENT, signature_required=True)),
             window_end=T0 + timedelta(hours=1)),
        Stop("S2", "40 Cedar Ave", "40", 47.6135, -122.3365,
             (Package("PKG-003", Instruction.ACCESS_CODE, access_code="4321"),)),
        Stop("S3", "7 Birch Ln", "7", 47.6160, -122.3420,
             (Package("PKG-004", Instruction.NEIGHBOUR, note="blue door, no. 9"),)),
    ))


def console_plan() -> StagingPlan:
    """The dock's plan: two routes, one package of the first and two of the second."""
    return StagingPlan(1, (StagingEntry("PKG-001", "B-NORTH", "B-NORTH-1"),
                           StagingEntry("PKG-101", "B-SOUTH", "B-SOUTH-1"),
                           StagingEntry("PKG-102", "B-SOUTH", "B-SOUTH-1")))


async def build_agent(data_dir: Path, role: Role = Role.VEHICLE, take_photo: PhotoTaker | None = None,
                      cloud: CloudPort | None = None) -> Agent:
    store = EventStore(data_dir / "events.db", RetentionPolicy())
    runner = await WorkflowRunner.open(store, role)
    return Agent(store=store, runner=runner, role=role, cloud=cloud, take_photo=take_photo)


def camera_photo_taker(data_dir: Path) -> tuple[PhotoTaker, Callable[[], None], Path]:
    """The proof-photo step as `flexedge run` assembles it: the simulated camera serving one door photo showing
    "12A" (S1's number; every other stop's photo is then a mismatch), the JPEG with EXIF, the shipped model.
    Returns the step, its close and the frame file (a test may damage it: a corrupt frame)."""
    frames = data_dir / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    frame = frames / "door.jpg"
    frame.write_bytes(jpeg_bytes(render_photo(np.random.default_rng(PHOTO_SEED), "12A")))
    camera = CameraSection(backend=CameraBackend.SIMULATED, sim_dir=str(frames))
    take_photo, close = _photo_taker(Config(camera=camera), data_dir)
    return take_photo, close, frame
