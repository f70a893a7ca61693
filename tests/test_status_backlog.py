"""The dispatcher's status backlog: the newest status per van waits, however fast one van publishes."""
from __future__ import annotations

import asyncio
from pathlib import Path

from cloud_sync.cloud import CloudDb, CloudThread
from cloud_sync.cloud.status_backlog import NewestPerTopic
from cloud_sync.messages import DeviceStatus, Presence
from cloud_sync.topics import FleetTopics
from device.testbench.broker import MosquittoBroker
from tests.helpers.fleet import FLEET, FleetPki
from tests.helpers.sync_harness import RawClient, wait_until

FLOOD = 400
TOPICS = FleetTopics(FLEET)


def test_a_newer_status_takes_the_place_of_the_older_one_in_line() -> None:
    async def scenario() -> list[tuple[str, str]]:
        backlog: NewestPerTopic[str] = NewestPerTopic()
        assert [backlog.put(t, m) for t, m in (("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3"), ("c", "c1"))] \
            == [False, False, True, True, False]
        assert len(backlog) == 3  # one per topic, whatever was put
        got = [await backlog.get() for _ in range(3)]
        waiting = asyncio.create_task(backlog.get())  # an empty backlog waits for the next put
        await asyncio.sleep(0.05)
        assert not waiting.done()
        backlog.put("b", "b2")
        return [*got, await asyncio.wait_for(waiting, 5)]
    assert asyncio.run(scenario()) == [("a", "a3"), ("b", "b1"), ("c", "c1"), ("b", "b2")]


def _stored_depth(db_path: Path) -> object:
    db = CloudDb(db_path)
    try:
        return {view["device"]: view["status"] for view in db.device_view()}.get("van-a", {}).get("outbox_depth")
    finally:
        db.close()


def test_a_van_flooding_statuses_is_stored_newest_last_and_the_cloud_keeps_up(
        tls_broker: MosquittoBroker, fleet: FleetPki, cloud: CloudThread, tmp_path: Path) -> None:
    assert cloud.peer is not None
    counters = cloud.peer.counters
    topic = TOPICS.device("van-a").status
    with RawClient(fleet.broker_settings("van-a", tls_broker.port), "van-a") as van:
        infos = [van.client.publish(topic, DeviceStatus(Presence.ONLINE, "van-a", "1.0", outbox_depth=n).to_payload(),
                                    qos=1) for n in range(FLOOD)]
        wait_until(lambda: all(i.is_published() for i in infos), 60, "every status acked by the broker")
        # The newest is stored, whatever was superseded on the way (other vans' retained statuses count too).
        wait_until(lambda: _stored_depth(tmp_path / "cloud.db") == FLOOD - 1, 60, "the newest status stored")
        van.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # no retained status left behind
    assert counters["statuses"] + counters["statuses_superseded"] >= FLOOD
    assert cloud.running
