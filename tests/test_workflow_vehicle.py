"""The vehicle state machine: every row of its transition table, every rejection, and the delivery rules."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.contract.domain import EventType, Package, Route, Verdict
from device.workflow import (
    ArrivedAt,
    BlockWithdrawn,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    ExceptionReason,
    ExceptionReported,
    Feedback,
    LoadingDone,
    NoticeKind,
    OffersReceived,
    PackageScanned,
    PackageState,
    Phase,
    PhotoChecked,
    RejectReason,
    RouteReceived,
    SignatureCaptured,
    StationManifest,
    VehicleWorkflow,
    restore,
    snapshot,
)
from device.workflow.core import Transition
from device.workflow.inputs import VEHICLE_INPUTS, StageScan
from device.workflow.vehicle import VEHICLE_TABLE
from tests.helpers.workflow import STROKES, FakeClock, block, drive_to, ok, photo, route, stop


def types(outcome) -> list[EventType]:
    return [e.type for e in outcome.events]


# One input of every type, as it would arrive; some are valid in a phase, the rest must be refused.
SAMPLES = [
    OffersReceived((block("B1"), block("B2"))),
    StationManifest({"X9": "B2"}),
    ClaimRequested("B1"),
    ClaimResult("B1", True),
    RouteReceived(route(1)),
    PackageScanned("P1"),
    LoadingDone(),
    ArrivedAt("S1"),
    DepartedFrom("S1"),
    photo("S1"),
    SignatureCaptured("S1", strokes=STROKES),
    ExceptionReported("S1", ExceptionReason.NO_ACCESS),
    BlockWithdrawn("B1"),
]
SAMPLE_BY_TYPE = {type(v): v for v in SAMPLES}
# The input that exercises each table row (where the generic sample is not the right one for that phase).
ROW_INPUTS = {
    (Phase.LOADING, RouteReceived): RouteReceived(route(2)),
    (Phase.ON_ROUTE, RouteReceived): RouteReceived(route(2)),
    (Phase.AT_STOP, RouteReceived): RouteReceived(route(2)),
    (Phase.AT_STOP, ArrivedAt): ArrivedAt("S2"),
    (Phase.BLOCK_COMPLETE, DepartedFrom): DepartedFrom("S3"),
}


def test_every_input_type_has_a_sample() -> None:
    assert set(SAMPLE_BY_TYPE) == set(VEHICLE_INPUTS)


@pytest.mark.parametrize("row", sorted(VEHICLE_TABLE, key=lambda k: (k[0], k[1].__name__)),
                         ids=lambda k: f"{k[0]}-{k[1].__name__}")
def test_every_transition_row(row: tuple[Phase, type]) -> None:
    phase, input_type = row
    wf = drive_to(phase)
    item = ROW_INPUTS.get(row, SAMPLE_BY_TYPE[input_type])
    assert wf.accepts(item)
    outcome = ok(wf.handle(item))
    transition: Transition = VEHICLE_TABLE[row]
    assert Phase(outcome.phase_after) in transition.targets
    assert outcome.phase_before == phase.value and wf.phase.value == outcome.phase_after
    assert all(e.ts == "2026-05-04T08:00:00.000Z" for e in outcome.events)  # the injected clock


WRONG_STATE = [(phase, t) for phase in Phase for t in VEHICLE_INPUTS if (phase, t) not in VEHICLE_TABLE]


@pytest.mark.parametrize("phase,input_type", WRONG_STATE, ids=lambda v: getattr(v, "__name__", str(v)))
def test_inputs_outside_the_table_are_rejected_and_change_nothing(phase: Phase, input_type: type) -> None:
    wf = drive_to(phase)
    before = snapshot(wf)
    outcome = wf.handle(SAMPLE_BY_TYPE[input_type])
    assert outcome.rejection is not None and outcome.rejection.reason is RejectReason.WRONG_STATE
    assert snapshot(wf) == before and wf.phase is phase
    routine = input_type in (OffersReceived, StationManifest, RouteReceived, ArrivedAt, DepartedFrom)
    assert types(outcome) == ([] if routine else [EventType.INPUT_REJECTED])
    if not routine:
        assert outcome.events[0].data["input"] == input_type.__name__


def test_an_input_of_the_other_role_is_invalid() -> None:
    wf = drive_to(Phase.LOADING)
    outcome = wf.handle(StageScan("P1"))
    assert outcome.rejection.reason is RejectReason.INVALID_INPUT
    assert outcome.feedback == (Feedback.REJECTED,)


# --- bad fields: every one is a typed rejection, never an exception -------------------------------------

BAD_INPUTS = [
    (Phase.IDLE, OffersReceived(("not a block",))),
    (Phase.IDLE, OffersReceived(tuple(block(f"B{i}") for i in range(201)))),
    (Phase.IDLE, StationManifest({"P\x00": "B2"})),
    (Phase.IDLE, StationManifest(["P1"])),
    (Phase.OFFERED, ClaimRequested("")),
    (Phase.OFFERED, ClaimRequested("x" * 201)),
    (Phase.OFFERED, ClaimRequested(None)),
    (Phase.CLAIMING, ClaimResult("B1", "yes")),
    (Phase.CLAIMED, RouteReceived({"block_id": "B1"})),
    (Phase.LOADING, PackageScanned("\x1b[2J")),
    (Phase.LOADING, PackageScanned(b"P1")),
    (Phase.ON_ROUTE, ArrivedAt(7)),
    (Phase.AT_STOP, PhotoChecked("S1", (), "match", None, 0.9, "ph", "ab" * 32)),  # verdict not the enum
    (Phase.AT_STOP, PhotoChecked("S1", (), Verdict.MATCH, None, 1.5, "ph", "ab" * 32)),
    (Phase.AT_STOP, PhotoChecked("S1", (), Verdict.MATCH, None, float("nan"), "ph", "ab" * 32)),
    (Phase.AT_STOP, PhotoChecked("S1", (), Verdict.MATCH, None, 0.9, "ph", "XYZ")),
    (Phase.AT_STOP, PhotoChecked("S1", (), Verdict.MATCH, "1" * 50, 0.9, "ph", "ab" * 32)),
    (Phase.AT_STOP, PhotoChecked("S1", "P1", Verdict.MATCH, None, 0.9, "ph", "ab" * 32)),
    (Phase.AT_STOP, PhotoChecked("S1", (), Verdict.MATCH, None, 0.9, "", "ab" * 32)),
    (Phase.AT_STOP, PhotoChecked("S1", (), Verdict.MATCH, None, 0.9, "ph", "ab" * 32, box=(1, 2, 3))),
    (Phase.AT_STOP, PhotoChecked("S1", (), Verdict.MATCH, None, 0.9, "ph", "ab" * 32, box=(1, 2, -3, 4))),
    (Phase.AT_STOP, SignatureCaptured("S1")),  # neither strokes nor image
    (Phase.AT_STOP, SignatureCaptured("S1", strokes=(((1.0, float("inf")),),))),
    (Phase.AT_STOP, SignatureCaptured("S1", strokes=(((1.0, 2.0, 3.0),),))),
    (Phase.AT_STOP, SignatureCaptured("S1", strokes=((),))),
    (Phase.AT_STOP, SignatureCaptured("S1", strokes=(tuple((float(i), 1.0) for i in range(4001)),))),
    (Phase.AT_STOP, ExceptionReported("S1", "no_access")),
    (Phase.AT_STOP, ExceptionReported("S1", ExceptionReason.DAMAGED, note="x" * 501)),
    (Phase.LOADING, BlockWithdrawn("")),
    (Phase.ON_ROUTE, BlockWithdrawn(None)),
    (Phase.LOADING, OffersReceived(("not a block",))),
]


@pytest.mark.parametrize("phase,item", BAD_INPUTS, ids=lambda v: type(v).__name__ if not isinstance(v, Phase)
                         else str(v))
def test_malformed_inputs_are_rejected_with_a_reason(phase: Phase, item: object) -> None:
    wf = drive_to(phase)
    before = snapshot(wf)
    outcome = wf.handle(item)
    assert outcome.rejection is not None and outcome.rejection.reason is RejectReason.INVALID_INPUT, outcome
    assert snapshot(wf) == before
    assert types(outcome) == [EventType.INPUT_REJECTED]


# --- rejections with a domain reason ---------------------------------------------------------------------

REJECTIONS = [
    (Phase.OFFERED, ClaimRequested("B7"), RejectReason.UNKNOWN_BLOCK, True),
    (Phase.CLAIMING, ClaimResult("B2", True), RejectReason.CLAIM_MISMATCH, True),
    (Phase.CLAIMED, RouteReceived(route(1, block_id="B2")), RejectReason.ROUTE_OTHER_BLOCK, True),
    (Phase.CLAIMING, RouteReceived(route(1, block_id="B2")), RejectReason.ROUTE_OTHER_BLOCK, True),
    (Phase.LOADING, RouteReceived(route(1)), RejectReason.STALE_ROUTE, False),
    (Phase.ON_ROUTE, ArrivedAt("S9"), RejectReason.UNKNOWN_STOP, True),
    (Phase.AT_STOP, ArrivedAt("S1"), RejectReason.ALREADY_AT_STOP, False),
    (Phase.AT_STOP, DepartedFrom("S2"), RejectReason.NOT_AT_STOP, False),
    (Phase.AT_STOP, photo("S2"), RejectReason.NOT_AT_STOP, True),
    (Phase.AT_STOP, photo("S1", packages=("P3",)), RejectReason.PACKAGE_NOT_OPEN, True),
    (Phase.AT_STOP, SignatureCaptured("S1", ("P1",), strokes=STROKES), RejectReason.NO_SIGNATURE_NEEDED, True),
    (Phase.AT_STOP, SignatureCaptured("S2", strokes=STROKES), RejectReason.NOT_AT_STOP, True),
    (Phase.AT_STOP, ExceptionReported("S9", ExceptionReason.REFUSED), RejectReason.UNKNOWN_STOP, True),
    (Phase.ON_ROUTE, ExceptionReported("S1", ExceptionReason.REFUSED, ("P3",)), RejectReason.PACKAGE_NOT_OPEN,
     True),
    (Phase.BLOCK_COMPLETE, DepartedFrom("S1"), RejectReason.NOT_AT_STOP, False),
    (Phase.LOADING, BlockWithdrawn("B2"), RejectReason.NOT_CURRENT_BLOCK, True),
    (Phase.AT_STOP, BlockWithdrawn("B2"), RejectReason.NOT_CURRENT_BLOCK, True),
]


@pytest.mark.parametrize("phase,item,reason,recorded", REJECTIONS, ids=lambda v: getattr(v, "value", None)
                         or type(v).__name__)
def test_domain_rejections(phase: Phase, item: object, reason: RejectReason, recorded: bool) -> None:
    wf = drive_to(phase)
    before = snapshot(wf)
    outcome = wf.handle(item)
    assert outcome.rejection is not None and outcome.rejection.reason is reason, outcome
    assert snapshot(wf) == before
    assert types(outcome) == ([EventType.INPUT_REJECTED] if recorded else [])
    assert outcome.notices[0].kind is NoticeKind.REJECTED
    assert wf.rejected == 1


def test_finished_stop_cannot_be_arrived_at_or_excepted_again() -> None:
    wf = drive_to(Phase.ON_ROUTE)
    ok(wf.handle(ExceptionReported("S2", ExceptionReason.NO_ACCESS)))
    assert wf.handle(ArrivedAt("S2")).rejection.reason is RejectReason.STOP_FINISHED
    assert wf.handle(ExceptionReported("S2", ExceptionReason.REFUSED)).rejection.reason is RejectReason.STOP_FINISHED


def test_a_bug_in_a_handler_is_contained() -> None:
    class Broken(VehicleWorkflow):
        def _on_scan(self, step, s, item):  # noqa: ANN001
            s.phase = Phase.ON_ROUTE
            raise KeyError("oops")

    Broken.TABLE = {**VEHICLE_TABLE, (Phase.LOADING, PackageScanned): Transition(Broken._on_scan,
                                                                                 frozenset({Phase.LOADING}))}
    wf = Broken(drive_to(Phase.LOADING).state)
    before = snapshot(wf)
    outcome = wf.handle(PackageScanned("P1"))
    assert outcome.rejection.reason is RejectReason.INTERNAL_ERROR and "KeyError" in outcome.rejection.detail
    assert snapshot(wf) == before


def test_a_handler_landing_outside_its_row_is_refused() -> None:
    class Wrong(VehicleWorkflow):
        pass

    Wrong.TABLE = {**VEHICLE_TABLE, (Phase.LOADING, LoadingDone): Transition(VehicleWorkflow._on_loading_done,
                                                                             frozenset({Phase.LOADING}))}
    wf = Wrong(drive_to(Phase.LOADING).state)
    outcome = wf.handle(LoadingDone())
    assert outcome.rejection.reason is RejectReason.INTERNAL_ERROR and wf.phase is Phase.LOADING


# --- offers and claims ------------------------------------------------------------------------------------


def test_offers_claim_and_win() -> None:
    wf = VehicleWorkflow(clock=FakeClock())
    outcome = ok(wf.handle(OffersReceived((block("B1"), block("B2")))))
    assert wf.phase is Phase.OFFERED and types(outcome) == [EventType.BLOCK_OFFERED]
    assert outcome.notices[0].kind is NoticeKind.OFFERS and len(outcome.notices[0].data["blocks"]) == 2
    # The retained offers arrive again after a reconnect: no new event.
    assert types(ok(wf.handle(OffersReceived((block("B2"), block("B1")))))) == []
    claim = ok(wf.handle(ClaimRequested("B1")))
    assert types(claim) == [EventType.BLOCK_CLAIM_REQUESTED]
    request = claim.requests[0]
    assert request.block_id == "B1" and claim.events[0].data["request_id"] == request.request_id
    won = ok(wf.handle(ClaimResult("B1", True)))
    assert wf.phase is Phase.CLAIMED and types(won) == [EventType.BLOCK_CLAIMED]
    assert won.feedback == (Feedback.CLAIM_WON,) and won.events[0].block == "B1"
    assert wf.state.offers == {} and wf.state.block_id == "B1"


def test_claim_lost_goes_back_to_the_other_offers_then_idle() -> None:
    wf = drive_to(Phase.CLAIMING)
    lost = ok(wf.handle(ClaimResult("B1", False, "taken by van-0002")))
    assert types(lost) == [EventType.BLOCK_CLAIM_LOST] and lost.events[0].data["reason"] == "taken by van-0002"
    assert wf.phase is Phase.OFFERED and set(wf.state.offers) == {"B2"} and lost.feedback == (Feedback.CLAIM_LOST,)
    ok(wf.handle(ClaimRequested("B2")))
    ok(wf.handle(ClaimResult("B2", False, "timeout")))
    assert wf.phase is Phase.IDLE


def test_offers_while_claiming_keep_the_claim() -> None:
    wf = drive_to(Phase.CLAIMING)
    ok(wf.handle(OffersReceived((block("B2"),))))  # B1 gone from the offers: someone claimed it, maybe us
    assert wf.phase is Phase.CLAIMING and wf.state.claim_block == "B1"


def test_empty_offers_mean_idle() -> None:
    wf = drive_to(Phase.OFFERED)
    ok(wf.handle(OffersReceived(())))
    assert wf.phase is Phase.IDLE


def test_a_route_overtaking_the_claim_result_is_the_grant() -> None:
    wf = drive_to(Phase.CLAIMING)
    outcome = ok(wf.handle(RouteReceived(route())))
    assert types(outcome) == [EventType.BLOCK_CLAIMED, EventType.ROUTE_RECEIVED]
    assert outcome.events[0].data["implicit"] is True and wf.phase is Phase.LOADING


# --- a block taken back by the cloud ------------------------------------------------------------------------


def test_a_withdrawal_mid_route_returns_what_the_van_holds_and_frees_it() -> None:
    wf = drive_to(Phase.AT_STOP)  # everything loaded, at S1
    ok(wf.handle(photo("S1")))
    ok(wf.handle(SignatureCaptured("S1", strokes=STROKES)))  # S1 delivered: P1, P2
    ok(wf.handle(DepartedFrom("S1")))
    ok(wf.handle(ArrivedAt("S2")))
    ok(wf.handle(ExceptionReported("S2", ExceptionReason.REFUSED)))  # P3 refused: still in the van
    kept = ok(wf.handle(OffersReceived((block("B1"), block("B7")))))  # the station's offers, kept while driving
    assert types(kept) == [] and kept.notices == () and set(wf.state.offers) == {"B1", "B7"}
    assert wf.phase is Phase.AT_STOP
    outcome = ok(wf.handle(BlockWithdrawn("B1")))
    assert types(outcome) == [EventType.BLOCK_WITHDRAWN]
    event = outcome.events[0]
    assert event.block == "B1" and event.data["phase"] == "at_stop" and event.data["route_version"] == 1
    assert event.data["return_packages"] == ["P3", "P4", "P5"] and event.data["delivered"] == ["P1", "P2"]
    assert event.data["stops_done"] == ["S1", "S2"]
    assert outcome.feedback == (Feedback.ATTENTION,)
    notice = outcome.notices[0]
    assert notice.kind is NoticeKind.BLOCK_WITHDRAWN and notice.data["return_packages"] == ["P3", "P4", "P5"]
    assert "return 3 packages" in notice.text
    assert wf.phase is Phase.OFFERED and wf.state.block_id is None and wf.state.route is None
    assert wf.view()["withdrawn"]["return_packages"] == ["P3", "P4", "P5"] and wf.view()["block"] is None
    # Free to claim again, the same block included; a new grant forgets the withdrawal.
    ok(wf.handle(ClaimRequested("B1")))
    ok(wf.handle(ClaimResult("B1", True)))
    assert wf.phase is Phase.CLAIMED and wf.state.withdrawn is None
    assert restore(snapshot(wf)).state == wf.state


@pytest.mark.parametrize("phase", [Phase.CLAIMED, Phase.LOADING, Phase.ON_ROUTE])
def test_a_withdrawal_before_the_first_stop(phase: Phase) -> None:
    wf = drive_to(phase)
    if phase is Phase.LOADING:
        ok(wf.handle(PackageScanned("P2")))
    outcome = ok(wf.handle(BlockWithdrawn("B1")))
    expected = {Phase.CLAIMED: [], Phase.LOADING: ["P2"], Phase.ON_ROUTE: ["P1", "P2", "P3", "P4", "P5"]}[phase]
    assert outcome.events[0].data["return_packages"] == expected and outcome.events[0].data["delivered"] == []
    assert wf.phase is Phase.IDLE  # the offers it had were cleared by the grant; none came since


@pytest.mark.parametrize("phase", [Phase.IDLE, Phase.OFFERED, Phase.CLAIMING, Phase.BLOCK_COMPLETE])
def test_a_withdrawal_without_a_block_to_give_back_is_refused(phase: Phase) -> None:
    wf = drive_to(phase)
    before = snapshot(wf)
    outcome = wf.handle(BlockWithdrawn("B1"))
    assert outcome.rejection is not None and outcome.rejection.reason is RejectReason.WRONG_STATE
    assert snapshot(wf) == before and types(outcome) == [EventType.INPUT_REJECTED]


# --- loading ----------------------------------------------------------------------------------------------


def test_loading_checks_every_scan_against_the_manifest() -> None:
    wf = drive_to(Phase.LOADING)
    ok(wf.handle(StationManifest({"Q7": "B2"})))
    good = ok(wf.handle(PackageScanned("P1")))
    assert types(good) == [EventType.PACKAGE_SCANNED] and good.feedback == (Feedback.GOOD_SCAN,)
    assert good.events[0].data == {"package": "P1", "loaded": 1, "total": 5} and good.events[0].stop == "S1"
    cases = [("P1", "duplicate", Feedback.DUPLICATE_SCAN), ("Q7", "wrong_route", Feedback.WRONG_PACKAGE),
             ("ZZZ", "unknown", Feedback.WRONG_PACKAGE)]
    for code, reason, feedback in cases:
        outcome = ok(wf.handle(PackageScanned(code)))
        assert types(outcome) == [EventType.PACKAGE_REJECTED] and outcome.events[0].data["reason"] == reason
        assert outcome.feedback == (feedback,) and outcome.notices[0].kind is NoticeKind.SCAN_PROBLEM
    assert wf.handle(PackageScanned("Q7")).events[0].data["other_block"] == "B2"
    assert wf.load_list() == {"P1": "loaded", "P2": "expected", "P3": "expected", "P4": "expected",
                              "P5": "expected"}


def test_missing_at_departure_are_reported_and_their_stops_excepted() -> None:
    wf = drive_to(Phase.LOADING)
    for code in ("P1", "P4"):  # P2 (S1) missing: S1 partial; P3 missing: S2 has nothing; P5 missing at S3
        ok(wf.handle(PackageScanned(code)))
    done = ok(wf.handle(LoadingDone()))
    assert types(done) == [EventType.PACKAGES_MISSING, EventType.LOADING_COMPLETE, EventType.DELIVERY_EXCEPTION,
                           EventType.STOP_COMPLETED]
    assert done.events[0].data == {"packages": ["P2", "P3", "P5"], "count": 3}
    assert done.events[2].data == {"reason": "not_loaded", "packages": ["P3"]} and done.events[2].stop == "S2"
    assert Feedback.ATTENTION in done.feedback and Feedback.LOADING_COMPLETE in done.feedback
    assert wf.phase is Phase.ON_ROUTE and wf.next_stop().id == "S1"
    assert [n.kind for n in done.notices][-1] is NoticeKind.NEXT_STOP
    ok(wf.handle(ArrivedAt("S1")))
    at_s1 = ok(wf.handle(photo("S1")))  # only P1 is in the van; P2 becomes a not_loaded exception
    assert types(at_s1) == [EventType.PHOTO_CHECKED, EventType.DELIVERY_PROOF, EventType.DELIVERY_EXCEPTION,
                            EventType.STOP_COMPLETED]
    assert at_s1.events[3].data["outcome"] == "partial"


def test_loading_nothing_completes_the_block_with_every_stop_excepted() -> None:
    wf = drive_to(Phase.LOADING)
    done = ok(wf.handle(LoadingDone()))
    assert wf.phase is Phase.BLOCK_COMPLETE and types(done)[-1] is EventType.BLOCK_COMPLETED
    summary = wf.summary()
    assert summary.delivered == 0 and summary.exceptions == 5 and summary.exceptions_by_reason == {"not_loaded": 5}
    assert summary.stops_excepted == 3 and summary.on_time_rate is None


# --- the drive and proofs ---------------------------------------------------------------------------------


def test_arrival_gives_the_stop_instructions() -> None:
    wf = drive_to(Phase.ON_ROUTE)
    outcome = ok(wf.handle(ArrivedAt("S2")))
    assert types(outcome) == [EventType.STOP_ARRIVED] and outcome.feedback == (Feedback.ARRIVED,)
    assert outcome.events[0].data == {"in_order": False, "expected_stop": "S1", "packages": ["P3"]}
    notice = outcome.notices[0]
    assert notice.kind is NoticeKind.STOP_INSTRUCTIONS
    assert notice.data["packages"] == [{"id": "P3", "instruction": "access_code", "signature_required": False,
                                        "access_code": "4321"}]


def test_photo_mismatch_is_never_delivered_then_retake_matches() -> None:
    wf = drive_to(Phase.ON_ROUTE)
    ok(wf.handle(ArrivedAt("S3")))
    wrong = ok(wf.handle(PhotoChecked("S3", (), Verdict.MISMATCH, "17", 0.88, "ph-1", "ab" * 32, (40, 60, 32, 48))))
    assert types(wrong) == [EventType.PHOTO_CHECKED] and wrong.feedback == (Feedback.WRONG_HOUSE,)
    assert wrong.events[0].data["expected"] == "7" and wrong.events[0].data["read"] == "17"
    assert wrong.events[0].data["box"] == [40, 60, 32, 48]
    assert wrong.notices[0].kind is NoticeKind.RETAKE_PHOTO
    blurry = ok(wf.handle(photo("S3", Verdict.UNREADABLE, photo_id="ph-2")))
    assert blurry.feedback == (Feedback.RETAKE_PHOTO,) and types(blurry) == [EventType.PHOTO_CHECKED]
    assert wf.state.packages["P4"] is PackageState.LOADED
    good = ok(wf.handle(photo("S3", read="7", photo_id="ph-3")))
    assert types(good) == [EventType.PHOTO_CHECKED, EventType.DELIVERY_PROOF, EventType.STOP_COMPLETED]
    proof = good.events[1].data
    assert proof["packages"] == ["P4", "P5"] and proof["photo_id"] == "ph-3" and proof["sha256"] == "ab" * 32
    assert Feedback.DELIVERED in good.feedback
    assert wf.state.verdicts == {"mismatch": 1, "unreadable": 1, "match": 1}


@pytest.mark.parametrize("signature_first", [False, True])
def test_signature_required_packages_need_both_proofs(signature_first: bool) -> None:
    wf = drive_to(Phase.AT_STOP)
    if signature_first:
        signed = ok(wf.handle(SignatureCaptured("S1", strokes=STROKES)))
        assert types(signed) == [EventType.SIGNATURE_CAPTURED] and signed.feedback == (Feedback.OK,)
        assert signed.events[0].data["strokes"] == [[[10.0, 10.0], [20.0, 15.0], [30.0, 12.0]],
                                                    [[12.0, 30.0], [28.0, 30.0]]]
        both = ok(wf.handle(photo("S1")))
        assert types(both) == [EventType.PHOTO_CHECKED, EventType.DELIVERY_PROOF, EventType.STOP_COMPLETED]
        assert both.events[1].data["signatures"] == {"P2": signed.events[0].id}
    else:
        pictured = ok(wf.handle(photo("S1")))
        assert types(pictured) == [EventType.PHOTO_CHECKED, EventType.DELIVERY_PROOF]
        assert pictured.events[1].data["packages"] == ["P1"]
        assert Feedback.SIGNATURE_NEEDED in pictured.feedback
        assert [n.kind for n in pictured.notices] == [NoticeKind.DELIVERED, NoticeKind.SIGNATURE_NEEDED]
        signed = ok(wf.handle(SignatureCaptured("S1", image_ref="sig-1")))
        assert types(signed) == [EventType.SIGNATURE_CAPTURED, EventType.DELIVERY_PROOF, EventType.STOP_COMPLETED]
        assert signed.events[0].data == {"packages": ["P2"], "image_ref": "sig-1"}
        assert signed.feedback == (Feedback.DELIVERED,)
    assert wf.state.packages["P2"] is PackageState.DELIVERED and wf.state.stops["S1"].done


@pytest.mark.parametrize("reason", list(ExceptionReason))
def test_every_exception_reason(reason: ExceptionReason) -> None:
    wf = drive_to(Phase.AT_STOP)
    outcome = ok(wf.handle(ExceptionReported("S1", reason, ("P2",), note="dog")))
    assert types(outcome) == [EventType.DELIVERY_EXCEPTION]
    assert outcome.events[0].data == {"reason": reason.value, "packages": ["P2"], "note": "dog"}
    assert outcome.feedback == (Feedback.EXCEPTION_RECORDED,)
    finish = ok(wf.handle(photo("S1")))
    assert types(finish)[-1] is EventType.STOP_COMPLETED and finish.events[-1].data["outcome"] == "partial"
    assert wf.state.exceptions == {reason.value: 1}


def test_exception_from_the_road_and_for_a_whole_stop() -> None:
    wf = drive_to(Phase.ON_ROUTE)
    outcome = ok(wf.handle(ExceptionReported("S2", ExceptionReason.UNSAFE)))
    assert types(outcome) == [EventType.DELIVERY_EXCEPTION, EventType.STOP_COMPLETED]
    assert outcome.events[1].data["outcome"] == "exception" and wf.phase is Phase.ON_ROUTE


def test_leaving_a_stop_with_open_packages_is_flagged_and_it_stays_open() -> None:
    wf = drive_to(Phase.AT_STOP)
    left = ok(wf.handle(DepartedFrom("S1")))
    assert types(left) == [EventType.STOP_DEPARTED] and left.events[0].data["open_packages"] == ["P1", "P2"]
    assert Feedback.ATTENTION in left.feedback and wf.phase is Phase.ON_ROUTE
    assert [n.kind for n in left.notices] == [NoticeKind.STOP_LEFT_OPEN, NoticeKind.NEXT_STOP]
    ok(wf.handle(ArrivedAt("S1")))  # come back
    assert wf.phase is Phase.AT_STOP


def test_overlapping_geofences_depart_implicitly() -> None:
    wf = drive_to(Phase.AT_STOP)
    outcome = ok(wf.handle(ArrivedAt("S2")))
    assert types(outcome) == [EventType.STOP_DEPARTED, EventType.STOP_ARRIVED]
    assert outcome.events[0].stop == "S1" and outcome.events[0].data["implicit"] is True


def test_full_block_with_summary_and_on_time_rate() -> None:
    clock = FakeClock()
    wf = drive_to(Phase.ON_ROUTE, clock)
    clock.advance(30)
    ok(wf.handle(ArrivedAt("S1")))
    ok(wf.handle(photo("S1", read="12")))
    ok(wf.handle(SignatureCaptured("S1", strokes=STROKES)))  # S1 done at +30 min: window +60, on time
    ok(wf.handle(DepartedFrom("S1")))
    clock.advance(70)  # +100 min: S2's window was +90: late
    ok(wf.handle(ArrivedAt("S2")))
    ok(wf.handle(photo("S2", Verdict.MISMATCH, read="41")))
    ok(wf.handle(photo("S2", read="14", photo_id="ph-2")))
    ok(wf.handle(DepartedFrom("S2")))
    ok(wf.handle(ArrivedAt("S3")))
    ok(wf.handle(ExceptionReported("S3", ExceptionReason.REFUSED, ("P5",))))
    last = ok(wf.handle(photo("S3", packages=("P4",), photo_id="ph-3")))
    assert wf.phase is Phase.BLOCK_COMPLETE and types(last)[-1] is EventType.BLOCK_COMPLETED
    assert last.feedback[-1] is Feedback.BLOCK_COMPLETE
    summary = last.events[-1].data
    assert summary["stops"] == 3 and summary["stops_delivered"] == 2 and summary["stops_partial"] == 1
    assert summary["packages"] == 5 and summary["delivered"] == 4 and summary["exceptions"] == 1
    assert summary["exceptions_by_reason"] == {"refused": 1}
    assert summary["timed_stops"] == 2 and summary["on_time_stops"] == 1 and summary["on_time_rate"] == 0.5
    assert summary["photo_checks"] == {"match": 3, "mismatch": 1}
    assert last.notices[-1].kind is NoticeKind.BLOCK_SUMMARY and "4/5 packages delivered" in last.notices[-1].text
    departed = ok(wf.handle(DepartedFrom("S3")))  # the geofence still reports leaving the last stop
    assert types(departed) == [EventType.STOP_DEPARTED] and wf.phase is Phase.BLOCK_COMPLETE
    # The next shift: new offers start from a clean slate.
    ok(wf.handle(OffersReceived((block("B3"),))))
    assert wf.phase is Phase.OFFERED and wf.state.block_id is None and wf.state.packages == {}


# --- route revisions --------------------------------------------------------------------------------------


def revised(version: int) -> Route:
    """v2: S1 finished stays (its packages changed), S2 dropped, S3 kept, S4 added (its package P6 not loaded),
    P5 moves from S3 to S4."""
    old = route()
    s1 = stop("S1", "12", (Package("P1"),))
    s3 = stop("S3", "7", old.stops[2].packages[:1], window_min=None)
    s4 = stop("S4", "9", (Package("P5"), Package("P6")), window_min=240)
    return Route("B1", version, (s1, s3, s4))


def test_route_revision_mid_drive_keeps_finished_stops_and_reports_removed_ones() -> None:
    wf = drive_to(Phase.AT_STOP)
    ok(wf.handle(photo("S1")))
    ok(wf.handle(SignatureCaptured("S1", strokes=STROKES)))
    assert wf.state.stops["S1"].done
    ok(wf.handle(DepartedFrom("S1")))
    ok(wf.handle(ArrivedAt("S2")))  # the van is at S2 when the revision drops it
    outcome = ok(wf.handle(RouteReceived(revised(2))))
    data = outcome.events[0].data
    assert outcome.events[0].type is EventType.ROUTE_REVISED
    assert data["removed_stops"] == ["S2"] and data["added_stops"] == ["S4"] and data["kept_finished"] == ["S1"]
    assert data["return_packages"] == ["P3"] and data["not_loaded"] == ["P6"]
    assert Feedback.ATTENTION in outcome.feedback and wf.phase is Phase.ON_ROUTE and wf.state.current_stop is None
    assert wf.state.stops["S1"].done and wf.state.packages["P2"] is PackageState.DELIVERED  # still delivered
    assert wf.state.packages["P3"] is PackageState.REMOVED and wf.state.packages["P5"] is PackageState.LOADED
    assert wf.next_stop().id == "S3"
    # An old version re-delivered (retained message after a reconnect) is ignored quietly.
    stale = wf.handle(RouteReceived(route(1)))
    assert stale.rejection.reason is RejectReason.STALE_ROUTE and stale.events == ()
    ok(wf.handle(ArrivedAt("S3")))
    ok(wf.handle(photo("S3")))
    ok(wf.handle(DepartedFrom("S3")))
    ok(wf.handle(ArrivedAt("S4")))
    last = ok(wf.handle(photo("S4")))  # P5 delivered, P6 was never in the van
    assert wf.phase is Phase.BLOCK_COMPLETE
    summary = last.events[-1].data
    assert summary["stops"] == 3 and summary["stops_removed"] == 1 and summary["packages_removed"] == 1
    assert summary["delivered"] == 4 and summary["exceptions_by_reason"] == {"not_loaded": 1}
    assert summary["route_version"] == 2


def test_revision_during_loading_changes_the_manifest() -> None:
    wf = drive_to(Phase.LOADING)
    ok(wf.handle(PackageScanned("P3")))
    ok(wf.handle(RouteReceived(revised(2))))
    assert wf.phase is Phase.LOADING
    assert wf.load_list() == {"P1": "expected", "P4": "expected", "P5": "expected", "P6": "expected"}
    outcome = ok(wf.handle(PackageScanned("P3")))  # loaded before, now off the route
    assert outcome.events[0].data["reason"] == "not_on_route" and outcome.feedback == (Feedback.WRONG_PACKAGE,)
    assert ok(wf.handle(PackageScanned("P6"))).feedback == (Feedback.GOOD_SCAN,)


def test_revision_that_removes_every_open_stop_completes_the_block() -> None:
    wf = drive_to(Phase.ON_ROUTE)
    ok(wf.handle(ExceptionReported("S1", ExceptionReason.NO_ACCESS)))
    only_s1 = Route("B1", 2, (route().stops[0],))
    outcome = ok(wf.handle(RouteReceived(only_s1)))
    assert wf.phase is Phase.BLOCK_COMPLETE and types(outcome) == [EventType.ROUTE_REVISED,
                                                                   EventType.BLOCK_COMPLETED]


# --- snapshots --------------------------------------------------------------------------------------------


def test_snapshot_round_trips_in_every_phase() -> None:
    for phase in Phase:
        wf = drive_to(phase)
        copy = restore(snapshot(wf))
        assert isinstance(copy, VehicleWorkflow) and copy.phase is phase
        assert snapshot(copy) == snapshot(wf) and copy.state == wf.state


# --- random input sequences: no exception, invariants hold ---------------------------------------------------

POOL = [
    *SAMPLES, ClaimRequested("B2"), ClaimResult("B1", False, "taken"), ClaimResult("B2", True),
    RouteReceived(route(2)), RouteReceived(route(3)), RouteReceived(route(1, block_id="B2")),
    *[PackageScanned(c) for c in ("P2", "P3", "P4", "P5", "X9", "??")],
    ArrivedAt("S2"), ArrivedAt("S3"), DepartedFrom("S2"), DepartedFrom("S3"),
    photo("S1", Verdict.MISMATCH, read="21"), photo("S2"), photo("S2", Verdict.UNREADABLE), photo("S3"),
    photo("S3", Verdict.MISMATCH, read="1"), photo("S3", packages=("P4",)),
    SignatureCaptured("S1", image_ref="sig"), ExceptionReported("S3", ExceptionReason.DAMAGED, ("P5",)),
    ExceptionReported("S2", ExceptionReason.REFUSED), OffersReceived(()), StageScan("P1"), BlockWithdrawn("B2"),
]


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(list(Phase)), st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=60))
def test_random_input_sequences_keep_the_invariants(start: Phase, indexes: list[int]) -> None:
    clock = FakeClock()
    wf = drive_to(start, clock)
    matched = {p for p, proof in wf.state.photo_proofs.items()}  # packages that had a matching photo
    finished = {s for s, rec in wf.state.stops.items() if rec.done}
    for index in indexes:
        item = POOL[index]
        before = wf.phase
        outcome = wf.handle(item)  # never raises
        clock.advance(1)
        if outcome.accepted:
            assert Phase(outcome.phase_after) in VEHICLE_TABLE[(before, type(item))].targets
        else:
            assert wf.phase is before
        if wf.state.block_id is None:
            matched.clear()
            finished.clear()
        for event in outcome.events:
            if event.type is EventType.PHOTO_CHECKED and event.data["verdict"] == "match":
                matched.update(event.data["packages"])
            if event.type is EventType.DELIVERY_PROOF:  # never delivered without a matching photo
                assert set(event.data["packages"]) <= matched
        now_finished = {s for s, rec in wf.state.stops.items() if rec.done}
        assert finished <= now_finished  # finished stays finished, revisions included
        finished = now_finished
        assert restore(snapshot(wf)).state == wf.state


def test_view_has_what_the_console_shows() -> None:
    wf = drive_to(Phase.LOADING)
    ok(wf.handle(PackageScanned("P1")))
    ok(wf.handle(PackageScanned("NOT-OURS")))
    view = wf.view()
    assert view["phase"] == "loading" and view["block"] == "B1" and view["route_version"] == 1
    assert view["load"]["packages"]["P1"] == "loaded" and view["load"]["extra"] == {"NOT-OURS": "unknown"}
    wf = drive_to(Phase.AT_STOP)
    ok(wf.handle(photo("S1")))
    view = wf.view()
    assert view["current_stop"] == "S1" and view["next_stop"] == "S1" and view["awaiting_signature"] == ["P2"]
    assert [p["state"] for p in view["stops"][0]["packages"]] == ["delivered", "loaded"]
    assert drive_to(Phase.BLOCK_COMPLETE).view()["summary"]["stops"] == 3
