"""Parts of the chaos rig on their own: the proxy's slow mode over real sockets, the drain-order check, the
bench rate lookup."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.chaos.checks import SYNC_RATE_MEASURED, DrainOrder, bench_sync_rate, drain_order
from tests.helpers.chaos.proxy import Mode, SlowLink, TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                while chunk := conn.recv(65536):
                    conn.sendall(chunk)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"connection closed after {len(out)} of {n} bytes"
        out += chunk
    return out


def test_slow_mode_delays_every_chunk_and_never_reorders_the_stream(echo_port: int) -> None:
    proxy = TcpProxy(echo_port, slow=SlowLink(latency_s=0.05, bytes_per_s=64 * 1024)).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            client.sendall(b"hello")
            assert _read_exactly(client, 5) == b"hello" and proxy.delayed_chunks == 0
            proxy.set_mode(Mode.SLOW)
            sent = b"".join(f"{n:05d}".encode() for n in range(2000))  # 10 kB in numbered pieces
            for i in range(0, len(sent), 500):
                client.sendall(sent[i:i + 500])
            _until(lambda: proxy.delayed_bytes >= len(sent), "the proxy to take the data onto the slow link")
            # Back to PASS while the slow link still holds data: what follows queues behind it.
            proxy.set_mode(Mode.PASS)
            client.sendall(b"tail")
            assert _read_exactly(client, len(sent) + 4) == sent + b"tail"
        assert proxy.delayed_chunks > 0 and proxy.delayed_bytes >= len(sent)
    finally:
        proxy.stop()


def test_blackhole_drops_what_the_slow_link_held(echo_port: int) -> None:
    proxy = TcpProxy(echo_port, slow=SlowLink(latency_s=30.0)).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            proxy.set_mode(Mode.SLOW)
            client.sendall(b"lost")
            _until(lambda: proxy.delayed_bytes == 4, "the proxy to take the data onto the slow link")
            proxy.set_mode(Mode.BLACKHOLE)
            proxy.set_mode(Mode.PASS)
            client.sendall(b"kept")
            assert _read_exactly(client, 4) == b"kept"
    finally:
        proxy.stop()


def test_drain_order_counts_inversions_per_lane() -> None:
    scan, crumb = "package.scanned", "gps.fix"
    in_order = [(1, scan, "a"), (4, scan, "a"), (2, crumb, "b"), (3, crumb, "b"), (5, crumb, "b")]
    assert drain_order(in_order) == DrainOrder(0, 0)
    # the device's newest breadcrumb alone, ahead of the older ones: by design, counted apart
    live_first = [(9, crumb, "live"), (1, scan, "a"), (2, crumb, "b"), (3, crumb, "b"), (8, crumb, "b")]
    assert drain_order(live_first) == DrainOrder(0, 1)
    # a batch that arrived after newer ones of its lane (lost and sent again)
    resent = [(4, scan, "b2"), (5, scan, "b2"), (1, scan, "b1"), (2, scan, "b1"), (3, crumb, "c")]
    assert drain_order(resent).out_of_order == 2
    # a one-event batch of scans is no live position
    assert drain_order([(7, scan, "x"), (1, scan, "y")]).out_of_order == 1


def test_bench_rate_comes_from_the_results_file_when_there_is_one(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    assert bench_sync_rate(results)[0] == SYNC_RATE_MEASURED
    results.write_text(json.dumps({"results": [{"bench": "store_ingest", "events_per_s": 5},
                                               {"bench": "sync_throughput", "events_per_s": 12345}]}))
    rate, source = bench_sync_rate(results)
    assert rate == 12345 and "results.json" in source
    results.write_text(json.dumps({"results": [{"bench": "sync_throughput", "error": "timed out"}]}))
    assert bench_sync_rate(results)[0] == SYNC_RATE_MEASURED
    results.write_text("{not json")
    assert bench_sync_rate(results)[0] == SYNC_RATE_MEASURED


def test_a_figure_below_its_reference_does_not_fail_the_scenario() -> None:
    """A speed is a bench figure (`make chaos` judges it), never one of the scenario's criteria."""
    from tests.helpers.chaos.rig import Tally
    from tests.helpers.chaos.scenarios import Figure, Result

    slow = Figure("drain rate", 0.22, 0.25, "4,150 events/s of the bench's 18,863 events/s")
    result = Result("broker_down", Tally(produced=1550, stored=1550, lost=0, duplicates=0, chain_ok=True,
                                         cloud_duplicates_discarded=0, clock_flags=0), 0.4, figures=(slow,))
    assert result.passed and not slow.held
    assert slow.line().endswith("reference >= 0.25: BELOW")
