"""The device's ack pacing (cloud_sync.ack_pacing): fewer batches in flight and later resends when the cloud acks
slowly, back to the configured window when it is quick again. Pure: the clock is passed in."""
from __future__ import annotations

import pytest

from cloud_sync.ack_pacing import TIMEOUT_GROWTH_MAX, AckPacing


def test_quick_acks_keep_the_configured_window_and_timeout() -> None:
    pacing = AckPacing(15.0, 8)
    for n in range(50):
        pacing.acked(0.2, float(n))
    assert (pacing.window, pacing.timeout_s) == (8, 15.0)


def test_slow_acks_shrink_the_window_and_stretch_the_timeout() -> None:
    pacing = AckPacing(15.0, 8)
    now = 0.0
    for _ in range(20):
        now += 30.0
        pacing.acked(30.0, now)  # the cloud has a queue half a minute long
    assert pacing.window == 1
    assert 30.0 < pacing.timeout_s <= 15.0 * TIMEOUT_GROWTH_MAX  # a batch is not sent again while its ack is due
    for _ in range(20):
        now += 1.0
        pacing.acked(1.0, now)
    assert pacing.window == 8  # quick again: the whole window back
    assert pacing.timeout_s < 30.0


def test_timeouts_double_the_timeout_up_to_a_bound_and_an_ack_resets_it() -> None:
    pacing = AckPacing(10.0, 4)
    timeouts = []
    for n in range(6):
        pacing.timed_out(float(n))
        timeouts.append(pacing.timeout_s)
    assert timeouts == [20.0, 40.0, 80.0, 80.0, 80.0, 80.0] and pacing.window == 1
    pacing.acked(1.0, 10.0)
    assert pacing.timeout_s == 10.0 and pacing.window == 2


def test_the_window_halves_once_per_round_trip() -> None:
    """A burst of slow acks of one round trip (every batch of the window) halves the window once, not to one."""
    pacing = AckPacing(10.0, 16)
    pacing.acked(8.0, 100.0)
    assert pacing.window == 8
    for n in range(5):
        pacing.acked(8.0, 100.0 + n * 0.1)
    assert pacing.window == 8


def test_the_late_ack_of_a_batch_that_timed_out_is_a_sample() -> None:
    """A batch times out (the timeout doubles, the batch goes again under a new batch id); its own late ack then
    comes, 25 s after its send. Not ambiguous (the ack names that send), so it is a sample: the timeout grows past
    the queue it measured, and the resends behind it are not sent a third time at 20 s."""
    pacing = AckPacing(10.0, 4)
    for n in range(10):
        pacing.acked(1.0, float(n))
    pacing.timed_out(20.0)
    assert pacing.timeout_s == 20.0
    pacing.acked(25.0, 30.0)
    assert pacing.timeout_s > 25.0 and pacing.window == 1


@pytest.mark.parametrize(("timeout_s", "window"), [(0.0, 4), (-1.0, 4), (10.0, 0)])
def test_nonsense_settings_are_refused(timeout_s: float, window: int) -> None:
    with pytest.raises(ValueError):
        AckPacing(timeout_s, window)
