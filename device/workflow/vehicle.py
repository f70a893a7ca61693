"""The vehicle role: offers -> claim -> route -> loading -> stops -> block complete. Pure: no I/O, no waiting.

Every row of the transition table is explicit below (`VEHICLE_TABLE`); an input without a row in the
current phase is rejected with `WRONG_STATE`.
"""
from __future__ import annotations

import math
from dataclasses import fields, replace
from datetime import datetime
from typing import Any, Callable

from device.contract.domain import Block, EventType, Route, Stop, Verdict, iso_utc, new_event_id, utc_now
from device.workflow.core import Machine, Rejected, Step, Transition, check_fraction, check_id, check_ids
from device.workflow.inputs import (
    VEHICLE_INPUTS,
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
    StationManifest,
)
from device.workflow.outputs import Feedback, NoticeKind, RejectReason, SendClaim
from device.workflow.resequencing import (
    Reason,
    forecast,
    note_arrival,
    note_departure,
    position,
    resequence_remaining,
    slow,
)
from device.workflow.state import (
    FINAL_PACKAGE_STATES,
    PackageState,
    Phase,
    StopOutcome,
    StopRecord,
    VehicleState,
)
from device.workflow.summary import BlockSummary, summarize

NOT_LOADED = "not_loaded"  # exception reason the workflow gives packages that never made it into the van
MAX_OFFERS = 200
MAX_STATION_PACKAGES = 20000
MAX_SIGNATURE_POINTS = 4000  # a signature is a few hundred points; more is garbage or an attack
MAX_NOTE = 500


