"""The console's listening socket as `flexedge run` opens it (ConsoleServer on the agent's loop, real TCP on
loopback): idle and slowly-trickling connections fill the connection cap, then the header read timeout closes
them and the console answers again."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from device.config import ConsoleSection
from device.console.server import ConsoleServer
from tests.helpers.console import build_agent

CAP = 4
HEADER_TIMEOUT_S = 1.0
CLOSED_WITHIN_S = 30.0  # generous: the machine running the tests may be busy; the point is that they close


async def _get(port: int, path: str) -> bytes:
    """One HTTP/1.1 request; what the server sent before it closed (b"" when it closed without answering)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)
    finally:
        writer.close()


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S) == b""


def test_idle_connections_are_closed_and_the_console_answers_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        agent = await build_agent(tmp_path)
        section = ConsoleSection(enabled=True, port=0, max_connections=CAP, header_timeout_s=HEADER_TIMEOUT_S)
        server = ConsoleServer(agent, section, tmp_path)
        await server.start()
        assert server.port is not None
        try:
            answer = await _get(server.port, "/api/pairing-code")
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            # The flood: connections that never send a request, one that trickles a header and never ends it.
            flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(CAP)]
            trickler = flood[0][1]
            trickler.write(b"GET /api/pairing-code HTTP/1.1\r\n")
            await trickler.drain()
            await asyncio.sleep(0.2)  # the server has accepted them all
            assert await _get(server.port, "/api/pairing-code") == b""  # over the cap: closed unanswered
            assert server.refused >= 1
            for _ in range(3):  # still trickling: bytes that never make a whole header do not keep it open
                trickler.write(b"X-Slow: 1\r\n")
                await trickler.drain()
                await asyncio.sleep(HEADER_TIMEOUT_S / 4)
            closed = await asyncio.gather(*(_closed_by_server(reader) for reader, _ in flood))
            assert closed == [True] * CAP
            answer = await _get(server.port, "/api/pairing-code")
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"]
            for _, writer in flood:
                writer.close()
        finally:
            await server.stop()
            agent.store.close()

    asyncio.run(scenario())
