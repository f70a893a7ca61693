"""The MCU link: an asyncio protocol giving exactly-once, in-order messages over a lossy serial line.

Go-back-N with cumulative ACKs: up to `window` DATA frames in flight; the receiver accepts only the next
sequence number, ACKs it, re-ACKs duplicates and NACKs the first gap once. The sender resends everything
in flight on a NACK or when no ACK makes progress within `ack_timeout_s`; a frame sent `1 + max_retries`
times without an ACK fails the link (explicit FAILED: every pending send raises NotAcked, the link
re-handshakes). HELLO/HELLO_ACK reset sequence numbers; heartbeats keep the link alive and their absence
takes it down. The transport is injected (`connection_made`), so a serial port, a pty and a test pipe run
the same code. Both ends (agent and simulated MCU) use this class.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable

from firmware_bridge.errors import FrameError, LinkDown, LinkError, NotAcked
from firmware_bridge.mcu.framing import ACK_WIRE, MAX_PAYLOAD, Frame, FrameDecoder, FrameKind

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
SEQ_MODULO = 256
HALF_SEQ_SPACE = SEQ_MODULO // 2  # a seq less than this ahead of the expected one is "ahead", else "behind"
MAX_NAME_BYTES = 16


@dataclass(frozen=True)
class LinkConfig:
    name: str = "host"  # sent in HELLO; shows in the peer's logs
    window: int = 8  # DATA frames in flight before waiting for an ACK; must stay below 128
    ack_timeout_s: float = 0.25  # no ACK progress for this long: resend everything in flight
    max_retries: int = 8  # resends of one frame before the link is declared failed
    hello_interval_s: float = 0.5  # HELLO resent this often until answered
    heartbeat_interval_s: float = 1.0  # a HEARTBEAT frame is sent this often
    link_timeout_s: float = 3.5  # no valid frame for this long (3 missed heartbeats): link down
    queue_limit: int = 256  # messages waiting for a window slot; more is refused (LinkError)

    def __post_init__(self) -> None:
        if not 1 <= self.window < HALF_SEQ_SPACE:
            raise ValueError(f"window must be 1..{HALF_SEQ_SPACE - 1}")


class LinkState(enum.StrEnum):
    DOWN = "down"  # no port
    CONNECTING = "connecting"  # port open, HELLO sent, no answer yet (or heartbeats stopped)
    UP = "up"


_UP = LinkState.UP  # read several times per message: a module name is 5x cheaper than an enum class attribute
_DATA, _ACK = FrameKind.DATA, FrameKind.ACK  # likewise, compared once per frame received


@dataclass(frozen=True)
class Hello:
    """Payload of HELLO and HELLO_ACK: version u8 | max_payload u8 | nonce u16 BE | name (UTF-8, ≤16)."""

    version: int
    max_payload: int
    nonce: int  # identifies one handshake; a HELLO_ACK echoes the HELLO's nonce
    name: str = ""

    def to_payload(self) -> bytes:
        name = self.name.encode("utf-8")[:MAX_NAME_BYTES]
        return bytes((self.version, self.max_payload)) + self.nonce.to_bytes(2, "big") + name

    @classmethod
    def from_payload(cls, payload: bytes) -> Hello:
        if not 4 <= len(payload) <= 4 + MAX_NAME_BYTES:
            raise FrameError("bad HELLO length", payload)
        name = payload[4:].decode("utf-8", errors="replace")
        return cls(payload[0], payload[1], int.from_bytes(payload[2:4], "big"), name)


@dataclass
class LinkStats:
    data_sent: int = 0  # first transmissions of DATA frames
    retransmits: int = 0  # DATA frames sent again (after a NACK or a timeout)
    timeouts: int = 0  # ACK timeouts that triggered a resend
    nacks_sent: int = 0
    nacks_received: int = 0
    handed_up: int = 0  # DATA messages handed up, each exactly once
    duplicates: int = 0  # DATA frames already handed up (re-ACKed, dropped)
    out_of_order: int = 0  # DATA frames after a gap (dropped, gap NACKed)
    frames_rejected: int = 0  # bad COBS/CRC/length/kind
    handshakes: int = 0
    link_downs: int = 0
    failures: int = 0  # retries exhausted
    heartbeats_received: int = 0
    incompatible: int = 0  # HELLOs with another protocol version

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Pending:
    msg_type: int
    payload: bytes
    future: asyncio.Future[None]
    seq: int = -1
    attempts: int = 0
    wire: bytes = b""  # the DATA frame as sent (made once: resends send the same bytes)


@dataclass
class _Timers:
    retransmit: asyncio.TimerHandle | None = None
    hello: asyncio.TimerHandle | None = None
    heartbeat: asyncio.TimerHandle | None = None

    def cancel_retransmit(self) -> None:
        if self.retransmit is not None:
            self.retransmit.cancel()
            self.retransmit = None

    def cancel_hello(self) -> None:
        if self.hello is not None:
            self.hello.cancel()
            self.hello = None

    def cancel(self) -> None:
        self.cancel_retransmit()
        self.cancel_hello()
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None


MessageHandler = Callable[[int, bytes], None]


class Link(asyncio.Protocol):
    def __init__(self, config: LinkConfig, on_message: MessageHandler,
                 on_state: Callable[[LinkState], None] | None = None, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.stats = LinkStats()
        self.state = LinkState.DOWN
        self.peer: Hello | None = None
        self._on_message = on_message
        self._on_state = on_state
        self._rng = rng or random.Random()
        self._transport: asyncio.BaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the transport runs on (connection_made)
        self._decoder = FrameDecoder()
        self._timers = _Timers()
        self._up = asyncio.Event()
        self._queue: deque[_Pending] = deque()
        self._inflight: deque[_Pending] = deque()
        self._tx_seq = 0
        self._rx_expected = 0
        self._nacked_for: int | None = None  # the expected seq already NACKed (one NACK per gap)
        self._hello_nonce: int | None = None  # our HELLO waiting for its HELLO_ACK
        self._peer_nonce: int | None = None  # the handshake the current session came from
        self._hello_sent = 0.0
        self._retransmit_due = 0.0  # loop time after which no ACK progress means resend
        self._outgoing: list[bytes] = []  # frames written in this loop pass, sent together by _flush
        self._ack_due: int | None = None  # the ACK owed for the DATA frames of the bytes being read
        self._reading = False  # inside data_received, which flushes what it sends when it returns
        self._last_rx = time.monotonic()
        self._started = time.monotonic()

    # ---- the API -------------------------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self.state is _UP

    async def wait_up(self, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self._up.wait()

    def post(self, msg_type: int, payload: bytes = b"") -> asyncio.Future[None]:
        """Queue a message; the future completes when the peer ACKs it (or fails: LinkDown, NotAcked)."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        if not 0 <= msg_type <= 0xFF:
            raise ValueError(f"message type is a byte: {msg_type}")
        loop = self._loop
        if self.state is not _UP or loop is None:
            raise LinkDown(f"MCU link is {self.state.value}")
        if len(self._queue) >= self.config.queue_limit:
            raise LinkError(f"send queue full ({self.config.queue_limit} messages)")
        future = loop.create_future()
        self._queue.append(_Pending(msg_type, payload, future))
        if len(self._inflight) < self.config.window:  # else the ACK that frees a slot sends it
            self._pump()
        return future

    async def send(self, msg_type: int, payload: bytes = b"") -> None:
        future = self.post(msg_type, payload)
        try:
            await future
        finally:
            if future.cancelled():  # the caller gave up: a message not yet sent is withdrawn
                self._withdraw(future)

    def _withdraw(self, future: asyncio.Future[None]) -> None:
        for entry in self._queue:
            if entry.future is future:
                self._queue.remove(entry)
                return

    def close(self) -> None:
        """Stop timers and fail everything pending; the transport belongs to whoever opened it."""
        self._timers.cancel()
        self._fail_pending(LinkDown("link closed"))
        self._set_state(LinkState.DOWN)

    # ---- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._decoder.reset()
        self._last_rx = time.monotonic()
        self._set_state(LinkState.CONNECTING)
        self._start_handshake()
        self._heartbeat()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._outgoing.clear()
        self._ack_due = None
        self._timers.cancel()
        self._go_down(f"port lost ({exc or 'closed'})", LinkState.DOWN)

    def data_received(self, data: bytes) -> None:
        self._reading = True  # what is sent while handling these bytes goes out in one write at the end
        try:
            self._handle_read(data)
            self._send_ack_due()
        finally:
            self._reading = False
        if self._outgoing:
            self._flush()  # the answers (ACKs, the next DATA frames) go out now, in one write

    def _handle_read(self, data: bytes) -> None:
        rejected_before = self._decoder.rejected
        frames = self._decoder.feed(data)
        rejected = self._decoder.rejected - rejected_before
        if rejected:
            self.stats.frames_rejected += rejected
            log.info("%s: %d bad frame(s) rejected: %r", self.config.name, rejected, self._decoder.last_error)
            if self.is_up:
                self._nack_gap()  # a damaged frame may have been the DATA we wait for
        if frames:
            self._last_rx = time.monotonic()
        for frame in frames:
            try:
                self._frame_received(frame)
            except FrameError as exc:
                self.stats.frames_rejected += 1
                log.warning("%s: rejected %s frame: %r", self.config.name, frame.kind.name, exc)

    # ---- receiving -----------------------------------------------------------------------------------
    def _frame_received(self, frame: Frame) -> None:
        kind = frame.kind
        if kind is _DATA:  # the frequent kinds first, by identity
            self._data_received(frame)
            return
        if kind is _ACK:
            if self.state is _UP:
                self._acked_through(frame.seq)
            return
        match kind:
            case FrameKind.NACK:
                if self.is_up:
                    self.stats.nacks_received += 1
                    self._nacked(frame.seq)
            case FrameKind.HELLO:
                self._hello_received(Hello.from_payload(frame.payload))
            case FrameKind.HELLO_ACK:
                self._hello_ack_received(Hello.from_payload(frame.payload))
            case FrameKind.HEARTBEAT:
                self.stats.heartbeats_received += 1

    def _data_received(self, frame: Frame) -> None:
        if self.state is not _UP:
            # Before the handshake the sequence numbers mean nothing; the sender will resend. The peer
            # has a session, so the HELLO_ACK that should have given us one was lost: ask again now
            # rather than after hello_interval, before the peer's retries run out.
            if self._hello_nonce is not None and time.monotonic() - self._hello_sent >= self.config.ack_timeout_s:
                self._send_hello()
            return
        ahead = (frame.seq - self._rx_expected) % SEQ_MODULO
        if ahead == 0:
            self._rx_expected = (self._rx_expected + 1) % SEQ_MODULO
            self._nacked_for = None
            self._ack_due = frame.seq  # one cumulative ACK for every DATA frame of this read (PROTOCOL.md 4.2)
            self.stats.handed_up += 1
            try:
                self._on_message(frame.msg_type, frame.payload)
            except Exception:  # a consumer bug must not take the link down
                log.exception("%s: message handler failed for type 0x%02x", self.config.name, frame.msg_type)
        elif ahead < HALF_SEQ_SPACE:
            self.stats.out_of_order += 1
            self._nack_gap()
        else:
            self.stats.duplicates += 1
            self._ack_due = (self._rx_expected - 1) % SEQ_MODULO

    def _send_ack_due(self) -> None:
        if self._ack_due is not None:
            self._send(ACK_WIRE[self._ack_due])
            self._ack_due = None

    def _nack_gap(self) -> None:
        self._send_ack_due()  # what was accepted before the gap is acknowledged first
        if self._nacked_for != self._rx_expected:
            self._nacked_for = self._rx_expected
            self.stats.nacks_sent += 1
            self._write(Frame(FrameKind.NACK, self._rx_expected))

    # ---- sending -------------------------------------------------------------------------------------
    def _write(self, frame: Frame) -> None:
        self._send(frame.encode())

    def _send(self, data: bytes) -> None:
        """Queue an encoded frame; every frame of this loop pass goes out in one write (one syscall)."""
        if self._transport is None or self._loop is None:
            return
        if not self._outgoing and not self._reading:
            self._loop.call_soon(self._flush)
        self._outgoing.append(data)

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        transport = self._transport
        if data and transport is not None and not transport.is_closing():
            if log.isEnabledFor(logging.DEBUG):  # once per write, not per frame
                log.debug("%s tx %s", self.config.name, data.hex())
            transport.write(data)  # type: ignore[attr-defined]

    def _transmit(self, entry: _Pending) -> None:
        entry.attempts += 1
        if not entry.wire:
            entry.wire = Frame.encode_data(entry.seq, entry.msg_type, entry.payload)
        self._send(entry.wire)

    def _pump(self) -> None:
        while self._queue and len(self._inflight) < self.config.window and self.state is _UP:
            entry = self._queue.popleft()
            if entry.future.done():
                continue  # a posted future cancelled by its caller before it was sent
            entry.seq = self._tx_seq
            self._tx_seq = (self._tx_seq + 1) % SEQ_MODULO
            self._inflight.append(entry)
            self.stats.data_sent += 1
            self._transmit(entry)
            if self._timers.retransmit is None:
                self._arm_retransmit()

    def _index_of(self, seq: int) -> int | None:
        """Where `seq` is in flight: the in-flight seqs are consecutive (mod 256), so by subtraction."""
        if not self._inflight:
            return None
        index = (seq - self._inflight[0].seq) % SEQ_MODULO
        return index if index < len(self._inflight) else None

    def _release(self, count: int) -> None:
        for _ in range(count):
            entry = self._inflight.popleft()
            if not entry.future.done():
                entry.future.set_result(None)
        if count:
            self._pump()  # first: a window refilled keeps its resend timer (moved), instead of a new one
            self._arm_retransmit()

    def _acked_through(self, seq: int) -> None:
        index = self._index_of(seq)
        if index is not None:  # otherwise a stale or duplicate ACK
            self._release(index + 1)

    def _nacked(self, seq: int) -> None:
        index = self._index_of(seq)
        if index is None:
            if seq == self._tx_seq:  # the peer has everything we sent; only its ACKs were lost
                self._release(len(self._inflight))
            return
        self._release(index)  # a NACK for n acknowledges everything before n
        self._resend_inflight()

    def _resend_inflight(self) -> None:
        if self._inflight[0].attempts > self.config.max_retries:
            oldest = self._inflight[0]
            self._link_failed(NotAcked(oldest.seq, oldest.attempts))
            return
        for entry in self._inflight:
            self.stats.retransmits += 1
            self._transmit(entry)
        self._arm_retransmit()

    def _arm_retransmit(self) -> None:
        """ACK progress (or a first send): the resend deadline moves to ack_timeout from now. The timer is
        not re-made per ACK: when it fires before the deadline it sleeps the rest."""
        loop = self._loop
        if not self._inflight or loop is None:
            self._timers.cancel_retransmit()
            return
        self._retransmit_due = loop.time() + self.config.ack_timeout_s
        if self._timers.retransmit is None:
            self._timers.retransmit = loop.call_at(self._retransmit_due, self._ack_timeout)

    def _ack_timeout(self) -> None:
        self._timers.retransmit = None
        if not (self._inflight and self.is_up):
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._retransmit_due:  # progress since the timer was made
            self._timers.retransmit = loop.call_at(self._retransmit_due, self._ack_timeout)
            return
        self.stats.timeouts += 1
        self._resend_inflight()

    def _link_failed(self, exc: NotAcked) -> None:
        self.stats.failures += 1
        log.error("%s: %s; link failed, re-handshaking", self.config.name, exc)
        self._fail_pending(exc)
        self._go_down(str(exc), LinkState.CONNECTING)

    def _fail_pending(self, exc: Exception) -> None:
        for entry in (*self._inflight, *self._queue):
            if not entry.future.done():
                entry.future.set_exception(exc)
                entry.future.exception()  # mark retrieved: a fire-and-forget post must not warn at exit
        self._inflight.clear()
        self._queue.clear()

    # ---- handshake, heartbeat, link state ------------------------------------------------------------
    def _hello(self, nonce: int) -> Hello:
        return Hello(PROTOCOL_VERSION, MAX_PAYLOAD, nonce, self.config.name)

    def _start_handshake(self) -> None:
        self._hello_nonce = self._rng.randrange(1, 0x10000)
        self._send_hello()

    def _send_hello(self) -> None:
        self._timers.cancel_hello()
        if self._hello_nonce is None or self._transport is None:
            return
        self._hello_sent = time.monotonic()
        self._write(Frame(FrameKind.HELLO, payload=self._hello(self._hello_nonce).to_payload()))
        self._timers.hello = asyncio.get_running_loop().call_later(self.config.hello_interval_s, self._send_hello)

    def _compatible(self, hello: Hello) -> bool:
        if hello.version != PROTOCOL_VERSION:
            self.stats.incompatible += 1
            log.error("%s: peer %r speaks protocol v%d, we speak v%d: ignored",
                      self.config.name, hello.name, hello.version, PROTOCOL_VERSION)
            return False
        return True

    def _hello_received(self, hello: Hello) -> None:
        if not self._compatible(hello):
            return
        if not (self.is_up and hello.nonce == self._peer_nonce):  # a repeated HELLO must not reset again
            self._start_session(hello)
        self._write(Frame(FrameKind.HELLO_ACK, payload=self._hello(hello.nonce).to_payload()))

    def _hello_ack_received(self, hello: Hello) -> None:
        if self._hello_nonce is None or hello.nonce != self._hello_nonce or not self._compatible(hello):
            return  # an answer to a HELLO we no longer wait for
        self._start_session(hello)

    def _start_session(self, peer: Hello) -> None:
        if self.is_up:
            log.warning("%s: peer %r restarted the session", self.config.name, peer.name)
        self._fail_pending(LinkDown("session restarted"))
        self._tx_seq = 0
        self._rx_expected = 0
        self._nacked_for = None
        self._hello_nonce = None
        self._timers.cancel_hello()
        self._timers.cancel_retransmit()
        self._peer_nonce = peer.nonce
        self.peer = peer
        self.stats.handshakes += 1
        self._last_rx = time.monotonic()
        log.info("%s: link up with %r (protocol v%d)", self.config.name, peer.name, peer.version)
        self._set_state(LinkState.UP)

    def _heartbeat(self) -> None:
        self._timers.heartbeat = None
        if self._transport is None:
            return
        silent_s = time.monotonic() - self._last_rx
        if self.is_up and silent_s > self.config.link_timeout_s:
            self._go_down(f"nothing received for {silent_s:.1f} s", LinkState.CONNECTING)
        uptime_ms = int((time.monotonic() - self._started) * 1000) % (1 << 32)
        self._write(Frame(FrameKind.HEARTBEAT, payload=uptime_ms.to_bytes(4, "big")))
        self._timers.heartbeat = asyncio.get_running_loop().call_later(
            self.config.heartbeat_interval_s, self._heartbeat)

    def _go_down(self, reason: str, state: LinkState) -> None:
        was_up = self.is_up
        self._fail_pending(LinkDown(reason))
        self._timers.cancel_retransmit()
        self._peer_nonce = None
        if was_up:
            self.stats.link_downs += 1
            log.warning("%s: link down: %s", self.config.name, reason)
        self._set_state(state)
        if state is LinkState.CONNECTING and self._hello_nonce is None:
            self._start_handshake()

    def _set_state(self, state: LinkState) -> None:
        if state is self.state:
            return
        self.state = state
        if state is LinkState.UP:
            self._up.set()
        else:
            self._up.clear()
        if self._on_state is not None:
            self._on_state(state)