class VehicleWorkflow(Machine[VehicleState, Phase]):
    INPUTS = VEHICLE_INPUTS

    def __init__(self, state: VehicleState | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(state or VehicleState(), clock)

    def phase_of(self, state: VehicleState) -> Phase:
        return state.phase

    def block_of(self, state: VehicleState) -> str | None:
        return state.block_id or state.claim_block

    def _routine(self, item: object) -> bool:
        # Offers and routes are retained messages, re-sent on every reconnect; the geofence fires by itself.
        return isinstance(item, (OffersReceived, StationManifest, RouteReceived, ArrivedAt, DepartedFrom))

    # --- queries for the UI -------------------------------------------------------------------------

    def next_stop(self) -> Stop | None:
        return _next_open_stop(self.state)

    def load_list(self) -> dict[str, str]:
        """package id -> state, for the current route's manifest."""
        route = self.state.route
        return {} if route is None else {p: self.state.packages[p].value for p in route.manifest()}

    def summary(self) -> BlockSummary:
        return summarize(self.state)

    def view(self) -> dict[str, Any]:
        """Everything a screen shows, as JSON-able data (the console renders it; it decides nothing)."""
        s = self.state
        next_stop = self.next_stop()
        current = _route_stop(s, s.current_stop) if s.current_stop else None
        return {
            "role": "vehicle", "phase": s.phase.value, "block": s.block_id, "claiming": s.claim_block,
            "offers": [b.to_dict() for b in s.offers.values()],
            "route_version": s.route.version if s.route else None,
            "load": {"packages": self.load_list(), "extra": dict(s.extra_scans)},
            "stops": [{**stop.to_dict(), "done": s.stops[stop.id].done,
                       "outcome": _value(s.stops[stop.id].outcome),
                       "packages": [{**p.to_dict(), "state": s.packages[p.id].value} for p in stop.packages]}
                      for stop in (s.route.stops if s.route else ())],
            "next_stop": next_stop.id if next_stop else None,
            "current_stop": current.id if current else None,
            "awaiting_signature": sorted(p for p in s.photo_proofs if s.packages.get(p) is PackageState.LOADED),
            "summary": s.summary,
            **(_forecast(s, self._clock()) if s.phase in (Phase.ON_ROUTE, Phase.AT_STOP) else
               {"etas": {}, "forecast": None}),
            "resequenced": s.resequenced,
            "withdrawn": s.withdrawn,
        }

    # --- offers and claims --------------------------------------------------------------------------

    def _on_offers(self, step: Step, s: VehicleState, item: OffersReceived) -> None:
        blocks = _check_offers(item)
        if s.phase is Phase.BLOCK_COMPLETE:  # the next shift starts from a clean slate
            _reset(s)
            step.block = None
        offers = {b.id: b for b in blocks}
        if set(offers) != set(s.offers):
            step.event(EventType.BLOCK_OFFERED, {"blocks": sorted(offers)}, block=None)
        s.offers = offers
        if s.phase is not Phase.CLAIMING:
            s.phase = Phase.OFFERED if offers else Phase.IDLE
        step.notice(NoticeKind.OFFERS, f"{len(offers)} blocks offered",
                    blocks=[b.to_dict() for b in blocks])

    def _on_offers_while_busy(self, step: Step, s: VehicleState, item: OffersReceived) -> None:
        """The station's offers while the van works a block: kept (no event, nothing shown), so a van whose block
        is withdrawn is back among the offers at once."""
        s.offers = {b.id: b for b in _check_offers(item)}

    def _on_station_manifest(self, step: Step, s: VehicleState, item: StationManifest) -> None:
        packages = item.packages
        if not isinstance(packages, dict) or len(packages) > MAX_STATION_PACKAGES:
            raise Rejected(RejectReason.INVALID_INPUT, "station manifest: expected a mapping of package -> block")
        for package, block in packages.items():
            check_id(package, "package")
            check_id(block, "block")
        s.other_packages = dict(packages)

    def _on_claim(self, step: Step, s: VehicleState, item: ClaimRequested) -> None:
        block_id = check_id(item.block_id, "block_id")
        if block_id not in s.offers:
            raise Rejected(RejectReason.UNKNOWN_BLOCK, f"block {block_id} is not offered")
        request_id = new_event_id()
        s.claim_block, s.claim_request, s.phase = block_id, request_id, Phase.CLAIMING
        step.event(EventType.BLOCK_CLAIM_REQUESTED, {"request_id": request_id}, block=block_id)
        step.requests.append(SendClaim(block_id, request_id))
        step.feedback.append(Feedback.OK)
        step.notice(NoticeKind.CLAIM, f"claiming block {block_id}", block=block_id, state="pending")

    def _on_claim_result(self, step: Step, s: VehicleState, item: ClaimResult) -> None:
        block_id = check_id(item.block_id, "block_id")
        if block_id != s.claim_block:
            raise Rejected(RejectReason.CLAIM_MISMATCH, f"result for {block_id}, claim is for {s.claim_block}")
        if not isinstance(item.granted, bool):
            raise Rejected(RejectReason.INVALID_INPUT, "granted: expected true or false")
        if item.granted:
            _grant(step, s, implicit=False)
            return
        reason = str(item.reason)[:100] or "taken"
        step.event(EventType.BLOCK_CLAIM_LOST, {"request_id": s.claim_request, "reason": reason}, block=block_id)
        s.offers.pop(block_id, None)
        s.claim_block = s.claim_request = None
        s.phase = Phase.OFFERED if s.offers else Phase.IDLE
        step.feedback.append(Feedback.CLAIM_LOST)
        step.notice(NoticeKind.CLAIM, f"block {block_id} not granted: {reason}", block=block_id, state="lost")

    def _on_withdrawn(self, step: Step, s: VehicleState, item: BlockWithdrawn) -> None:
        """The cloud took the block back: what is proven stays in the event stream, what the van still holds
        (loaded, not delivered) goes back to the station, and the van is free to claim again."""
        block_id = check_id(item.block_id, "block_id")
        if block_id != s.block_id:
            raise Rejected(RejectReason.NOT_CURRENT_BLOCK, f"withdrawal of {block_id}, the van's block is "
                                                           f"{s.block_id}")
        to_return = sorted(p for p in s.loaded if s.packages.get(p) is not PackageState.DELIVERED)
        delivered = sorted(p for p, state in s.packages.items() if state is PackageState.DELIVERED)
        stops_done = sorted(sid for sid, record in s.stops.items() if record.done)
        step.event(EventType.BLOCK_WITHDRAWN, {
            "phase": s.phase.value, "route_version": s.route.version if s.route else None,
            "return_packages": to_return, "delivered": delivered, "stops_done": stops_done,
            "current_stop": s.current_stop}, stop=s.current_stop)
        offers = dict(s.offers)
        _reset(s)
        s.offers = offers
        s.phase = Phase.OFFERED if offers else Phase.IDLE
        s.withdrawn = {"block": block_id, "return_packages": to_return, "at": iso_utc(step.now)}
        step.block = None
        step.feedback.append(Feedback.ATTENTION)
        text = (f"block {block_id} was taken back: return {len(to_return)} packages to the station" if to_return
                else f"block {block_id} was taken back")
        step.notice(NoticeKind.BLOCK_WITHDRAWN, text, block=block_id, return_packages=to_return,
                    delivered=len(delivered))

    # --- the route ----------------------------------------------------------------------------------

    def _on_route(self, step: Step, s: VehicleState, item: RouteReceived) -> None:
        route = item.route
        if not isinstance(route, Route):
            raise Rejected(RejectReason.INVALID_INPUT, "route: not a Route")
        expected = s.claim_block if s.phase is Phase.CLAIMING else s.block_id
        if route.block_id != expected:
            raise Rejected(RejectReason.ROUTE_OTHER_BLOCK, f"route for {route.block_id}, block is {expected}")
        if s.phase is Phase.CLAIMING:  # the cloud sends a route only to the winner: the result was overtaken
            _grant(step, s, implicit=True)
        if s.route is None:
            _install_route(step, s, route)
            return
        if route.version <= s.route.version:
            raise Rejected(RejectReason.STALE_ROUTE, f"version {route.version} <= {s.route.version}", record=False)
        _revise_route(step, s, route)

    # --- loading ------------------------------------------------------------------------------------

    def _on_scan(self, step: Step, s: VehicleState, item: PackageScanned) -> None:
        code = check_id(item.code, "code")
        state = s.packages.get(code)
        on_route = s.route is not None and code in s.package_stop and state is not PackageState.REMOVED
        if on_route and state is PackageState.EXPECTED:
            s.packages[code] = PackageState.LOADED
            s.loaded.add(code)
            s.load_count += 1
            loaded, total = _load_counts(s)
            step.event(EventType.PACKAGE_SCANNED, {"package": code, "loaded": loaded, "total": total},
                       stop=s.package_stop[code])
            step.feedback.append(Feedback.GOOD_SCAN)
            step.notice(NoticeKind.LOAD_PROGRESS, f"{code} ok ({loaded}/{total})", package=code,
                        stop=s.package_stop[code], loaded=loaded, total=total)
            return
        if code in s.loaded and on_route:
            reason, feedback, data = "duplicate", Feedback.DUPLICATE_SCAN, {}
        elif code in s.other_packages:
            reason, feedback, data = "wrong_route", Feedback.WRONG_PACKAGE, {"other_block": s.other_packages[code]}
        elif code in s.packages:  # was on this block, a revision took it off
            reason, feedback, data = "not_on_route", Feedback.WRONG_PACKAGE, {}
        else:
            reason, feedback, data = "unknown", Feedback.WRONG_PACKAGE, {}
        if reason != "duplicate":
            s.extra_scans[code] = reason
        step.event(EventType.PACKAGE_REJECTED, {"package": code, "reason": reason, **data})
        step.feedback.append(feedback)
        step.notice(NoticeKind.SCAN_PROBLEM, f"{code}: {reason.replace('_', ' ')}", package=code, reason=reason,
                    **data)

    def _on_loading_done(self, step: Step, s: VehicleState, item: LoadingDone) -> None:
        missing = sorted(p for p in _route(s).manifest() if s.packages[p] is PackageState.EXPECTED)
        for package in missing:
            s.packages[package] = PackageState.MISSING
        if missing:
            step.event(EventType.PACKAGES_MISSING, {"packages": missing, "count": len(missing)})
            step.feedback.append(Feedback.ATTENTION)
            step.notice(NoticeKind.MISSING_PACKAGES, f"{len(missing)} packages not loaded", packages=missing)
        loaded, total = _load_counts(s)
        step.event(EventType.LOADING_COMPLETE, {"loaded": loaded, "missing": len(missing), "total": total})
        step.feedback.append(Feedback.LOADING_COMPLETE)
        s.phase = Phase.ON_ROUTE
        _settle(step, s)

    # --- the drive ----------------------------------------------------------------------------------

    def _on_arrived(self, step: Step, s: VehicleState, item: ArrivedAt) -> None:
        stop_id = check_id(item.stop_id, "stop_id")
        stop = _stop(s, stop_id)
        if s.stops[stop_id].done:
            raise Rejected(RejectReason.STOP_FINISHED, f"stop {stop_id} is already finished", record=False)
        if s.phase is Phase.AT_STOP:
            if s.current_stop == stop_id:
                raise Rejected(RejectReason.ALREADY_AT_STOP, f"already at {stop_id}", record=False)
            _depart(step, s, implicit=True)  # overlapping geofences: arriving at one is leaving the other
        expected = _next_open_stop(s)
        note_arrival(s, stop, step.now)
        s.phase, s.current_stop = Phase.AT_STOP, stop_id
        record = s.stops[stop_id]
        if record.arrived_at is None:
            s.stops[stop_id] = replace(record, arrived_at=iso_utc(step.now))
        open_packages = _open_packages(s, stop_id)
        step.event(EventType.STOP_ARRIVED, {"in_order": expected is not None and expected.id == stop_id,
                                            "expected_stop": expected.id if expected else None,
                                            "packages": open_packages}, stop=stop_id)
        step.feedback.append(Feedback.ARRIVED)
        by_id = {p.id: p for p in stop.packages}
        step.notice(NoticeKind.STOP_INSTRUCTIONS, f"{stop.address}: {len(open_packages)} packages",
                    stop=stop.to_dict(), packages=[by_id[p].to_dict() for p in open_packages])
        if expected is not None and expected.id != stop_id:
            resequence_remaining(step, s, Reason.OUT_OF_ORDER, (stop.lat, stop.lon))
        elif slow(s):
            resequence_remaining(step, s, Reason.SLOW, (stop.lat, stop.lon))

    def _on_departed(self, step: Step, s: VehicleState, item: DepartedFrom) -> None:
        stop_id = check_id(item.stop_id, "stop_id")
        if stop_id != s.current_stop:
            raise Rejected(RejectReason.NOT_AT_STOP, f"not at {stop_id} (at {s.current_stop})", record=False)
        _depart(step, s, implicit=False)

    # --- proof at the stop --------------------------------------------------------------------------

    def _on_photo(self, step: Step, s: VehicleState, item: PhotoChecked) -> None:
        stop_id = _at_current_stop(s, item.stop_id)
        if not isinstance(item.verdict, Verdict):
            raise Rejected(RejectReason.INVALID_INPUT, f"verdict: not one of {[v.value for v in Verdict]}")
        confidence = check_fraction(item.confidence, "confidence")
        photo_id = check_id(item.photo_id, "photo_id")
        sha256 = _check_sha256(item.sha256, "sha256")
        upload_sha256 = sha256 if item.upload_sha256 is None else _check_sha256(item.upload_sha256, "upload_sha256")
        read = item.read
        if read is not None and (not isinstance(read, str) or len(read) > 20 or not read.isprintable()):
            raise Rejected(RejectReason.INVALID_INPUT, "read: expected a short printable text or null")
        box = item.box
        if box is not None and (not isinstance(box, (tuple, list)) or len(box) != 4 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000 for v in box)):
            raise Rejected(RejectReason.INVALID_INPUT, "box: expected [x, y, width, height] in pixels")
        packages = _resolve_packages(s, stop_id, item.package_ids)
        stop = _stop(s, stop_id)
        verdict = item.verdict
        s.verdicts[verdict.value] = s.verdicts.get(verdict.value, 0) + 1
        step.event(EventType.PHOTO_CHECKED, {"verdict": verdict.value, "read": read, "expected": stop.house_number,
                                             "confidence": confidence, "photo_id": photo_id, "sha256": sha256,
                                             "upload_sha256": upload_sha256,
                                             "packages": list(packages),
                                             "box": list(box) if box is not None else None}, stop=stop_id)
        if verdict is Verdict.MATCH:
            for package in packages:
                s.photo_proofs[package] = {"photo_id": photo_id, "sha256": sha256, "upload_sha256": upload_sha256,
                                           "confidence": confidence}
            _deliver_ready(step, s, stop_id, packages)
        elif verdict is Verdict.MISMATCH:  # never delivered on a wrong house: retake, or an exception
            step.feedback.append(Feedback.WRONG_HOUSE)
            step.notice(NoticeKind.RETAKE_PHOTO, f"photo shows {read!r}, this stop is {stop.house_number}: "
                        "check the address and retake", read=read, expected=stop.house_number, photo_id=photo_id)
        else:
            step.feedback.append(Feedback.RETAKE_PHOTO)
            step.notice(NoticeKind.RETAKE_PHOTO, f"house number not readable: retake showing {stop.house_number}",
                        read=read, expected=stop.house_number, photo_id=photo_id)
        _finish_stop_if_done(step, s, stop_id)

    def _on_signature(self, step: Step, s: VehicleState, item: SignatureCaptured) -> None:
        stop_id = _at_current_stop(s, item.stop_id)
        stop = _stop(s, stop_id)
        needs = {p.id for p in stop.packages if p.signature_required}
        if item.package_ids:
            packages = _resolve_packages(s, stop_id, item.package_ids)
            if not needs.issuperset(packages):
                raise Rejected(RejectReason.NO_SIGNATURE_NEEDED, f"no signature required for "
                                                                 f"{sorted(set(packages) - needs)}")
        else:
            packages = tuple(p for p in _open_packages(s, stop_id) if p in needs and p not in s.signatures)
            if not packages:
                raise Rejected(RejectReason.NO_SIGNATURE_NEEDED, f"no package at {stop_id} waits for a signature")
        data: dict[str, Any] = {"packages": list(packages)}
        if item.image_ref is not None:
            data["image_ref"] = check_id(item.image_ref, "image_ref")
        if item.strokes:
            data["strokes"] = _check_strokes(item.strokes)
        if "strokes" not in data and "image_ref" not in data:
            raise Rejected(RejectReason.INVALID_INPUT, "signature: neither strokes nor an image")
        event = step.event(EventType.SIGNATURE_CAPTURED, data, stop=stop_id)
        for package in packages:
            s.signatures[package] = event.id
        if not _deliver_ready(step, s, stop_id, packages):
            step.feedback.append(Feedback.OK)
        _finish_stop_if_done(step, s, stop_id)

    def _on_exception(self, step: Step, s: VehicleState, item: ExceptionReported) -> None:
        stop_id = check_id(item.stop_id, "stop_id")
        if not isinstance(item.reason, ExceptionReason):
            raise Rejected(RejectReason.INVALID_INPUT, f"reason: not one of {[r.value for r in ExceptionReason]}")
        if not isinstance(item.note, str) or len(item.note) > MAX_NOTE:
            raise Rejected(RejectReason.INVALID_INPUT, f"note: expected text of at most {MAX_NOTE} characters")
        _stop(s, stop_id)  # an unknown stop is rejected
        if s.stops[stop_id].done:
            raise Rejected(RejectReason.STOP_FINISHED, f"stop {stop_id} is already finished")
        packages = _resolve_packages(s, stop_id, item.package_ids)
        _except(step, s, stop_id, packages, item.reason.value, item.note)
        step.feedback.append(Feedback.EXCEPTION_RECORDED)
        _finish_stop_if_done(step, s, stop_id)
        if s.stops[stop_id].outcome is StopOutcome.EXCEPTION and s.phase is not Phase.BLOCK_COMPLETE:
            stop = _route_stop(s, stop_id)
            here = position(s) or ((stop.lat, stop.lon) if stop else None)
            if here is not None:
                resequence_remaining(step, s, Reason.EXCEPTION, here)

    def _on_departed_after_completion(self, step: Step, s: VehicleState, item: DepartedFrom) -> None:
        stop_id = check_id(item.stop_id, "stop_id")
        if stop_id != s.current_stop:
            raise Rejected(RejectReason.NOT_AT_STOP, f"not at {stop_id}", record=False)
        step.event(EventType.STOP_DEPARTED, {"finished": True, "open_packages": []}, stop=stop_id)
        s.current_stop = None


