"""What the console shows, as JSON-able data: the workflow's own view plus the agent's live parts.

The browser renders this and decides nothing: the workflow says what is open, the tracker says how far.
"""
from __future__ import annotations

import asyncio
from typing import Any

from device.agent import Agent
from device.positioning.geo import distance_m
from device.workflow import Notice, Outcome, VehicleWorkflow

TYPICAL_SPEED_MPS = 8.0  # ETA without a tracker estimate: about 30 km/h in town


def _next_stop(agent: Agent, view: dict[str, Any]) -> dict[str, Any] | None:
    stop_id = view.get("next_stop")
    if not stop_id:
        return None
    estimate = agent.next_stop
    if estimate is not None and estimate.stop_id == stop_id:
        return {"id": stop_id, "distance_m": round(estimate.distance_m), "eta_s": round(estimate.eta_s),
                "bearing": round(estimate.bearing)}
    fix = agent.last_fix
    stop = next((s for s in view.get("stops", ()) if s["id"] == stop_id), None)
    if fix is None or stop is None or fix.lat is None or fix.lon is None:
        return {"id": stop_id, "distance_m": None, "eta_s": None, "bearing": None}
    meters = distance_m(fix.lat, fix.lon, stop["lat"], stop["lon"])
    return {"id": stop_id, "distance_m": round(meters), "eta_s": round(meters / TYPICAL_SPEED_MPS),
            "bearing": None}


def _sync(agent: Agent) -> dict[str, Any]:
    if agent.cloud is None:
        return {"configured": False, "online": False}
    return {"configured": True, "online": agent.cloud.online}


async def console_state(agent: Agent) -> dict[str, Any]:
    workflow = agent.runner.workflow
    view = workflow.view()
    stats = await asyncio.to_thread(agent.store.stats)
    fix = agent.last_fix
    state: dict[str, Any] = {
        "view": view,
        "sync": {**_sync(agent), "outbox_depth": stats.depth,
                 "oldest_pending_age_s": stats.oldest_pending_age_s},
        "position": None if fix is None or fix.lat is None else {"lat": fix.lat, "lon": fix.lon},
        "camera": agent.take_photo is not None,
    }
    if isinstance(workflow, VehicleWorkflow):
        state["next_stop"] = _next_stop(agent, view)
        state["block_summary"] = workflow.summary().to_dict() if view.get("block") else None
    return state


def notice_doc(notice: Notice) -> dict[str, Any]:
    return {"kind": notice.kind.value, "text": notice.text, "data": dict(notice.data)}


def outcome_doc(outcome: Outcome) -> dict[str, Any]:
    """The answer to an action: accepted or the reason why not, and what the driver should see now."""
    doc: dict[str, Any] = {"accepted": outcome.accepted, "phase": outcome.phase_after,
                           "notices": [notice_doc(n) for n in outcome.notices],
                           "events": [{"type": e.type.value, "stop": e.stop, "data": dict(e.data)}
                                      for e in outcome.events]}
    if outcome.rejection is not None:
        doc["rejection"] = {"reason": outcome.rejection.reason.value, "detail": outcome.rejection.detail}
    return doc
