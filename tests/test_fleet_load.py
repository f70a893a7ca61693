"""bench/fleet_load.py for a few vans against the SQLite cloud, real processes throughout (mosquitto with mutual
TLS, `flexedge cloud`, load-generator processes): everything the vans made is stored once, every claim answered
exactly once, no block granted twice, the cloud's chain heads are the vans'."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_small_fleet_loses_nothing_and_gets_every_claim_answered_once() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fleet_load.py"), "--devices", "8", "--seconds", "4",
         "--devices-per-station", "4", "--blocks-per-station", "2", "--procs", "2", "--status-interval", "1",
         "--drain-timeout", "30"],
        cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["vans_connected"] == result["vans_drained"] == 8, (result["not_drained"], done.stderr[-3000:])
    assert result["events_stored"] == result["events_produced"] > 0
    assert result["lost"] == 0 and result["duplicates"] == 0 and result["unexpected_rows"] == 0
    assert result["chain_head_mismatch"] == 0 and result["flags"] == {} and result["clock_flags"] == 0
    claims = result["claims"]
    # 4 blocks for 8 vans: each van claims once, unless its station's blocks are all gone by then
    assert claims["sent"] + claims["skipped_no_open_block"] == 8 and claims["sent"] >= 4
    assert claims["answered_once"] == claims["sent"]
    assert claims["unanswered"] == claims["answered_twice_or_more"] == claims["answered_more_than_asked"] == 0
    granted = claims["statuses"].get("granted", 0)
    assert 1 <= granted <= 4 and sum(claims["statuses"].values()) == claims["sent"]
    assert claims["blocks_granted_twice"] == 0 and claims["granted_not_winner_in_db"] == 0
    assert result["routes_received"] == granted and result["granted_without_route"] == 0  # each winner's route
    assert result["raw_insert_events_per_s"] > 0 and result["ratio"] > 0
    assert result["broker"]["cpu_s"] >= 0 and result["cloud"] and len(result["generators"]) == 2
    assert result["cloud_exit"] == 0 and result["ok"]
