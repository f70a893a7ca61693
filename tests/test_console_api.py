"""The console's HTTP API against a real Agent on a real EventStore: access, CSRF, bad requests, the actions."""
from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from device.agent import Agent
from device.console.api import COOKIE, REQUEST_HEADER, TOKEN_HEADER, ConsoleApp, build_app
from device.console.pairing import Pairing, PairingError, PairingSettings
from device.contract.domain import Role
from device.workflow import (
    ArrivedAt,
    ClaimRequested,
    LoadingDone,
    OffersReceived,
    PackageScanned,
    RouteReceived,
    StagingPlanReceived,
)
from tests.helpers.console import build_agent, camera_photo_taker, console_block, console_plan, console_route

POST = {REQUEST_HEADER: "test"}


@contextlib.asynccontextmanager
async def console(tmp_path: Path, role: Role = Role.VEHICLE, camera: bool = True
                  ) -> AsyncIterator[tuple[TestClient, Agent, Pairing]]:
    take_photo, close_camera, _ = camera_photo_taker(tmp_path) if camera else (None, None, None)
    agent = await build_agent(tmp_path, role, take_photo)
    pairing = Pairing(tmp_path, PairingSettings(max_attempts=3))
    client = TestClient(TestServer(build_app(ConsoleApp(agent, pairing, state_interval_s=0.2))))
    await client.start_server()
    try:
        yield client, agent, pairing
    finally:
        await client.close()
        agent.store.close()
        if close_camera is not None:
            close_camera()


async def paired(client: TestClient, pairing: Pairing) -> dict[str, str]:
    """Pair through the API; the headers an API caller (not a browser) uses afterwards."""
    code = pairing.new_code()
    r = await client.post("/api/pair", json={"code": code}, headers=POST)
    assert r.status == 200, await r.text()
    token = (await r.json())["token"]
    cookie = r.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    return {TOKEN_HEADER: token, **POST}


async def on_route(agent: Agent) -> None:
    """The cloud's part, fed as the cloud link would: offers, then the route right after the claim."""
    await agent.submit(OffersReceived((console_block(),)))
    await agent.submit(ClaimRequested("B-NORTH"))
    await agent.submit(RouteReceived(console_route()))  # the route before the claim answer: an implicit grant


def run(coro) -> None:
    asyncio.run(coro)


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/view"), ("GET", "/api/events"), ("GET", "/api/photo/x"), ("POST", "/api/claim"),
    ("POST", "/api/loading-done"), ("POST", "/api/photo"), ("POST", "/api/signature"), ("POST", "/api/exception"),
    ("POST", "/api/scan"), ("POST", "/api/arrive"),
])
def test_unpaired_and_wrong_token_get_401(tmp_path: Path, method: str, path: str) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, agent, pairing):
            await paired(client, pairing)  # a token exists: a wrong one must still fail
            client.session.cookie_jar.clear()
            for headers in (POST, {**POST, TOKEN_HEADER: "not-the-token"}):
                r = await client.request(method, path, headers=headers, json={"block_id": "B-NORTH"})
                assert r.status == 401, (headers, await r.text())
                assert "pairing code" in (await r.json())["error"]
            client.session.cookie_jar.update_cookies({COOKIE: "forged"})
            r = await client.request(method, path, headers=POST, json={})
            assert r.status == 401
            assert agent.counters.inputs == 0  # nothing reached the workflow
    run(scenario())


def test_pairing_code_single_use_burnt_after_wrong_guesses(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, _, pairing):
            code = pairing.new_code()
            r = await client.post("/api/pair", json={"code": code}, headers=POST)
            assert r.status == 200
            r = await client.post("/api/pair", json={"code": code}, headers=POST)
            assert r.status == 401  # single use
            code = pairing.new_code()
            wrong = "000000" if code != "000000" else "111111"
            for _ in range(3):
                r = await client.post("/api/pair", json={"code": wrong}, headers=POST)
                assert r.status == 401
            r = await client.post("/api/pair", json={"code": code}, headers=POST)
            assert r.status == 401  # burnt after three wrong guesses
            with pytest.raises(PairingError):
                pairing.pair(code)
            # The cookie from the first pairing works; the token file holds no usable token.
            r = await client.get("/api/view")
            assert r.status == 200
            r = await client.post("/api/pair", json={"code": 123456}, headers=POST)
            assert r.status == 400
    run(scenario())


def test_pairing_code_shown_to_the_device_screen_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, _, pairing):
            r = await client.get("/api/pairing-code")  # the test client is a loopback client, like the cab screen
            assert r.status == 200
            code = (await r.json())["code"]
            assert len(code) == 6 and code.isdigit()
            assert pairing.pair(code)
    run(scenario())


