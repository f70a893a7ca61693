"""How many batches a device keeps waiting for the cloud's ack, and how long it waits, from the acks it sees.

A cloud under load acks late. A device that resends after a fixed timeout, with a fixed number of batches in
flight, adds load exactly then: the resends queue behind the originals, and the queue grows until PUBACKs time
out and connections drop (at 2,000 simulated vans: most batches resent, thousands of reconnects). So, as TCP
paces its segments:
- the ack timeout follows the ack latency seen (RFC 6298: the smoothed latency plus four times its mean
  deviation), never below the configured timeout and at most `TIMEOUT_GROWTH_MAX` times it; each timeout
  doubles it until an ack comes again;
- the window (batches in flight) grows by one with each ack that came quickly and halves (at least one batch,
  at most once per smoothed latency) with a timeout or an ack slower than `SLOW_FRACTION` of the configured
  timeout: a slow ack means the cloud has a queue, and more batches in flight only make it longer.
Every ack is a latency sample, the late ack of a batch that timed out and was sent again too. Karn's rule (RFC
6298 section 3: no samples from retransmitted segments) answers an ambiguity this protocol does not have: a resend
is a new batch with a batch id of its own (the device's uplink, the simulated vans and photo chunks all make a new
id per send), and the cloud acks the id it stored, so each ack names the one send it answers, as TCP's timestamp
option does (which section 3 names as the case where retransmitted segments may be sampled). The late ack of a
timed-out batch measures the cloud's queue; dropping it would keep the estimate low exactly when the cloud is
slow, and resend more.
The simulated vans of the fleet load bench use the same class, so they behave as devices do. Pure: the caller
passes the clock.
"""
from __future__ import annotations

import math

ALPHA = 1 / 8  # RFC 6298: the weight of a new latency in the smoothed latency
BETA = 1 / 4  # RFC 6298: the weight of a new deviation in the mean deviation
DEVIATIONS = 4  # RFC 6298: the timeout is the smoothed latency plus this many mean deviations
# The timeout grows to at most this many times the configured one (120 s at 15 s; RFC 6298 caps at 60 s or more).
# Measured at 2,000 vans: with 4x (60 s) acks that were slow but coming (p99 75 s) were resent into a storm.
TIMEOUT_GROWTH_MAX = 8.0
SLOW_FRACTION = 0.5  # an ack later than this fraction of the configured timeout shrinks the window


class AckPacing:
    """The window and the ack timeout of one device's uplink. Starts at `max_window` and `base_timeout_s`."""

    def __init__(self, base_timeout_s: float, max_window: int) -> None:
        if base_timeout_s <= 0 or max_window < 1:
            raise ValueError(f"ack pacing needs a timeout > 0 and a window >= 1, not {base_timeout_s}, {max_window}")
        self.base_timeout_s = base_timeout_s
        self.max_window = max_window
        self.window = max_window
        self.smoothed_s: float | None = None
        self.deviation_s = 0.0
        self._backoff = 1.0
        self._shrunk_at = -math.inf

    @property
    def timeout_s(self) -> float:
        """How long a batch waits for its ack before it goes again."""
        observed = self.base_timeout_s if self.smoothed_s is None else self.smoothed_s + DEVIATIONS * self.deviation_s
        return min(max(self.base_timeout_s, observed) * self._backoff, self.base_timeout_s * TIMEOUT_GROWTH_MAX)

    def acked(self, latency_s: float, now: float) -> None:
        """An ack came `latency_s` after its batch was sent (a late ack of a batch sent again counts too)."""
        if self.smoothed_s is None:
            self.smoothed_s, self.deviation_s = latency_s, latency_s / 2
        else:
            self.deviation_s += BETA * (abs(self.smoothed_s - latency_s) - self.deviation_s)
            self.smoothed_s += ALPHA * (latency_s - self.smoothed_s)
        self._backoff = 1.0
        if latency_s > SLOW_FRACTION * self.base_timeout_s:
            self._shrink(now)
        else:
            self.window = min(self.max_window, self.window + 1)

    def timed_out(self, now: float) -> None:
        """The oldest batch in flight got no ack within `timeout_s`: it goes again, later next time."""
        self._backoff = min(self._backoff * 2, TIMEOUT_GROWTH_MAX)
        self._shrink(now)

    def _shrink(self, now: float) -> None:
        if now - self._shrunk_at >= (self.smoothed_s or 0.0):  # one halving per round trip, as TCP's
            self.window = max(1, self.window // 2)
            self._shrunk_at = now
