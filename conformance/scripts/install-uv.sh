#!/usr/bin/env bash
# Installs pinned uv releases from PyPI, one Python venv per version, into
# <repo>/.uv-versions/<version>/, and builds the offline probe wheel into
# <repo>/.uv-versions/wheels/.
#
# Usage: install-uv.sh [VERSION...]
#   With no argument it installs every version the fidelity suite uses.
#   Prints the path of each bin/uv (one line per version, in argument order).
#   Idempotent: a version whose bin/uv already reports that version is skipped.
#   Exits non-zero, saying which version failed, when pip cannot install it.
#   Concurrent installs are serialised with flock(1) on <dest>/.install.lock, the same
#   lock `cachelock_conformance::realuv::ensure_uv` takes (it sets
#   CACHELOCK_UV_INSTALL_LOCKED=1 when it already holds it).
set -euo pipefail

# The versions the fidelity suite compares with the model's uv policies:
#   0.8.19 -> uv-0.8.19, 0.8.20 -> uv-0.8.20, 0.13.9 (newest 0.13.x on PyPI) -> uv-0.13.
DEFAULT_VERSIONS=(0.8.19 0.8.20 0.13.9)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${CACHELOCK_UV_VERSIONS_DIR:-$root/.uv-versions}"
python="${PYTHON:-python3}"

if [ "$#" -eq 0 ]; then
    set -- "${DEFAULT_VERSIONS[@]}"
fi

if ! command -v "$python" >/dev/null 2>&1; then
    echo "install-uv.sh: $python not found; a system Python 3 with venv is needed" >&2
    exit 1
fi

mkdir -p "$dest"

if [ -z "${CACHELOCK_UV_INSTALL_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
    exec 9>"$dest/.install.lock"
    flock 9
fi

# The probe wheel needs no network: it is written by Python's zipfile.
if ! "$python" "$here/../gate/scripts/build-probe-wheel.py" "$dest/wheels" >/dev/null; then
    echo "install-uv.sh: could not build the clprobe wheel into $dest/wheels" >&2
    exit 1
fi

for version in "$@"; do
    if ! [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
        echo "install-uv.sh: '$version' is not a uv version (expected X.Y.Z)" >&2
        exit 1
    fi
    venv="$dest/$version"
    uv="$venv/bin/uv"
    if [ -x "$uv" ] && [ "$("$uv" --version 2>/dev/null | awk '{print $2}')" = "$version" ]; then
        echo "$uv"
        continue
    fi
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >&2; then
        echo "install-uv.sh: '$python -m venv $venv' failed for uv $version" >&2
        exit 1
    fi
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$version" >&2; then
        rm -rf "$venv"
        echo "install-uv.sh: pip could not install uv==$version from PyPI (network or index unreachable?)" >&2
        exit 1
    fi
    got="$("$uv" --version 2>/dev/null | awk '{print $2}')"
    if [ "$got" != "$version" ]; then
        echo "install-uv.sh: installed uv reports '$got', expected $version" >&2
        exit 1
    fi
    echo "$uv"
done