def test_foreign_host_name_refused(tmp_path: Path) -> None:
    """A DNS-rebinding page (evil.example resolving to this address) can neither read the code nor act."""
    async def scenario() -> None:
        async with console(tmp_path) as (client, _, pairing):
            headers = await paired(client, pairing)
            for method, path in (("GET", "/api/pairing-code"), ("GET", "/api/view"), ("POST", "/api/loading-done")):
                r = await client.request(method, path, headers={**headers, "Host": "evil.example:8080"})
                assert r.status == 403 and "not this console" in (await r.json())["error"]
            for host in ("localhost:8080", "[::1]:8080", "10.0.0.5"):
                r = await client.get("/api/view", headers={**headers, "Host": host})
                assert r.status == 200, host
    run(scenario())


def test_csrf_header_and_origin_required_on_posts(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, agent, pairing):
            headers = await paired(client, pairing)
            await agent.submit(OffersReceived((console_block(),)))
            before = agent.counters.inputs
            # A cross-site form post carries the cookie but cannot add the header.
            r = await client.post("/api/claim", json={"block_id": "B-NORTH"})
            assert r.status == 403 and REQUEST_HEADER in (await r.json())["error"]
            r = await client.post("/api/claim", json={"block_id": "B-NORTH"},
                                  headers={**headers, "Origin": "http://evil.example"})
            assert r.status == 403 and "cross-origin" in (await r.json())["error"]
            assert agent.counters.inputs == before
            own = f"http://{client.host}:{client.port}"
            r = await client.post("/api/claim", json={"block_id": "B-NORTH"}, headers={**headers, "Origin": own})
            assert r.status == 200, await r.text()
    run(scenario())


@pytest.mark.parametrize("path,body", [
    ("/api/claim", b"{not json"),
    ("/api/claim", b"[1, 2]"),
    ("/api/claim", b'{"block_id": 7}'),
    ("/api/claim", b'{"block_id": ""}'),
    ("/api/claim", json.dumps({"block_id": "x" * 500}).encode()),
    ("/api/claim", b"\xff\xfe garbage"),
    ("/api/signature", b'{"strokes": "abc"}'),
    ("/api/signature", b'{"strokes": [[[1, "a"]]]}'),
    ("/api/signature", b'{"strokes": [[[1, 2, 3]]]}'),
    ("/api/signature", b'{"strokes": []}'),
    ("/api/signature", b'{"strokes": [[[1, 2]]], "package_ids": "PKG-002"}'),
    ("/api/exception", b'{"reason": "bored"}'),
    ("/api/exception", b'{"reason": "refused", "note": 5}'),
    ("/api/arrive", b'{}'),
    ("/api/scan", b'{"code": null}'),
])
def test_malformed_requests_get_400_with_a_message(tmp_path: Path, path: str, body: bytes) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, agent, pairing):
            headers = await paired(client, pairing)
            await on_route(agent)
            for code in console_route().manifest():
                await agent.scan(code)
            await agent.submit(LoadingDone())
            assert (await agent.submit(ArrivedAt("S1"))).accepted
            r = await client.post(path, data=body, headers={**headers, "Content-Type": "application/json"})
            assert r.status == 400, await r.text()
            assert (await r.json())["error"]
    run(scenario())


def test_oversized_body_and_unknown_paths_are_4xx(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, _, pairing):
            headers = await paired(client, pairing)
            r = await client.post("/api/signature", data=b"[" * (300 * 1024), headers=headers)
            assert r.status == 413
            for path in ("/api/nothing", "/static/../../setup.py", "/static/.hidden", "/api/photo/nope"):
                r = await client.get(path, headers=headers)
                assert r.status == 404, path
                assert (await r.json())["error"]
            r = await client.get("/api/photo/" + "x" * 200, headers=headers)
            assert r.status == 400
    run(scenario())


