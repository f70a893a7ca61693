"""A loopback TCP proxy the test controls: pass traffic, slow it (latency and a bandwidth cap), blackhole it
(half-open: nothing flows, nothing closes), or reset every connection — the network faults a van meets between
its modem and the broker."""
from __future__ import annotations

import contextlib
import enum
import logging
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"  # bytes are swallowed both ways; sockets stay open (a dead NAT mapping)
    RESET = "reset"  # every connection gets an RST; new ones too
    SLOW = "slow"  # every chunk paced to a bandwidth cap and delayed by a latency, each way (a congested cell)


@dataclass(frozen=True)
class SlowLink:
    """What SLOW does to each direction of each connection."""

    latency_s: float = 0.3
    bytes_per_s: int = 32 * 1024

    def describe(self) -> str:
        return f"+{self.latency_s * 1000:.0f} ms, {self.bytes_per_s // 1024} KiB/s each way"


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1", slow: SlowLink = SlowLink()) -> None:
        self.target = (host, target_port)
        self.slow = slow
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._mode = Mode.PASS
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)
        self.connections = 0
        # Chunks held back for a destination: (due, bytes) in arrival order; a destination's link is busy until
        # _link_free[destination] (the bandwidth cap).
        self._queued: dict[socket.socket, deque[tuple[float, bytes]]] = {}
        self._link_free: dict[socket.socket, float] = {}
        self.delayed_chunks = 0
        self.delayed_bytes = 0
        self.bytes_up = 0  # received from clients (towards the broker): what a modem would count as sent
        self.bytes_down = 0  # received from the broker (towards the clients)

    def start(self) -> TcpProxy:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()
        return self

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
            if mode is Mode.RESET:
                for pair in list(self._pairs):
                    self._close_pair(pair, reset=True)
            elif mode is Mode.BLACKHOLE:
                self._queued.clear()  # what was still on the slow link is lost with the path

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for pair in list(self._pairs):
                self._close_pair(pair, reset=False)
        self._listener.close()
        self._selector.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                wait = self._deliver_due()
            for key, _ in self._selector.select(wait):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj, key.data)

    def _deliver_due(self) -> float:
        """Send the held-back chunks whose time has come; return how long the loop may wait for the next."""
        now = time.monotonic()
        wait = 0.05
        for destination, queue in list(self._queued.items()):
            pair = next((p for p in self._pairs if destination in p), None)
            while pair is not None and queue and queue[0][0] <= now:
                if not self._send(pair, destination, queue.popleft()[1]):
                    break
            if pair is not None and destination in self._queued and queue:
                wait = min(wait, queue[0][0] - now)
            else:
                self._queued.pop(destination, None)
        return max(wait, 0.0)

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self._listener.accept()
            if self._mode is Mode.RESET:
                _reset(client)
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _reset(client)
                return
            self.connections += 1
            for sock in (client, upstream):
                sock.setblocking(False)
            pair = (client, upstream)
            self._pairs.append(pair)
            self._selector.register(client, selectors.EVENT_READ, (pair, upstream))
            self._selector.register(upstream, selectors.EVENT_READ, (pair, client))

    def _forward(self, source: socket.socket, data: tuple) -> None:
        pair, destination = data
        if pair not in self._pairs:
            return
        try:
            chunk = source.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pair(pair, reset=False)
            return
        if destination is pair[1]:
            self.bytes_up += len(chunk)
        else:
            self.bytes_down += len(chunk)
        if self._mode is Mode.BLACKHOLE:
            return  # swallowed: neither side hears anything, neither side is told
        queue = self._queued.get(destination)
        if self._mode is Mode.SLOW:
            now = time.monotonic()
            sent = max(now, self._link_free.get(destination, now)) + len(chunk) / self.slow.bytes_per_s
            self._link_free[destination] = sent
            self._queued.setdefault(destination, deque()).append((sent + self.slow.latency_s, chunk))
            self.delayed_chunks += 1
            self.delayed_bytes += len(chunk)
        elif queue:
            queue.append((queue[-1][0], chunk))  # behind what the slow link still holds: a stream never reorders
        else:
            self._send(pair, destination, chunk)

    def _send(self, pair: tuple[socket.socket, socket.socket], destination: socket.socket, chunk: bytes) -> bool:
        try:
            destination.setblocking(True)
            destination.sendall(chunk)
            destination.setblocking(False)
            return True
        except OSError:
            self._close_pair(pair, reset=False)
            return False

    def _close_pair(self, pair: tuple[socket.socket, socket.socket], reset: bool) -> None:
        if pair not in self._pairs:
            return
        self._pairs.remove(pair)
        for sock in pair:
            self._queued.pop(sock, None)
            self._link_free.pop(sock, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets an RST, as from a modem that lost its session."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
