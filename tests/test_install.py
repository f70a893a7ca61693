"""systemd/install.sh for real, not staged: as root, in a mount namespace whose /etc, /opt, /var/lib and
/usr/local are overlays on this machine's (so useradd, /etc/flexedge and the venv land in throw-away upper
directories and the machine is not changed). apt-get, dpkg-query and python3 are recording stand-ins (no
downloads); the venv's `flexedge` is this checkout's. Measured before (issue 16, point 4): no Debian packages,
an isolated venv that cannot import the apt picamera2, a stub config, no word on certificate ownership."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_sync.pki import Pki
from tests.helpers.debian_mosquitto import open_tmpdir

REPO = Path(__file__).resolve().parent.parent
FLEXEDGE = Path(sys.executable).parent / "flexedge"

FAKE_PYTHON = """#!/bin/sh
echo "python $*" >> {log}
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    for dir; do :; done
    mkdir -p "$dir/bin" && cp "$0" "$dir/bin/python" && ln -s {flexedge} "$dir/bin/flexedge"
fi
"""
RECORDER = """#!/bin/sh
echo "{name} $*" >> {log}
"""
# What runs inside the namespace: the overlays, then the checks, each printed as `name=value` for the test.
SCRIPT = """set -e
for d in etc opt var/lib usr/local; do
    mkdir -p {work}/up/$d {work}/work/$d
    mount -t overlay overlay -o lowerdir=/$d,upperdir={work}/up/$d,workdir={work}/work/$d /$d
done
bash {repo}/systemd/install.sh "$@" > {work}/install.out 2>&1
echo "user=$(getent passwd flexedge | cut -d: -f1,7)"
echo "groups=$(id -nG flexedge)"
echo "conf=$(stat -c '%U:%G %a' /etc/flexedge /etc/flexedge/flexedge.toml /etc/flexedge/tls/device.key | paste -sd,)"
echo "tls=$(stat -c '%U:%G %a' /etc/flexedge/tls)"
echo "data=$(stat -c '%U:%G %a' /var/lib/flexedge)"
echo "link=$(readlink /usr/local/bin/flexedge)"
echo "releases=$(stat -c '%U:%G' /var/lib/flexedge/releases) $(readlink /var/lib/flexedge/releases/current)"
echo "validate=$({flexedge} config --validate --user flexedge --config /etc/flexedge/flexedge.toml 2>&1)"
chmod 0600 /etc/flexedge/tls/device.key
echo "unreadable=$({flexedge} config --validate --user flexedge --config /etc/flexedge/flexedge.toml 2>&1 || true)"
cp /etc/flexedge/flexedge.toml {work}/flexedge.toml
"""


def install_in_namespace(work: Path, pki: Pki, *, pi: bool) -> tuple[dict[str, str], str, str]:
    fakes = work / "bin"
    fakes.mkdir()
    log = work / "calls.log"
    for name in ("apt-get", "dpkg-query"):  # dpkg-query prints nothing: every package is missing
        (fakes / name).write_text(RECORDER.format(name=name, log=log))
    (fakes / "python3").write_text(FAKE_PYTHON.format(log=log, flexedge=FLEXEDGE))
    for script in fakes.iterdir():
        script.chmod(0o755)
    model = work / "model"
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\0" if pi else "")
    script = SCRIPT.format(work=work, repo=REPO, flexedge=FLEXEDGE)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLEXEDGE_")},
           "PATH": f"{fakes}:{os.environ['PATH']}", "PYTHON": str(fakes / "python3"), "PI_MODEL_FILE": str(model)}
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "install",
                             "--device-id", "van-0042", "--fleet", "acme", "--station", "DXX1",
                             "--broker", "127.0.0.1:1", "--certs", str(pki.dir)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr + (work / "install.out").read_text()
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return facts, log.read_text(), (work / "flexedge.toml").read_text()


@pytest.mark.parametrize("pi", [True, False], ids=["raspberry-pi", "other"])
def test_install_sh_as_root_on_a_unit(pi: bool) -> None:
    with open_tmpdir() as work:
        pki = Pki(work / "pki")
        pki.init()
        pki.issue("van-0042")
        facts, calls, config = install_in_namespace(work, pki, pi=pi)
    apt = next(line for line in calls.splitlines() if line.startswith("apt-get install"))
    wanted = {"python3-venv", "libzbar0", "gpsd", "gpsd-clients"} | ({"python3-picamera2"} if pi else set())
    assert set(apt.split()) >= wanted and ("python3-picamera2" in apt) == pi
    venv = next(line for line in calls.splitlines() if " -m venv " in line)
    assert ("--system-site-packages" in venv) == pi  # picamera2 comes from apt: the Pi's venv must see it
    assert "-m pip install -q --require-hashes -r" in calls and "--no-deps" in calls
    assert facts["user"] == "flexedge:/usr/sbin/nologin" and set(facts["groups"].split()) >= {"dialout", "video"}
    # The config's folder is the service's to write (a remote set_config); the certificates' is not.
    assert facts["conf"] == "root:flexedge 770,root:flexedge 640,root:flexedge 640"
    assert facts["tls"] == "root:flexedge 750"
    assert facts["data"] == "flexedge:flexedge 750"
    assert facts["link"] == "/opt/flexedge/venv/bin/flexedge"
    assert facts["releases"] == "flexedge:flexedge /opt/flexedge"  # the first release; the agent switches later ones
    assert facts["validate"] == "config ok: /etc/flexedge/flexedge.toml"  # the service user reads every file
    assert "mqtt.key_file" in facts["unreadable"] and "not readable by user flexedge" in facts["unreadable"]
    assert f'backend = "{"picamera2" if pi else "none"}"' in config and 'id = "van-0042"' in config
    assert 'file = "/var/log/flexedge/agent.log"' in config  # what a remote upload_logs reads
