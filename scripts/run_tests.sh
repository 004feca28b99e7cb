#!/usr/bin/env bash
# README command two: set up (idempotent), lint, then run the whole test suite.
#   --quick   skip the slow integration tests (for local iteration; CI runs everything)
# Other arguments go to pytest. The tests run in ELFS_TEST_WORKERS worker processes (default 2,
# a test file each at a time; 0 runs them in this process, as pytest alone does).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
quick=false
for a in "$@"; do [ "$a" = "--quick" ] && quick=true; done
# Slow tests need headless Chromium (the App browser test, installed once through apt-get) and a
# real Label Studio server (the annotation round trip, in its own virtualenv, installed once).
# Neither needs the project venv: both install alongside it (on a fresh machine about as long as
# the project venv itself), their output shown once each is done.
if [ "$quick" = false ]; then
    logs="$(mktemp -d)"
    trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$logs"' EXIT
    bash scripts/setup_browser.sh >"$logs/browser" 2>&1 &
    browser_pid=$!
    bash scripts/setup_label_studio.sh --server-only >"$logs/label-studio" 2>&1 &
    label_studio_pid=$!
fi
bash scripts/setup.sh
if [ "$quick" = false ]; then
    failed=false
    wait "$browser_pid" || failed=true
    cat "$logs/browser"
    wait "$label_studio_pid" || failed=true
    cat "$logs/label-studio"
    rm -rf "$logs"
    [ "$failed" = false ] || exit 1
    bash scripts/setup_label_studio.sh  # the client, in the project venv (the server is ready)
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