# --- helpers (they work on the handler's copy of the state) ------------------------------------------


def _forecast(s: VehicleState, now: datetime) -> dict[str, Any]:
    ahead = forecast(s, now)
    return {"etas": ahead.pop("etas"), "forecast": ahead}


def _check_offers(item: OffersReceived) -> tuple[Block, ...] | list[Block]:
    blocks = item.blocks
    if not isinstance(blocks, (tuple, list)) or not all(isinstance(b, Block) for b in blocks):
        raise Rejected(RejectReason.INVALID_INPUT, "offers: expected a list of blocks")
    if len(blocks) > MAX_OFFERS:
        raise Rejected(RejectReason.INVALID_INPUT, f"offers: more than {MAX_OFFERS} blocks")
    return blocks


def _reset(s: VehicleState) -> None:
    """Back to a fresh state in place (the handler owns this copy); the station manifest is kept."""
    fresh = VehicleState(other_packages=s.other_packages)
    for name in fields(VehicleState):
        setattr(s, name.name, getattr(fresh, name.name))


def _grant(step: Step, s: VehicleState, *, implicit: bool) -> None:
    block_id = s.claim_block
    step.event(EventType.BLOCK_CLAIMED, {"request_id": s.claim_request, "implicit": implicit}, block=block_id)
    s.block_id, step.block = block_id, block_id
    s.claim_block = s.claim_request = None
    s.offers = {}
    s.withdrawn = None
    s.phase = Phase.CLAIMED
    s.started_at = iso_utc(step.now)
    step.feedback.append(Feedback.CLAIM_WON)
    step.notice(NoticeKind.CLAIM, f"block {block_id} is yours", block=block_id, state="won")


