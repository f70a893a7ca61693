"""What the driver sees and hears for each answer of the workflow: `Feedback` -> the status LED's colour and
blink pattern and a buzzer tone, shown through firmware_bridge's `Indicator` (which knows only colours and tones).
"""
from __future__ import annotations

import asyncio

from device.workflow.outputs import Feedback
from firmware_bridge.indicator import BEEP_HZ, LOW_HZ, Indicator, Pattern, pattern
from firmware_bridge.mcu.commands import Color

PATTERNS: dict[Feedback, Pattern] = {
    Feedback.OK: pattern(Color.GREEN, 80, 0, 1),
    Feedback.GOOD_SCAN: pattern(Color.GREEN, 150, 100, 1, (BEEP_HZ, 60, 0, 1)),
    Feedback.DUPLICATE_SCAN: pattern(Color.AMBER, 150, 100, 2, (BEEP_HZ, 40, 60, 2)),
    Feedback.WRONG_PACKAGE: pattern(Color.RED, 250, 150, 4, (LOW_HZ, 800, 0, 1)),
    Feedback.WRONG_ROUTE: pattern(Color.RED, 250, 150, 4, (LOW_HZ, 400, 200, 2)),
    Feedback.ATTENTION: pattern(Color.AMBER, 300, 300, 0, (BEEP_HZ, 80, 120, 2)),
    Feedback.REJECTED: pattern(Color.RED, 200, 0, 1, (LOW_HZ, 150, 0, 1)),
    Feedback.CLAIM_WON: pattern(Color.GREEN, 150, 100, 3, (BEEP_HZ, 60, 60, 2)),
    Feedback.CLAIM_LOST: pattern(Color.AMBER, 300, 200, 2, (LOW_HZ, 300, 0, 1)),
    Feedback.LOADING_COMPLETE: pattern(Color.GREEN, 1000, 0, 1, (BEEP_HZ, 60, 60, 3)),
    Feedback.ARRIVED: pattern(Color.BLUE, 200, 200, 2, (BEEP_HZ, 60, 0, 1)),
    Feedback.RETAKE_PHOTO: pattern(Color.AMBER, 200, 200, 3, (BEEP_HZ, 60, 100, 2)),
    Feedback.WRONG_HOUSE: pattern(Color.RED, 250, 150, 3, (LOW_HZ, 600, 0, 1)),
    Feedback.SIGNATURE_NEEDED: pattern(Color.BLUE, 300, 300, 0, (BEEP_HZ, 80, 120, 2)),
    Feedback.DELIVERED: pattern(Color.GREEN, 600, 0, 1, (BEEP_HZ, 100, 0, 1)),
    Feedback.EXCEPTION_RECORDED: pattern(Color.AMBER, 600, 0, 1, (BEEP_HZ, 100, 0, 1)),
    Feedback.ROUTE_STAGED: pattern(Color.GREEN, 150, 100, 3, (BEEP_HZ, 60, 60, 3)),
    Feedback.BLOCK_COMPLETE: pattern(Color.GREEN, 2000, 0, 1, (BEEP_HZ, 60, 60, 3)),
}


def show(indicator: Indicator, feedback: Feedback) -> asyncio.Future[list[None]] | None:
    """Show the workflow's answer on the LED and buzzer; see `Indicator.show`."""
    return indicator.show(PATTERNS[feedback], feedback.value)
