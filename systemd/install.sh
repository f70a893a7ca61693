#!/usr/bin/env bash
# Installs the Flex Edge agent as a systemd service on a van or dock unit (Raspberry Pi OS 64-bit / Debian 12).
#
#   sudo systemd/install.sh --device-id van-0042 --fleet acme --station DXX1 \
#        --broker mqtt.example.com:8883 --certs /media/usb/van-0042
#
# Every option may be left out and filled in later in /etc/flexedge/flexedge.toml; the self-test at the end
# prints what is still missing. Running it again keeps an existing config unless --device-id is given.
#   --device-id ID     the unit's id (= its certificate CN)       --fleet F, --station S
#   --broker HOST[:PORT]                                           --camera picamera2|simulated|none
#   --certs DIR        a folder with ca.crt, ID.crt, ID.key, signing.pub (from `flexedge pki`), copied to
#                      /etc/flexedge/tls/ as ca.crt, device.crt, device.key, signing.pub (root:flexedge 0640)
#
#   DESTDIR=/tmp/root systemd/install.sh ...   stage into a directory instead (packaging, tests): no apt, no
#                                              user, no pip, no chown, no systemctl; needs $PREFIX/venv
# Environment: PREFIX (/opt/flexedge), RELEASES (/var/lib/flexedge/releases: over-the-air releases, `current`
# first pointing at PREFIX), PYTHON (python3), FLEXEDGE_SOURCE (this checkout), SKIP_APT=1,
# PI_MODEL_FILE (/proc/device-tree/model: "Raspberry Pi" in it means a Pi).
set -euo pipefail

SOURCE=${FLEXEDGE_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/flexedge}
RELEASES=${RELEASES:-/var/lib/flexedge/releases}
PYTHON=${PYTHON:-python3}
UNIT_DIR=$DESTDIR/etc/systemd/system
CONF_DIR=$DESTDIR/etc/flexedge
CONF=$CONF_DIR/flexedge.toml
DATA_DIR=$DESTDIR/var/lib/flexedge
FLEXEDGE=$PREFIX/venv/bin/flexedge

die() { echo "install.sh: $*" >&2; exit 2; }

DEVICE_ID="" FLEET="" STATION="" BROKER="" CERTS="" CAMERA=""
while [ $# -gt 0 ]; do
    case $1 in
        --device-id) DEVICE_ID=${2:?}; shift 2 ;;
        --fleet) FLEET=${2:?}; shift 2 ;;
        --station) STATION=${2:?}; shift 2 ;;
        --broker) BROKER=${2:?}; shift 2 ;;
        --certs) CERTS=${2:?}; shift 2 ;;
        --camera) CAMERA=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
if [ -n "$CERTS" ]; then
    [ -n "$DEVICE_ID" ] || die "--certs needs --device-id (the files are named after it)"
    for f in ca.crt "$DEVICE_ID.crt" "$DEVICE_ID.key" signing.pub; do
        [ -r "$CERTS/$f" ] || die "$CERTS/$f missing: make it with flexedge pki (see README, Provisioning)"
    done
fi
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or set DESTDIR to stage into a directory)"
fi
ON_PI=0
if grep -qs "Raspberry Pi" "${PI_MODEL_FILE:-/proc/device-tree/model}"; then ON_PI=1; fi
[ -n "$CAMERA" ] || { [ $ON_PI = 1 ] && CAMERA=picamera2 || CAMERA=none; }

# 1. Debian packages: Python's venv, zbar for barcodes in photos, gpsd for the receiver; on a Pi the camera's
#    libcamera bindings (picamera2 exists only as the apt package python3-picamera2).
APT_PACKAGES=(python3-venv libzbar0 gpsd gpsd-clients)
[ $ON_PI = 0 ] || APT_PACKAGES+=(python3-picamera2)
if [ -z "$DESTDIR" ] && [ "${SKIP_APT:-0}" != 1 ]; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "install.sh: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# 2. The service user: no login, no home, in the groups that own serial ports and cameras.
if [ -z "$DESTDIR" ]; then
    getent group dialout >/dev/null || groupadd --system dialout
    getent group video >/dev/null || groupadd --system video
    if ! id flexedge >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /var/lib/flexedge \
                --shell /usr/sbin/nologin --groups dialout,video flexedge
    fi
fi

