"""Packaging: one version, and what a van installs (no OpenCV: the `demo` extra only renders synthetic photos)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import device

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = REPO / "systemd" / "requirements.lock"
# The van platforms the lock is resolved for (tools/lock.sh).
VANS = [{"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
         "platform_system": "Linux", "platform_machine": machine, "implementation_name": "cpython",
         "platform_python_implementation": "CPython", "os_name": "posix"} for machine in ("aarch64", "x86_64")]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)( ; [^\\]+)? \\$")  # name==version [; marker] \\
OPTIONS = {"--only-binary :all:"}  # a van has no compiler: wheels only

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


def test_setup_py_builds_the_same_project() -> None:
    """setup.py (the layout's entry point for tools that still call it) describes what pyproject.toml does."""
    result = subprocess.run([sys.executable, "setup.py", "--name", "--version"], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [PYPROJECT["project"]["name"], device.__version__]


def test_selftest_and_run_need_no_opencv(tmp_path: Path) -> None:
    env = {**os.environ, "FLEXEDGE_GPS__ENABLED": "false", "FLEXEDGE_MQTT__PORT": "9", "FLEXEDGE_MQTT__TLS": "false"}
    env.pop("FLEXEDGE_CONFIG", None)
    result = subprocess.run([sys.executable, "-c", WITHOUT_OPENCV, "selftest", "--json", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["model"]["status"] == "pass", checks["model"]
    assert checks["tflite"]["status"] == "pass"


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) for every requirement in the lock; fails on any line that is not one."""
    pins: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped in OPTIONS:
            continue
        if line.startswith(" "):
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}( \\)?", stripped), line
            pins[name][1].append(stripped.split(":", 1)[1].rstrip(" \\"))
            continue
        match = PIN.match(line)
        assert match, f"not pinned with ==: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{name} twice"
        pins[name] = (match[2], [])
    return pins


def test_every_locked_package_is_pinned_with_hashes() -> None:
    pins = locked()
    assert pins and all(hashes for _, hashes in pins.values()), [n for n, (_, h) in pins.items() if not h]


@pytest.mark.parametrize("van", VANS, ids=lambda v: v["platform_machine"])
def test_the_lock_covers_every_runtime_dependency(van: dict[str, str]) -> None:
    pins = locked()
    needed = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] + PYPROJECT["build-system"]["requires"]]
    needed = [r for r in needed if r.marker is None or r.marker.evaluate(van)]
    missing = [str(r) for r in needed if canonicalize_name(r.name) not in pins]
    assert missing == []
    outside = [(str(r), pins[canonicalize_name(r.name)][0]) for r in needed
               if not r.specifier.contains(pins[canonicalize_name(r.name)][0], prereleases=True)]
    assert outside == []  # a pin the declared range no longer allows: run tools/lock.sh
