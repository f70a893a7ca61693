#!/usr/bin/env bash
# Installs what `make test` and `make demo` need: Debian packages, a virtualenv in .venv, the project.
# Idempotent: a second run only checks (dpkg status and a stamp newer than pyproject.toml).
# `bootstrap.sh train` also installs the `train` extra (TensorFlow, for `make test-train`), with a stamp of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto mosquitto-clients gpsd gpsd-clients libzbar0 socat fonts-dejavu-core fonts-dejavu-extra
              fonts-liberation fonts-freefont-ttf fonts-urw-base35 systemd iproute2 python3-venv
              chromium
              # the cloud's tests run a real PostgreSQL (initdb + pg_ctl as an unprivileged user, device/testbench/postgres.py)
              postgresql
              # typefaces training never sees, for the independent door photos of the vision tests (bench/doorgen.py)
              fonts-cantarell fonts-comfortaa fonts-b612 fonts-jura fonts-quicksand fonts-league-spartan)
VENV=.venv
STAMP=$VENV/.flexedge-installed

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "flexedge bootstrap: missing Debian packages: ${missing[*]}" >&2
        echo "Run as root, then try again:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian mosquitto, gpsd and postgresql packages start system services. They are left alone: this machine
# may need them, and the tests and the demo run their own instances on free ports.

PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[dev,demo,cloud,pg]'
    touch "$STAMP"
fi
TRAIN_STAMP=$VENV/.flexedge-train-installed
if [ "${1:-}" = train ] && { [ ! -f "$TRAIN_STAMP" ] || [ pyproject.toml -nt "$TRAIN_STAMP" ]; }; then
    # All the extras in one resolution, so TensorFlow's requirements cannot move a package the suite pins.
    "$VENV/bin/python" -m pip install -q -e '.[dev,demo,cloud,train]'
    touch "$TRAIN_STAMP"
fi