def _stop_record(stop: Stop) -> StopRecord:
    return StopRecord(stop.id, iso_utc(stop.window_end) if stop.window_end else None)


def _install_route(step: Step, s: VehicleState, route: Route) -> None:
    s.route = route
    s.package_stop = route.manifest()
    s.packages = {p: PackageState.EXPECTED for p in s.package_stop}
    s.load_count = len(s.package_stop.keys() & s.loaded)
    s.stops = {stop.id: _stop_record(stop) for stop in route.stops}
    s.phase = Phase.LOADING
    step.event(EventType.ROUTE_RECEIVED, {"version": route.version, "stops": len(route.stops),
                                          "packages": len(s.package_stop)})
    step.notice(NoticeKind.ROUTE, f"route v{route.version}: {len(route.stops)} stops, {len(s.package_stop)} "
                "packages: start loading", route=route.to_dict())


def _revise_route(step: Step, s: VehicleState, route: Route) -> None:
    """A newer route: finished stops stay finished, unfinished stops it drops are reported, progress kept."""
    old_version = _route(s).version
    loading = s.phase is Phase.LOADING
    new_manifest = route.manifest()
    new_stop_ids = [stop.id for stop in route.stops]
    removed_stops = [sid for sid, rec in s.stops.items()
                     if sid not in new_stop_ids and not rec.done and not rec.removed]
    added_stops = [sid for sid in new_stop_ids if sid not in s.stops or s.stops[sid].removed]
    kept_finished = [sid for sid in new_stop_ids if sid in s.stops and s.stops[sid].done]
    for sid in removed_stops:
        s.stops[sid] = replace(s.stops[sid], removed=True)
    for stop in route.stops:
        record = s.stops.get(stop.id)
        if record is None or record.removed:
            s.stops[stop.id] = _stop_record(stop)
        elif not record.done:
            s.stops[stop.id] = replace(record, window_end=_stop_record(stop).window_end)
    to_return = []
    for package, state in list(s.packages.items()):
        if package not in new_manifest and state not in FINAL_PACKAGE_STATES:
            s.packages[package] = PackageState.REMOVED
            if package in s.loaded:
                to_return.append(package)
    not_loaded = []
    for package in new_manifest:
        if s.packages.get(package) in FINAL_PACKAGE_STATES:
            continue
        if package in s.loaded:
            s.packages[package] = PackageState.LOADED
        elif loading:
            s.packages[package] = PackageState.EXPECTED
        else:
            s.packages[package] = PackageState.MISSING
            not_loaded.append(package)
    s.route, s.package_stop = route, new_manifest
    s.load_count = len(new_manifest.keys() & s.loaded)
    s.resequenced = 0  # the cloud's version replaces the van's own order
    step.event(EventType.ROUTE_REVISED, {
        "from_version": old_version, "version": route.version, "removed_stops": removed_stops,
        "added_stops": added_stops, "kept_finished": kept_finished, "return_packages": sorted(to_return),
        "not_loaded": sorted(not_loaded)})
    step.notice(NoticeKind.ROUTE_REVISED, f"route revised to v{route.version}: {len(removed_stops)} stops "
                f"removed, {len(added_stops)} added", removed_stops=removed_stops, added_stops=added_stops,
                return_packages=sorted(to_return), route=route.to_dict())
    if removed_stops or to_return or not_loaded:
        step.feedback.append(Feedback.ATTENTION)
    if s.current_stop in removed_stops:
        s.current_stop = None
        s.phase = Phase.ON_ROUTE
    if not loading:
        _settle(step, s)


