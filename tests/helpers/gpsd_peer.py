"""A gpsd peer a test holds: it trickles bytes and never finishes its banner until told to (a hanging check)."""
from __future__ import annotations

import socket
import threading


class HeldGpsd:
    """A gpsd peer the test holds: each connection gets a space every half second, so a reader waiting for gpsd's
    VERSION banner (the selftest's gpsd check) keeps waiting, until `answer()`; from then on the banner at once."""

    BANNER = b'{"class":"VERSION","release":"held","proto_major":3,"proto_minor":14}\n'

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.answering = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while not self.answering.is_set() and not self.closed.is_set():
                    conn.sendall(b" ")
                    self.answering.wait(0.5)
                conn.sendall(self.BANNER)
                self.closed.wait()
            except OSError:
                return

    def answer(self) -> None:
        self.answering.set()

    def close(self) -> None:
        self.closed.set()
        self.server.close()
