"""The console as a unit runs it: `flexedge run` with `[console] enabled`, reached over real HTTP on loopback —
the cab screen reads the pairing code, pairs, reads the agent's view, sends a scan through the console's own
API; an unpaired request is refused; SIGTERM stops the process cleanly."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from device.console.api import REQUEST_HEADER, TOKEN_HEADER
from device.testbench.procs import free_tcp_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent


def _request(url: str, data: dict | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})},
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_console_served_by_flexedge_run(tmp_path: Path) -> None:
    port = free_tcp_port()
    config = tmp_path / "flexedge.toml"
    config.write_text(f"""
data_dir = "{tmp_path / 'data'}"
[device]
id = "van-console"
[gps]
enabled = false
[console]
enabled = true
port = {port}
""")
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 (closed below)
    agent = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config", str(config)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, timeout_s=30)
        status, doc = _request(f"{base}/api/view")
        assert status == 401  # nothing without pairing
        status, doc = _request(f"{base}/api/pairing-code")
        assert status == 200 and doc["code"]
        status, doc = _request(f"{base}/api/pair", {"code": doc["code"]}, {REQUEST_HEADER: "1"})
        assert status == 200 and doc["paired"]
        token = {TOKEN_HEADER: doc["token"]}
        status, view = _request(f"{base}/api/view", headers=token)
        assert status == 200 and view["view"]["phase"] == "idle" and view["view"]["role"] == "vehicle", view
        status, answer = _request(f"{base}/api/scan", {"code": "PKG-FROM-CONSOLE"}, {REQUEST_HEADER: "1", **token})
        assert status == 409, answer  # a van without a block refuses the scan, says why, and records it
        assert answer["rejection"]["reason"] == "wrong_state" and answer["events"][0]["type"] == "input.rejected"
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(20)
        log.close()
    assert code == 0, (tmp_path / "agent.log").read_text()[-2000:]
    # The refused scan is a committed event of the unit's own store.
    conn = sqlite3.connect(tmp_path / "data" / "events.db")
    types = [t for (t,) in conn.execute("SELECT type FROM events ORDER BY seq")]
    conn.close()
    assert types[0] == "agent.started" and "input.rejected" in types and types[-1] == "agent.stopped"
