"""Packaging: one version, and what a van installs (no OpenCV: the `demo` extra only renders synthetic photos)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import device

REPO = Path(__file__).resolve().parent.parent

# `import cv2` raises ImportError in this interpreter, as on a van installed without the demo extra.
WITHOUT_OPENCV = """
import sys
sys.modules["cv2"] = None
import device.assembly, device.cli.run  # what `flexedge run` builds the agent from
from device.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_one_version() -> None:
    assert importlib.metadata.version("flexedge") == device.__version__


def test_selftest_and_run_need_no_opencv(tmp_path: Path) -> None:
    env = {**os.environ, "FLEXEDGE_GPS__ENABLED": "false", "FLEXEDGE_MQTT__PORT": "9", "FLEXEDGE_MQTT__TLS": "false"}
    env.pop("FLEXEDGE_CONFIG", None)
    result = subprocess.run([sys.executable, "-c", WITHOUT_OPENCV, "selftest", "--json", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["model"]["status"] == "pass", checks["model"]
    assert checks["tflite"]["status"] == "pass"
