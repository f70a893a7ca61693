"""The fleet load bench's simulated van (device.testbench.van_swarm) against a real mutual-TLS mosquitto and the real
cloud: a claim that got no answer is asked again after the device's claim timeout, without waiting for a
reconnect."""
from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from device.contract.domain import Block, Package, Route, Stop
from device.testbench.broker import MosquittoBroker
from device.testbench.van_swarm import SwarmSettings, Van, VanPlan
from tests.helpers.fleet import FLEET, STATION, FleetPki
from tests.helpers.sync_harness import start_cloud, wait_for

VAN = "van-swarm"  # its own: a sim device may hold the retained route of a block won in another test


def test_a_claim_unanswered_for_the_claim_timeout_is_asked_again(tls_broker: MosquittoBroker, fleet: FleetPki,
                                                                  tmp_path: Path) -> None:
    """The cloud offers a block and goes down; the van claims it, and the claim reaches no one. The cloud is back
    soon after. On its one connection, the van asks again once `claim_timeout_s` has passed, gets the block and its
    route, and its events are all acked."""
    db = tmp_path / "cloud.db"
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    block = Block("B-SWARM", STATION, start, start + timedelta(hours=3))
    route = Route(block.id, 1, (Stop("S1", "1 Main St", "1", 47.6, -122.3, (Package("P1"),)),))
    offering = start_cloud(fleet, tls_broker.port, db, workers=1)
    try:
        assert offering.peer is not None
        offering.call(offering.peer.add_blocks([(block, route)]))  # offers retained on the broker
    finally:
        offering.stop()
    settings = SwarmSettings(FLEET, seconds=2.0, ack_timeout_s=1.0, claim_timeout_s=3.0, drain_timeout_s=60.0)
    go = asyncio.Event()
    van = Van(VanPlan(VAN, STATION, fleet.broker_settings(VAN, tls_broker.port)), settings, fleet.verifier, go,
              random.Random(1))
    clouds = []

    async def scenario() -> None:
        running = asyncio.create_task(van.run(asyncio.Semaphore(1)))
        try:
            await asyncio.wait_for(van.connected.wait(), 20)
            go.set()
            await wait_for(lambda: van.report.claim_asks, 10, "the claim asked, with no cloud to answer it")
            clouds.append(await asyncio.to_thread(start_cloud, fleet, tls_broker.port, db, workers=1))
            await asyncio.wait_for(van.finished.wait(), 60)
        finally:
            van.halt()
            running.cancel()
            await asyncio.wait({running}, timeout=10)

    try:
        asyncio.run(scenario())
    finally:
        for cloud in clouds:
            cloud.stop()
    report = van.report
    assert report.drained and report.connects == 1 and report.claims_republished == 0
    assert report.claims_reasked >= 1
    [(request_id, answers)] = report.claims.items()
    assert report.claimed_blocks[request_id] == block.id
    assert answers[0] == "granted" and len(answers) <= report.claim_asks[request_id]
    assert report.route_blocks == {block.id} and not report.routes_missing()
    assert report.acked == report.produced > 0
