"""The short form of `make chaos`: every fault scenario against real processes (a TLS mosquitto, the reference
cloud, a producer process and `flexedge sync` on one store), fewer rounds. Criterion: lost 0, duplicates 0,
the cloud's chain and the device's store intact."""
from __future__ import annotations

import pytest

from tests.helpers.chaos.scenarios import SCENARIOS, SHORT, run_scenario
from tests.helpers.fleet import FleetPki


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_chaos_scenario_short(name: str, fleet: FleetPki) -> None:
    result = run_scenario(name, fleet, SHORT)
    print(result.line())
    assert result.passed, result.line()
    assert result.tally.produced > 100  # the load really ran through the fault