def _load_counts(s: VehicleState) -> tuple[int, int]:
    """(loaded, total) of the current manifest, while loading (its only callers): then a manifest package is
    LOADED exactly when it was scanned into the van, which `s.load_count` counts."""
    return s.load_count, len(s.package_stop)


def _route(s: VehicleState) -> Route:
    """The block's route: the table hands the inputs that need one only to phases that have it."""
    if s.route is None:
        raise Rejected(RejectReason.WRONG_STATE, "no route yet")
    return s.route


def _route_stop(s: VehicleState, stop_id: str) -> Stop | None:
    return s.route.stop(stop_id) if s.route else None


def _stop(s: VehicleState, stop_id: str) -> Stop:
    stop = _route_stop(s, stop_id)
    if stop is None:
        raise Rejected(RejectReason.UNKNOWN_STOP, f"stop {stop_id} is not on route v{_route(s).version}")
    return stop


def _value(outcome: StopOutcome | None) -> str | None:
    return outcome.value if outcome else None


def _next_open_stop(s: VehicleState) -> Stop | None:
    if s.route is None:
        return None
    return next((stop for stop in s.route.stops if not s.stops[stop.id].done), None)


def _open_packages(s: VehicleState, stop_id: str) -> list[str]:
    """Packages of the stop still to deliver: loaded and not yet delivered or excepted."""
    stop = _stop(s, stop_id)
    return [p.id for p in stop.packages if s.packages[p.id] is PackageState.LOADED]


