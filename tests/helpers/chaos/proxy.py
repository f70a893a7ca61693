"""A loopback TCP proxy the test controls: pass traffic, blackhole it (half-open: nothing flows, nothing
closes), or reset every connection — the network faults a van meets between its modem and the broker."""
from __future__ import annotations

import contextlib
import enum
import logging
import selectors
import socket
import struct
import threading

log = logging.getLogger(__name__)


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"  # bytes are swallowed both ways; sockets stay open (a dead NAT mapping)
    RESET = "reset"  # every connection gets an RST; new ones too


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._mode = Mode.PASS
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)
        self.connections = 0

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
            for key, _ in self._selector.select(0.05):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj, key.data)

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
        if self._mode is Mode.BLACKHOLE:
            return  # swallowed: neither side hears anything, neither side is told
        try:
            destination.setblocking(True)
            destination.sendall(chunk)
            destination.setblocking(False)
        except OSError:
            self._close_pair(pair, reset=False)

    def _close_pair(self, pair: tuple[socket.socket, socket.socket], reset: bool) -> None:
        if pair not in self._pairs:
            return
        self._pairs.remove(pair)
        for sock in pair:
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
