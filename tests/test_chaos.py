"""The short form of `make chaos`: every fault scenario against real processes (a TLS mosquitto, the reference
cloud, and on the device side either a producer process with `flexedge sync` on one store, or the whole agent,
`flexedge run`, on simulated serial devices and a real gpsd), fewer rounds. Criterion: lost 0, duplicates 0,
the cloud's chain and the device's store intact, and each scenario's own checks (behaviour: everything drained,
in order, without a stall). The speeds a scenario measures (`Result.figures`, e.g. broker_down's drain rate against
the sync bench) are printed here and judged only by `make chaos`: a timing is no assertion of a test."""
from __future__ import annotations

import pytest

from tests.helpers.chaos.catalog import ALL_SCENARIOS, run
from tests.helpers.chaos.scenarios import SHORT
from tests.helpers.fleet import FleetPki


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_chaos_scenario_short(name: str, fleet: FleetPki) -> None:
    result = run(name, fleet, SHORT)
    print(result.line())
    for figure in result.figures:
        print(figure.line())
    assert result.passed, result.line()
    assert result.tally.produced > 20  # the load really ran through the fault