def _resolve_packages(s: VehicleState, stop_id: str, package_ids: Any) -> tuple[str, ...]:
    open_packages = _open_packages(s, stop_id)
    if not package_ids:
        if not open_packages:
            raise Rejected(RejectReason.NOTHING_OPEN, f"no open package at {stop_id}")
        return tuple(open_packages)
    packages = check_ids(package_ids, "package_ids")
    wrong = sorted(set(packages) - set(open_packages))
    if wrong:
        raise Rejected(RejectReason.PACKAGE_NOT_OPEN, f"not open at {stop_id}: {wrong[:10]}")
    return tuple(dict.fromkeys(packages))


def _at_current_stop(s: VehicleState, value: Any) -> str:
    stop_id = check_id(value, "stop_id")
    if stop_id != s.current_stop:
        raise Rejected(RejectReason.NOT_AT_STOP, f"proof for {stop_id}, the van is at {s.current_stop}")
    return stop_id


def _check_strokes(strokes: Any) -> list[list[list[float]]]:
    if not isinstance(strokes, (tuple, list)):
        raise Rejected(RejectReason.INVALID_INPUT, "strokes: expected a list of strokes")
    out, points = [], 0
    for stroke in strokes:
        if not isinstance(stroke, (tuple, list)) or not stroke:
            raise Rejected(RejectReason.INVALID_INPUT, "strokes: each stroke is a non-empty list of points")
        line = []
        for point in stroke:
            if (not isinstance(point, (tuple, list)) or len(point) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in point)):
                raise Rejected(RejectReason.INVALID_INPUT, f"strokes: a point must be [x, y], got {point!r:.40}")
            line.append([round(float(point[0]), 1), round(float(point[1]), 1)])
        points += len(line)
        if points > MAX_SIGNATURE_POINTS:
            raise Rejected(RejectReason.INVALID_INPUT, f"strokes: more than {MAX_SIGNATURE_POINTS} points")
        out.append(line)
    return out