async def _raw_request(client: TestClient, head: bytes, body: bytes = b"") -> int:
    """One HTTP/1.1 request written byte for byte (an HTTP library would encode the bytes we want to send)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


def test_hostile_pairing_and_token_inputs_are_4xx_not_500(tmp_path: Path) -> None:
    """Issue 15, finding 8: a non-ASCII code, a 0xFF byte in the token header and deep-nested JSON on the
    pairing endpoint get a 4xx answer and a counted bad request; the console keeps serving."""
    async def scenario() -> None:
        async with console(tmp_path) as (client, _, pairing):
            pairing.new_code()
            r = await client.post("/api/pair", json={"code": "１２３４５６"}, headers=POST)  # fullwidth digits
            assert r.status == 401, await r.text()
            r = await client.post("/api/pair", data=b'{"code":' * 5000, headers=POST)
            assert r.status == 400, await r.text()
            r = await client.post("/api/pair", data=b"[" * 100_000 + b"]" * 100_000, headers=POST)
            assert r.status in (400, 413), await r.text()
            host = f"{client.server.host}:{client.server.port}".encode()
            status = await _raw_request(client, b"GET /api/view HTTP/1.1\r\nHost: " + host + b"\r\n"
                                        + TOKEN_HEADER.encode() + b": abc\xff\xfedef\r\n")
            assert status == 401
            status = await _raw_request(client, b"GET /api/view HTTP/1.1\r\nHost: " + host + b"\r\n"
                                        b"Cookie: " + COOKIE.encode() + b"=\xff\r\n")
            assert status == 401
            headers = await paired(client, pairing)  # and it still pairs and serves
            assert (await client.get("/api/view", headers=headers)).status == 200
    run(scenario())


def test_page_served_with_security_headers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, _, _):
            r = await client.get("/")
            assert r.status == 200 and "Flex Edge" in await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
            for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
                r = await client.get(f"/static/{name}")
                assert r.status == 200 and r.content_type == kind
    run(scenario())


def test_claim_offline_is_refused_by_the_workflow_path(tmp_path: Path) -> None:
    """Without a cloud link the agent answers the claim itself: lost, with the reason, shown in the view."""
    async def scenario() -> None:
        async with console(tmp_path) as (client, agent, pairing):
            headers = await paired(client, pairing)
            await agent.submit(OffersReceived((console_block(),)))
            r = await client.post("/api/claim", json={"block_id": "NOPE"}, headers=headers)
            assert r.status == 409
            assert (await r.json())["rejection"]["reason"] == "unknown_block"
            queue = agent.subscribe()
            r = await client.post("/api/claim", json={"block_id": "B-NORTH"}, headers=headers)
            assert r.status == 200 and (await r.json())["phase"] == "claiming"
            while (notice := await asyncio.wait_for(queue.get(), 5)).data.get("state") != "lost":
                pass
            assert "no cloud link" in notice.text
            view = await (await client.get("/api/view", headers=headers)).json()
            assert view["view"]["phase"] == "idle"
            assert view["sync"] == {"configured": False, "online": False, "outbox_depth": view["sync"]["outbox_depth"],
                                    "oldest_pending_age_s": view["sync"]["oldest_pending_age_s"]}
            assert view["sync"]["outbox_depth"] >= 3  # offered, claim requested, claim lost: nothing acked
    run(scenario())


def test_delivery_through_the_api(tmp_path: Path) -> None:
    """Load, arrive, photo (verdict + box + the JPEG), signature, exception, summary: all through the API."""
    async def scenario() -> None:
        async with console(tmp_path) as (client, agent, pairing):
            headers = await paired(client, pairing)
            await on_route(agent)
            for code in ("PKG-001", "PKG-002", "PKG-003", "WRONG-9"):
                await agent.scan(code)
            view = await (await client.get("/api/view", headers=headers)).json()
            assert view["view"]["load"] == {"packages": {"PKG-001": "loaded", "PKG-002": "loaded",
                                                         "PKG-003": "loaded", "PKG-004": "expected"},
                                            "extra": {"WRONG-9": "unknown"}}
            r = await client.post("/api/loading-done", headers=headers)
            doc = await r.json()
            assert r.status == 200 and doc["phase"] == "on_route"
            assert [n["kind"] for n in doc["notices"]][0] == "missing_packages"
            view = await (await client.get("/api/view", headers=headers)).json()
            assert view["next_stop"] == {"id": "S1", "distance_m": None, "eta_s": None, "bearing": None}
            r = await client.post("/api/photo", headers=headers)
            assert r.status == 409 and "not at a stop" in (await r.json())["error"]
            r = await client.post("/api/arrive", json={"stop_id": "S1"}, headers=headers)
            assert r.status == 200 and (await r.json())["phase"] == "at_stop"
            r = await client.post("/api/photo", headers=headers)
            doc = await r.json()
            assert r.status == 200, doc
            checked = next(e for e in doc["events"] if e["type"] == "photo.checked")
            assert checked["data"]["verdict"] == "match" and checked["data"]["read"] == "12A"
            assert len(checked["data"]["box"]) == 4
            r = await client.get(f"/api/photo/{checked['data']['photo_id']}", headers=headers)
            assert r.status == 200 and r.content_type == "image/jpeg" and (await r.read())[:2] == b"\xff\xd8"
            r = await client.post("/api/signature", json={"strokes": [[[1, 2], [30, 40]], [[5, 5], [9, 9]]]},
                                  headers=headers)
            doc = await r.json()
            assert r.status == 200, doc
            assert "delivery.signature" in [e["type"] for e in doc["events"]]
            r = await client.post("/api/signature", json={"strokes": [[[1, 2], [3, 4]]]}, headers=headers)
            assert r.status == 409  # the workflow refuses: the stop is finished
            await agent.submit(ArrivedAt("S2"))
            r = await client.post("/api/exception", json={"reason": "no_access", "note": "gate locked"},
                                  headers=headers)
            assert r.status == 200
            view = await (await client.get("/api/view", headers=headers)).json()
            assert view["view"]["phase"] == "block_complete", view["view"]["phase"]
            summary = view["block_summary"]
            assert (summary["delivered"], summary["exceptions"], summary["photo_checks"]) == (2, 2, {"match": 1})
    run(scenario())


def test_events_stream_sends_state_and_notices(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console(tmp_path) as (client, agent, pairing):
            headers = await paired(client, pairing)
            await on_route(agent)
            r = await client.get("/api/events", headers=headers)
            assert r.status == 200 and r.content_type == "text/event-stream"
            await agent.submit(PackageScanned("PKG-001"))
            seen: list[tuple[str, dict]] = []
            while not any(name == "notice" and doc["kind"] == "load_progress" for name, doc in seen):
                name = (await asyncio.wait_for(r.content.readline(), 5)).decode().strip().removeprefix("event: ")
                data = json.loads((await r.content.readline()).decode().removeprefix("data: "))
                await r.content.readline()
                seen.append((name, data))
            assert seen[0][0] == "state" and seen[0][1]["view"]["phase"] == "loading"
            r.close()
            await asyncio.sleep(0.5)
            assert agent._subscribers == []  # the closed stream unsubscribed
    run(scenario())


def test_dock_view_and_typed_scan(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with console(tmp_path, Role.DOCK, camera=False) as (client, agent, pairing):
            headers = await paired(client, pairing)
            assert (await agent.submit(StagingPlanReceived(console_plan()))).accepted
            r = await client.post("/api/scan", json={"code": "PKG-001"}, headers=headers)
            doc = await r.json()
            assert r.status == 200 and doc["notices"][0]["kind"] == "stage_result"
            r = await client.post("/api/scan", json={"code": "NOT-IN-PLAN"}, headers=headers)
            doc = await r.json()
            assert r.status == 200 and doc["notices"][0]["data"]["reason"] == "unknown"
            view = await (await client.get("/api/view", headers=headers)).json()
            assert view["view"]["role"] == "dock"
            assert view["view"]["routes"] == {"B-NORTH": {"staged": 1, "total": 1, "complete": True},
                                              "B-SOUTH": {"staged": 0, "total": 2, "complete": False}}
            r = await client.post("/api/claim", json={"block_id": "B-NORTH"}, headers=headers)
            assert r.status == 409 and "dock" in (await r.json())["error"]
    run(scenario())


def test_console_server_starts_on_configured_loopback_port(tmp_path: Path) -> None:
    from device.config import ConsoleSection
    from device.console.server import ConsoleError, ConsoleServer

    async def scenario() -> None:
        agent = await build_agent(tmp_path)
        first = ConsoleServer(agent, ConsoleSection(enabled=True, port=0), tmp_path)
        await first.start()
        try:
            assert first.port
            second = ConsoleServer(agent, ConsoleSection(enabled=True, port=first.port), tmp_path)
            with pytest.raises(ConsoleError, match="cannot listen"):
                await second.start()
        finally:
            await first.stop()
            agent.store.close()
    run(scenario())


def test_console_pair_command(tmp_path: Path) -> None:
    """`flexedge console pair` as a user runs it: the code it prints pairs once; --revoke unpairs."""
    def pair_cmd(*extra: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "device.cli", "console", "pair", "--json",
                               "--data-dir", str(tmp_path), *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    doc = pair_cmd()
    assert len(doc["code"]) == 6 and doc["url"] == "http://127.0.0.1:8080/"
    pairing = Pairing(tmp_path)
    token = pairing.pair(doc["code"])
    assert pairing.valid(token) and not pairing.valid(token + "x")
    assert token not in (tmp_path / "console-pairing.json").read_text()
    assert pair_cmd("--revoke")["revoked"] == 1
    assert not pairing.valid(token)


def test_camera_fault_is_a_503_not_a_crash(tmp_path: Path) -> None:
    """The simulated camera hands over a corrupt frame: the driver gets a 503 with the reason, nothing breaks."""
    async def scenario() -> None:
        async with console(tmp_path) as (client, agent, pairing):
            headers = await paired(client, pairing)
            await on_route(agent)
            for code in console_route().manifest():
                await agent.scan(code)
            await agent.submit(LoadingDone())
            await agent.submit(ArrivedAt("S1"))
            frame = tmp_path / "frames" / "door.jpg"
            frame.write_bytes(frame.read_bytes()[:500])  # a truncated JPEG, as a failing sensor pipeline gives
            r = await client.post("/api/photo", headers=headers)
            assert r.status == 503 and "camera failed" in (await r.json())["error"]
            r = await client.get("/api/view", headers=headers)
            assert (await r.json())["view"]["phase"] == "at_stop"
    run(scenario())
