#!/usr/bin/env bash
# Installs the Flex Edge agent as a systemd service.
#   sudo systemd/install.sh               # user flexedge, venv in /opt/flexedge/venv, unit, config skeleton
#   DESTDIR=/tmp/root systemd/install.sh  # stage into a directory instead (packaging, tests): no useradd,
#                                         # no pip, no systemctl; the unit and config land under DESTDIR
# Environment: PREFIX (/opt/flexedge), PYTHON (python3), FLEXEDGE_SOURCE (this checkout).
set -euo pipefail

SOURCE=${FLEXEDGE_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/flexedge}
PYTHON=${PYTHON:-python3}
UNIT_DIR=$DESTDIR/etc/systemd/system
CONF_DIR=$DESTDIR/etc/flexedge

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (or set DESTDIR to stage into a directory)" >&2
    exit 1
fi

# 1. The service user: no login, no home, in the groups that own serial ports and cameras.
if [ -z "$DESTDIR" ]; then
    getent group dialout >/dev/null || groupadd --system dialout
    getent group video >/dev/null || groupadd --system video
    if ! id flexedge >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /var/lib/flexedge \
                --shell /usr/sbin/nologin --groups dialout,video flexedge
    fi
fi

# 2. The program: a virtualenv under PREFIX with the package installed from this checkout.
if [ -z "$DESTDIR" ]; then
    install -d -m 0755 "$PREFIX"
    [ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
    "$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
    # Every package pinned and hash-checked (systemd/requirements.lock, made by tools/lock.sh), then the
    # project alone, built with the locked setuptools.
    "$PREFIX/venv/bin/python" -m pip install -q --require-hashes -r "$SOURCE/systemd/requirements.lock"
    "$PREFIX/venv/bin/python" -m pip install -q --no-deps --no-build-isolation "$SOURCE"
    install -m 0644 "$SOURCE/README.md" "$PREFIX/README.md"
fi

# 3. The unit, with the venv path substituted, and a config file if there is none yet.
install -d -m 0755 "$UNIT_DIR" "$CONF_DIR"
sed "s#/opt/flexedge#$PREFIX#g" "$SOURCE/systemd/flexedge.service" > "$UNIT_DIR/flexedge.service"
chmod 0644 "$UNIT_DIR/flexedge.service"
if [ ! -f "$CONF_DIR/flexedge.toml" ]; then
    cat > "$CONF_DIR/flexedge.toml" <<'TOML'
# Flex Edge configuration: see README.md ("Configuration"). Check with: flexedge config --validate
[device]
id = "van-0001"
fleet = "demo"
station = "DXX1"
role = "vehicle"
TOML
    chmod 0640 "$CONF_DIR/flexedge.toml"
    [ -n "$DESTDIR" ] || chgrp flexedge "$CONF_DIR/flexedge.toml"
fi

# 4. Enable it (only on a live system with systemd running).
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable flexedge.service
    echo "installed: edit /etc/flexedge/flexedge.toml, then: systemctl start flexedge; journalctl -u flexedge -f"
else
    echo "installed into ${DESTDIR:-/} (systemd not running: not enabled)"
fi
