#!/usr/bin/env bash
# README command two: set up (idempotent), lint, then run the whole test suite.
#   --quick   skip the slow integration tests (for local iteration; CI runs everything)
# Other arguments go to pytest. The tests run in ELFS_TEST_WORKERS worker processes (default 2,
# a test file each at a time; 0 runs them in this process, as pytest alone does).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
quick=false
for a in "$@"; do [ "$a" = "--quick" ] && quick=true; done
# Slow tests need headless Chromium (the App browser test, installed once through apt-get) and a
# real Label Studio server (the annotation round trip, in its own virtualenv, installed once).
if [ "$quick" = false ]; then
    bash scripts/setup_browser.sh
    bash scripts/setup_label_studio.sh
fi
venv="${ELFS_VENV:-$root/.venv}"
args=()
for a in "$@"; do
    if [ "$a" = "--quick" ]; then args+=(-m "not slow"); else args+=("$a"); fi
done
echo "[tests] ruff"
"$venv/bin/ruff" check fiftyone_elfs tests examples scripts benchmarks
echo "[tests] pytest"
workers="${ELFS_TEST_WORKERS:-2}"
exec "$venv/bin/python" -m pytest -ra -n "$workers" --dist loadfile "${args[@]}"
