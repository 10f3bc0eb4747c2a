#!/usr/bin/env bash
# Make sure ./.venv points at a virtualenv with requirements-dev.txt installed.
#
# The virtualenv itself lives outside the clone, in a cache keyed by the hash of
# the requirements files and the Python version, so a fresh clone (or CI) reuses
# an identical environment in seconds instead of reinstalling torch (~6 GB).
# ./.venv is a symlink into that cache.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
    echo "Vitrine needs Python 3.11 or newer; found $("$PYTHON" --version 2>&1) at $PYTHON" >&2
    exit 1
fi

key="$( (cat requirements.txt requirements-dev.txt; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
if [ "$(id -u)" = 0 ]; then
    # As root, the embedded PostgreSQL runs as an unprivileged user that must be
    # able to read its binaries inside the venv; /root is not traversable for it.
    default_cache=/var/cache/vitrine/venvs
else
    default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/vitrine/venvs"
fi
cache="${VITRINE_VENV_CACHE:-$default_cache}"
target="$cache/$key"
mkdir -p "$cache"

# Say every few seconds what we are waiting for, so a slow first run never looks hung.
heartbeat() {
    local what=$1 started=$SECONDS
    while sleep 15; do echo "    … still $what ($((SECONDS - started)) s)"; done
}
with_heartbeat() {
    local what=$1; shift
    heartbeat "$what" &
    local beat=$!
    local status=0
    "$@" || status=$?
    kill "$beat" 2>/dev/null || true
    wait "$beat" 2>/dev/null || true
    return "$status"
}

# Two clones installing at once must not build the same venv twice.
exec 9>"$cache/.lock"
if ! flock -n 9; then
    echo "==> waiting for another run that is building the shared virtualenv in $cache (lock $cache/.lock)"
    with_heartbeat "waiting for the virtualenv lock" flock 9
fi
if [ ! -f "$target/.vitrine-complete" ]; then
    echo "==> creating virtualenv $target (the first run installs torch: a few minutes)"
    # Virtualenvs are not relocatable (scripts carry absolute shebangs), so build in place.
    rm -rf "$target"
    "$PYTHON" -m venv "$target"
    with_heartbeat "installing requirements-dev.txt into $target" \
        "$target/bin/python" -m pip install --quiet -r requirements-dev.txt 2> >(grep -v "is ignored: it is neither" >&2)
    touch "$target/.vitrine-complete"
fi
flock -u 9

if [ -L .venv ] || [ ! -e .venv ]; then
    ln -sfn "$target" .venv
else
    echo "note: ./.venv is a real directory, not the cached one; using it as it is" >&2
fi
