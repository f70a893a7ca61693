"""Every chaos scenario by name: the sync-level ones (scenarios.py) and the whole-agent ones (agent_scenarios.py)."""
from __future__ import annotations

from tests.helpers.chaos.agent_scenarios import AGENT_SCENARIOS, run_agent_scenario
from tests.helpers.chaos.scenarios import SCENARIOS, Result, Scale, run_scenario
from tests.helpers.fleet import FleetPki

ALL_SCENARIOS = [*SCENARIOS, *AGENT_SCENARIOS]


def run(name: str, fleet: FleetPki, scale: Scale, seed: int = 9) -> Result:
    if name in AGENT_SCENARIOS:
        return run_agent_scenario(name, fleet, scale, seed)
    return run_scenario(name, fleet, scale, seed)