# 3. The program: a virtualenv under PREFIX with the package installed from this checkout. On a Pi the venv
#    sees the system's site-packages, so `import picamera2` finds the apt package.
if [ -z "$DESTDIR" ]; then
    install -d -m 0755 "$PREFIX"
    VENV_OPTS=()
    [ $ON_PI = 0 ] || VENV_OPTS+=(--system-site-packages)
    [ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "${VENV_OPTS[@]}" "$PREFIX/venv"
    "$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
    # Every package pinned and hash-checked (systemd/requirements.lock, made by tools/lock.sh), then the
    # project alone, built with the locked setuptools.
    "$PREFIX/venv/bin/python" -m pip install -q --require-hashes -r "$SOURCE/systemd/requirements.lock"
    "$PREFIX/venv/bin/python" -m pip install -q --no-deps --no-build-isolation "$SOURCE"
    install -m 0644 "$SOURCE/README.md" "$PREFIX/README.md"
fi
[ -x "$FLEXEDGE" ] || die "$FLEXEDGE missing (with DESTDIR, PREFIX must hold a venv with flexedge installed)"

# 4. Config and certificates: /etc/flexedge root:flexedge 0770 (the service may replace flexedge.toml: a remote
#    set_config, validated first and rolled back if the cloud link does not come back), /etc/flexedge/tls
#    root:flexedge 0750 and files 0640, so only root writes the certificates and only the service (and root)
#    reads them. The config is the complete reference (`flexedge config --example`) with this unit's values;
#    paths in it are relative to /etc/flexedge. The agent also logs to /var/log/flexedge/agent.log (rotated):
#    what a remote upload_logs sends, as the service user cannot read the journal.
owned() { [ -n "$DESTDIR" ] || chgrp flexedge "$@"; }
install -d -m 0755 "$UNIT_DIR"
install -d -m 0770 "$CONF_DIR"
install -d -m 0750 "$CONF_DIR/tls"
owned "$CONF_DIR" "$CONF_DIR/tls"
if [ -n "$CERTS" ]; then
    for pair in ca.crt:ca.crt "$DEVICE_ID.crt":device.crt "$DEVICE_ID.key":device.key signing.pub:signing.pub; do
        install -m 0640 "$CERTS/${pair%%:*}" "$CONF_DIR/tls/${pair##*:}"
        owned "$CONF_DIR/tls/${pair##*:}"
    done
fi
if [ ! -f "$CONF" ] || [ -n "$DEVICE_ID" ]; then
    [ ! -f "$CONF" ] || cp -p "$CONF" "$CONF.old"
    HOST=${BROKER%:*} PORT=8883
    [ "$BROKER" = "$HOST" ] || PORT=${BROKER##*:}
    "$FLEXEDGE" config --example \
        --set data_dir=/var/lib/flexedge \
        --set device.id="$DEVICE_ID" --set device.fleet="${FLEET:-demo}" --set device.station="${STATION:-DXX1}" \
        --set mqtt.host="$HOST" --set mqtt.port="$PORT" \
        --set mqtt.ca_file=tls/ca.crt --set mqtt.cert_file=tls/device.crt --set mqtt.key_file=tls/device.key \
        --set sync.cloud_key_file=tls/signing.pub --set camera.backend="$CAMERA" \
        --set logging.file=/var/log/flexedge/agent.log > "$CONF.new"
    chmod 0640 "$CONF.new"
    owned "$CONF.new"
    mv "$CONF.new" "$CONF"
fi

# 5. The data directory (systemd's StateDirectory makes it too; made here so `flexedge status` finds it
#    before the first start), the releases folder, the unit with its paths substituted, `flexedge` on the PATH.
install -d -m 0750 "$DATA_DIR"
[ -n "$DESTDIR" ] || chown flexedge:flexedge "$DATA_DIR"
# The releases folder: `current` is this installation until an over-the-air update switches it (the service
# user owns the folder: it unpacks, installs and switches releases there, the one place ProtectSystem leaves it).
"$FLEXEDGE" update init --releases "$DESTDIR$RELEASES" --base "$PREFIX"
[ -n "$DESTDIR" ] || chown -hR flexedge:flexedge "$RELEASES"
sed -e "s#/var/lib/flexedge/releases#$RELEASES#g" -e "s#/opt/flexedge#$PREFIX#g" \
    "$SOURCE/systemd/flexedge.service" > "$UNIT_DIR/flexedge.service"
chmod 0644 "$UNIT_DIR/flexedge.service"
install -d -m 0755 "$DESTDIR/usr/local/bin"
ln -sfn "$FLEXEDGE" "$DESTDIR/usr/local/bin/flexedge"  # `sudo flexedge status` on the van

# 6. Enable it (only on a live system with systemd running), then check the unit: what FAILs is what is
#    still missing.
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable flexedge.service
fi
echo "installed into ${DESTDIR:-/}; self-test:"
SELFTEST=("$FLEXEDGE" selftest --config "$CONF" --data-dir "$DATA_DIR")
[ -n "$DESTDIR" ] || SELFTEST+=(--user flexedge)
if "${SELFTEST[@]}"; then
    echo "ready: systemctl restart flexedge; journalctl -u flexedge -f; flexedge status"
else
    echo "still missing: the FAIL lines above; fix them in $CONF or $CONF_DIR/tls/, then run" \
         "flexedge selftest --user flexedge and systemctl restart flexedge"
fi
