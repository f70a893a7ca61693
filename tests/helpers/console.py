"""Builders for the console tests: a real Agent on a real EventStore, a route with distinct stop positions,
and a proof-photo step that synthesizes the photo a camera would take at the stop."""
from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from device.agent import Agent, PhotoTaker, ProofPhoto
from device.domain import Block, Instruction, Package, Role, Route, Stop
from device.store import EventStore, RetentionPolicy
from device.workflow import StagingEntry, StagingPlan, Verdict
from device.workflow.runner import WorkflowRunner
from firmware_bridge.fix import Fix

T0 = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def console_block(block_id: str = "B-NORTH") -> Block:
    return Block(block_id, "DXX1", T0, T0 + timedelta(hours=4), pay_cents=12500, area="north")


def console_route(block_id: str = "B-NORTH", version: int = 1) -> Route:
    """S1: two packages, one needs a signature; S2: an access code; S3: a neighbour note."""
    return Route(block_id, version, (
        Stop("S1", "12 Pine St", "12", 47.6100, -122.3400,
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
                      sync: object = None) -> Agent:
    store = EventStore(data_dir / "events.db", RetentionPolicy())
    runner = await WorkflowRunner.open(store, role)
    return Agent(store=store, runner=runner, role=role, sync=sync, take_photo=take_photo)


def synthesized_photo_taker(photo_dir: Path, shows: dict[str, str] | None = None) -> PhotoTaker:
    """The photo a camera takes at the stop: a house front with the number painted on it, saved as JPEG.

    `shows` maps stop id -> the number painted (default: the stop's own number). The house-number verdict
    compares what was painted with the stop's number and the box is where it was painted: the vision module
    (issue 6) is not on main yet, so this step stands in for camera + check.
    """
    photo_dir.mkdir(parents=True, exist_ok=True)

    def take(stop: Stop, fix: Fix | None) -> ProofPhoto:
        number = (shows or {}).get(stop.id, stop.house_number)
        image = Image.new("RGB", (640, 480), (150, 110, 80))
        draw = ImageDraw.Draw(image)
        draw.rectangle((180, 120, 460, 470), fill=(90, 60, 40))  # the door
        font = ImageFont.truetype(FONT, 90)
        x0, y0, x1, y1 = draw.textbbox((250, 20), number, font=font)
        draw.rectangle((x0 - 10, y0 - 10, x1 + 10, y1 + 10), fill=(240, 240, 235))
        draw.text((250, 20), number, font=font, fill=(10, 10, 10))
        photo_id = str(uuid.uuid4())
        path = photo_dir / f"{photo_id}.jpg"
        image.save(path, "JPEG", quality=85)
        verdict = Verdict.MATCH if number == stop.house_number else Verdict.MISMATCH
        return ProofPhoto(photo_id, str(path), hashlib.sha256(path.read_bytes()).hexdigest(), verdict, number,
                          0.97, (x0 - 10, y0 - 10, x1 - x0 + 20, y1 - y0 + 20), 1.0)

    async def take_photo(stop: Stop, fix: Fix | None) -> ProofPhoto:
        return await asyncio.to_thread(take, stop, fix)

    return take_photo