def _check_sha256(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise Rejected(RejectReason.INVALID_INPUT, f"{name}: expected 64 lowercase hex digits")
    return value


def _deliver_ready(step: Step, s: VehicleState, stop_id: str, packages: tuple[str, ...]) -> list[str]:
    """Deliver every package that has its proof: a matching photo, and a signature where one is required."""
    stop = _stop(s, stop_id)
    needs_signature = {p.id for p in stop.packages if p.signature_required}
    ready = [p for p in packages if p in s.photo_proofs and (p not in needs_signature or p in s.signatures)]
    waiting = [p for p in packages if p in s.photo_proofs and p not in ready]
    # One proof event per photo: packages of a stop usually share one.
    by_photo: dict[str, list[str]] = {}
    for package in ready:
        by_photo.setdefault(s.photo_proofs[package]["photo_id"], []).append(package)
    for photo_id, group in by_photo.items():
        proof = s.photo_proofs[group[0]]
        step.event(EventType.DELIVERY_PROOF, {
            "packages": group, "photo_id": photo_id, "sha256": proof["sha256"],
            "upload_sha256": proof.get("upload_sha256", proof["sha256"]), "confidence": proof["confidence"],
            "signatures": {p: s.signatures[p] for p in group if p in s.signatures}}, stop=stop_id)
        for package in group:
            s.packages[package] = PackageState.DELIVERED
    if ready:
        step.feedback.append(Feedback.DELIVERED)
        step.notice(NoticeKind.DELIVERED, f"{len(ready)} delivered at {stop.address}", packages=ready)
    if waiting:
        step.feedback.append(Feedback.SIGNATURE_NEEDED)
        step.notice(NoticeKind.SIGNATURE_NEEDED, f"signature needed for {len(waiting)} packages", packages=waiting)
    return ready


def _except(step: Step, s: VehicleState, stop_id: str, packages: tuple[str, ...] | list[str], reason: str,
            note: str = "") -> None:
    data: dict[str, Any] = {"reason": reason, "packages": list(packages)}
    if note:
        data["note"] = note
    step.event(EventType.DELIVERY_EXCEPTION, data, stop=stop_id)
    for package in packages:
        s.packages[package] = PackageState.EXCEPTION
    s.exceptions[reason] = s.exceptions.get(reason, 0) + len(packages)
    step.notice(NoticeKind.EXCEPTION, f"{len(packages)} packages not delivered: {reason.replace('_', ' ')}",
                stop=stop_id, packages=list(packages), reason=reason)


def _finish_stop_if_done(step: Step, s: VehicleState, stop_id: str) -> None:
    """A stop is finished when nothing of it is left to deliver; never-loaded packages become exceptions."""
    record = s.stops[stop_id]
    stop = _stop(s, stop_id)
    states = [s.packages[p.id] for p in stop.packages]
    if record.done or any(st in (PackageState.EXPECTED, PackageState.LOADED) for st in states):
        return
    missing = [p.id for p in stop.packages if s.packages[p.id] is PackageState.MISSING]
    if missing:
        _except(step, s, stop_id, missing, NOT_LOADED)
    delivered = sum(s.packages[p.id] is PackageState.DELIVERED for p in stop.packages)
    outcome = (StopOutcome.DELIVERED if delivered == len(stop.packages)
               else StopOutcome.PARTIAL if delivered else StopOutcome.EXCEPTION)
    on_time = step.now <= stop.window_end if stop.window_end is not None and delivered else record.on_time
    s.stops[stop_id] = replace(record, done=True, finished_at=iso_utc(step.now), outcome=outcome, on_time=on_time)
    step.event(EventType.STOP_COMPLETED, {"outcome": outcome.value, "delivered": delivered,
                                          "packages": len(stop.packages), "on_time": on_time}, stop=stop_id)
    if _next_open_stop(s) is None:
        _complete_block(step, s)


def _settle(step: Step, s: VehicleState) -> None:
    """After loading or a revision: close stops with nothing deliverable, then point at the next stop."""
    for stop in list(_route(s).stops):
        if s.phase is not Phase.BLOCK_COMPLETE:
            _finish_stop_if_done(step, s, stop.id)
    if s.phase is Phase.BLOCK_COMPLETE:
        return
    if _next_open_stop(s) is None:
        _complete_block(step, s)
    elif s.phase is Phase.ON_ROUTE:
        _next_stop_notice(step, s)


def _next_stop_notice(step: Step, s: VehicleState) -> None:
    stop = _next_open_stop(s)
    if stop is not None:
        remaining = sum(not s.stops[x.id].done for x in _route(s).stops)
        step.notice(NoticeKind.NEXT_STOP, f"next: {stop.address}", stop=stop.to_dict(), remaining=remaining)


def _depart(step: Step, s: VehicleState, *, implicit: bool) -> None:
    stop_id = s.current_stop
    if stop_id is None:
        raise Rejected(RejectReason.NOT_AT_STOP, "not at a stop", record=False)
    open_packages = _open_packages(s, stop_id)
    step.event(EventType.STOP_DEPARTED, {"finished": s.stops[stop_id].done, "open_packages": open_packages,
                                         "implicit": implicit}, stop=stop_id)
    if open_packages:
        step.feedback.append(Feedback.ATTENTION)
        step.notice(NoticeKind.STOP_LEFT_OPEN, f"left {stop_id} with {len(open_packages)} packages undelivered",
                    stop=stop_id, packages=open_packages)
    note_departure(s, stop_id, step.now)
    s.current_stop = None
    s.phase = Phase.ON_ROUTE
    if not implicit:
        _next_stop_notice(step, s)


def _complete_block(step: Step, s: VehicleState) -> None:
    s.phase = Phase.BLOCK_COMPLETE
    s.completed_at = iso_utc(step.now)
    summary = summarize(s)
    s.summary = summary.to_dict()
    step.event(EventType.BLOCK_COMPLETED, s.summary)
    step.feedback.append(Feedback.BLOCK_COMPLETE)
    step.notice(NoticeKind.BLOCK_SUMMARY, summary.text(), summary=s.summary)


# --- the transition table ----------------------------------------------------------------------------

def _row(handler: Callable[[Any, Step, VehicleState, Any], None], *targets: Phase) -> Transition[VehicleState]:
    return Transition(handler, frozenset(targets))


P = Phase
W = VehicleWorkflow
_DRIVING = (P.ON_ROUTE, P.AT_STOP, P.BLOCK_COMPLETE)
VEHICLE_TABLE: dict[tuple[Phase, type], Transition[VehicleState]] = {
    (P.IDLE, OffersReceived): _row(W._on_offers, P.IDLE, P.OFFERED),
    (P.OFFERED, OffersReceived): _row(W._on_offers, P.IDLE, P.OFFERED),
    (P.CLAIMING, OffersReceived): _row(W._on_offers, P.CLAIMING),
    (P.BLOCK_COMPLETE, OffersReceived): _row(W._on_offers, P.IDLE, P.OFFERED),
    (P.OFFERED, ClaimRequested): _row(W._on_claim, P.CLAIMING),
    (P.CLAIMING, ClaimResult): _row(W._on_claim_result, P.CLAIMED, P.OFFERED, P.IDLE),
    (P.CLAIMING, RouteReceived): _row(W._on_route, P.LOADING),
    (P.CLAIMED, RouteReceived): _row(W._on_route, P.LOADING),
    (P.LOADING, RouteReceived): _row(W._on_route, P.LOADING),
    (P.ON_ROUTE, RouteReceived): _row(W._on_route, *_DRIVING),
    (P.AT_STOP, RouteReceived): _row(W._on_route, *_DRIVING),
    (P.LOADING, PackageScanned): _row(W._on_scan, P.LOADING),
    (P.LOADING, LoadingDone): _row(W._on_loading_done, P.ON_ROUTE, P.BLOCK_COMPLETE),
    (P.ON_ROUTE, ArrivedAt): _row(W._on_arrived, P.AT_STOP),
    (P.AT_STOP, ArrivedAt): _row(W._on_arrived, P.AT_STOP),
    (P.AT_STOP, DepartedFrom): _row(W._on_departed, P.ON_ROUTE),
    (P.BLOCK_COMPLETE, DepartedFrom): _row(W._on_departed_after_completion, P.BLOCK_COMPLETE),
    (P.AT_STOP, PhotoChecked): _row(W._on_photo, P.AT_STOP, P.BLOCK_COMPLETE),
    (P.AT_STOP, SignatureCaptured): _row(W._on_signature, P.AT_STOP, P.BLOCK_COMPLETE),
    (P.ON_ROUTE, ExceptionReported): _row(W._on_exception, P.ON_ROUTE, P.BLOCK_COMPLETE),
    (P.AT_STOP, ExceptionReported): _row(W._on_exception, P.AT_STOP, P.BLOCK_COMPLETE),
}
# A block the van works may be taken back by the cloud; meanwhile the station's offers are kept for afterwards.
_WORKING = (P.CLAIMED, P.LOADING, P.ON_ROUTE, P.AT_STOP)
VEHICLE_TABLE.update({(phase, BlockWithdrawn): _row(W._on_withdrawn, P.IDLE, P.OFFERED) for phase in _WORKING})
VEHICLE_TABLE.update({(phase, OffersReceived): _row(W._on_offers_while_busy, phase) for phase in _WORKING})
# The station manifest only names wrong-route scans; it may arrive in any phase.
VEHICLE_TABLE.update({(phase, StationManifest): _row(W._on_station_manifest, phase) for phase in Phase})
VehicleWorkflow.TABLE = VEHICLE_TABLE
