#!/usr/bin/env bash
# Regenerates systemd/requirements.lock, what systemd/install.sh puts on a van: pyproject.toml's runtime
# dependencies and its build backend, every package pinned with the hashes of all its published files.
# pip-compile (pip-tools, pinned below, in a throw-away venv) resolves with pip's own resolver for this
# interpreter, which must be CPython 3.11 on Linux; then pip checks that every pin has a hash-matching wheel
# for each van platform (64-bit Pi and x86-64), so a van never builds from source. Needs the registry.
# Run it after changing a dependency in pyproject.toml; tests/test_packaging.py checks the lock still covers it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PIP_TOOLS=pip-tools==7.6.2
LOCK=systemd/requirements.lock
MACHINES=(aarch64 x86_64)
GLIBC_MINOR=36  # glibc 2.36: Raspberry Pi OS 12, Debian 12

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11) and sys.platform == "linux", sys.version' \
    || { echo "lock.sh: needs CPython 3.11 on Linux (PYTHON=...)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q "$PIP_TOOLS"
# The build backend is locked too: install.sh builds the project without fetching anything unpinned.
"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
    > "$tmp/build-system.in"
# --allow-unsafe: pip and setuptools belong in the lock (sqlite-utils needs pip; the build needs setuptools).
# --only-binary: a van has no compiler, so only releases with wheels (cobs 1.2.2 is source only: the lock
# takes 1.2.0, a pure-Python wheel, about 2.5 us per frame each way).
CUSTOM_COMPILE_COMMAND=tools/lock.sh "$tmp/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
    --strip-extras --no-emit-find-links --no-emit-index-url --no-emit-trusted-host --annotation-style line \
    --pip-args "--only-binary=:all:" --output-file "$tmp/requirements.lock" pyproject.toml "$tmp/build-system.in"
sed -i "s#$tmp/build-system.in#pyproject.toml (build-system)#" "$tmp/requirements.lock"
for machine in "${MACHINES[@]}"; do
    platforms=()  # pip takes the tags as given: every manylinux tag such a glibc runs
    for minor in $(seq 5 "$GLIBC_MINOR"); do platforms+=(--platform "manylinux_2_${minor}_$machine"); done
    platforms+=(--platform "manylinux2014_$machine")
    [ "$machine" != x86_64 ] || platforms+=(--platform manylinux2010_x86_64 --platform manylinux1_x86_64)
    "$tmp/venv/bin/python" -m pip download -q --require-hashes --only-binary=:all: "${platforms[@]}" \
        --python-version 3.11 --implementation cp -d "$tmp/wheels-$machine" -r "$tmp/requirements.lock"
done
mv "$tmp/requirements.lock" "$LOCK"
echo "wrote $LOCK: $(grep -c '==' "$LOCK") packages, wheels checked for Linux ${MACHINES[*]}, glibc 2.$GLIBC_MINOR"
