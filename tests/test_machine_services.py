"""`make test` and `make demo` never stop or disable services of the machine they run on.

Measured (issue 16, point 5): tools/bootstrap.sh ran `systemctl disable --now mosquitto gpsd gpsd.socket` on any
machine with systemd. The suite and the demo start their own mosquitto and gpsd on free ports instead."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bootstrap_leaves_the_machine_s_services_alone(tmp_path: Path) -> None:
    """bootstrap.sh on a machine that runs systemd (a private /run with /run/systemd/system, in a mount
    namespace of its own) with an installed venv: a `systemctl` first on the PATH records every call."""
    checkout = tmp_path / "checkout"
    (checkout / "tools").mkdir(parents=True)
    shutil.copy2(REPO / "tools" / "bootstrap.sh", checkout / "tools" / "bootstrap.sh")
    for name in ("setup.py", "pyproject.toml"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, checkout / name)
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").symlink_to(shutil.which("python3"))
    (checkout / ".venv" / ".flexedge-installed").touch()  # installed: bootstrap only checks
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "systemctl-calls"
    (fake_bin / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake_bin / "systemctl").chmod(0o755)
    script = ("mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && "
              f"bash {checkout / 'tools' / 'bootstrap.sh'}")
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert not calls.exists(), calls.read_text()


def test_nothing_the_demo_or_the_suite_runs_touches_systemd_units() -> None:
    folders = ("device", "cloud_sync", "firmware_bridge", "tools", "tests")
    sources = [REPO / "Makefile", REPO / "tools" / "bootstrap.sh",
               *(p for d in folders for p in (REPO / d).rglob("*.py"))]
    offending = [str(p.relative_to(REPO)) for p in sources
                 if any(f"systemctl {verb}" in p.read_text() for verb in ("stop", "disable", "mask", "kill"))
                 and p.name != "test_machine_services.py"]
    assert offending == []
