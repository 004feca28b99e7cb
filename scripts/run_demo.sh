#!/usr/bin/env bash
# README command one: set up (idempotent), then select a coreset on a real image dataset, offline.
# Arguments are passed to examples/select_coreset.py (try --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
export FIFTYONE_DATABASE_VALIDATION="${FIFTYONE_DATABASE_VALIDATION:-false}"
export FIFTYONE_DO_NOT_TRACK="${FIFTYONE_DO_NOT_TRACK:-true}"
exec "${ELFS_VENV:-$root/.venv}/bin/python" "$root/examples/select_coreset.py" "$@"
