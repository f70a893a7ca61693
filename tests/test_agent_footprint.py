"""What the agent carries while idle: `flexedge run` builds a van (model loaded, cloud link, scanner parser)
without the libraries only other commands, or later work, need. Each of these is megabytes of resident memory
on a board with little of it (see the agent_resources lines of bench/agent_e2e.py for the figures)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from cloud_sync.signing import Signer, write_signing_key
from device.vision.synth import jpeg_bytes, render_photo

# module -> why the idle agent must not import it
NOT_AT_IDLE = {
    "cv2": "OpenCV (33 MB): only synthetic photo rendering uses it",
    "cryptography": "9 MB: the agent verifies Ed25519 with PyNaCl; X.509 is provisioning's",
    "biip": "its GS1 company-prefix trie (15 MB): loaded on the first scan",
    "aiohttp": "the console, only when [console] enabled",
    "pyzbar": "barcode decoding in photos: `flexedge decode`",
    "zxingcpp": "barcode decoding in photos: `flexedge decode`",
    "cloud_sync.cloud": "the reference cloud: `flexedge cloud`",
    "device.testbench": "the simulators: `flexedge sim`",
    "device.vision.synth": "synthetic photos: training, demo, benches",
}

BUILD_AGENT = """
import asyncio, json, sys
from pathlib import Path
from device.cli import build_parser
args = build_parser(["run"]).parse_args(["run"])
from device.cli.common import load_context
from device.assembly import assemble
ctx = load_context(args)
assembly = asyncio.run(assemble(ctx.config, ctx.data_dir))
assert assembly.agent.cloud is not None and assembly.scanner is not None
at_idle = sorted(sys.modules)
from firmware_bridge.scanner import parse_line
scan = parse_line(b"]C1" + b"00" + b"012345678901234560")  # a GS1-128 SSCC: biip loads now
print(json.dumps({"at_idle": at_idle, "after_scan": sorted(sys.modules), "sscc": scan.sscc}))
"""


def loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_idle_agent_does_not_import_what_it_does_not_use(tmp_path: Path, pty_pair) -> None:
    camera = tmp_path / "camera"
    camera.mkdir()
    (camera / "00001.jpg").write_bytes(jpeg_bytes(render_photo(np.random.default_rng(1), text="42")))
    write_signing_key(Signer.generate(), tmp_path / "signing.key", tmp_path / "signing.pub")
    config = tmp_path / "agent.toml"
    config.write_text(f"""
data_dir = "{tmp_path / 'data'}"
[device]
id = "van-1"
fleet = "f"
station = "S1"
[mqtt]
tls = false
[sync]
cloud_key_file = "{tmp_path / 'signing.pub'}"
[gps]
enabled = false
[scanner]
port = "{pty_pair.port}"
[camera]
backend = "simulated"
sim_dir = "{camera}"
""")
    result = subprocess.run([sys.executable, "-c", BUILD_AGENT], capture_output=True, text=True, timeout=120,
                            env={"FLEXEDGE_CONFIG": str(config), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert loaded(doc["at_idle"], "ai_edge_litert") or loaded(doc["at_idle"], "tflite_runtime")  # model loaded
    carried = {name: why for name, why in NOT_AT_IDLE.items() if loaded(doc["at_idle"], name)}
    assert carried == {}
    assert loaded(doc["after_scan"], "biip") and doc["sscc"] == "012345678901234560"
