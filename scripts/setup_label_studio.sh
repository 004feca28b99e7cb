#!/usr/bin/env bash
# Label Studio for the annotation round-trip tests, offline (PyPI only). Idempotent: a second run
# is fast (stamp files). `--server-only` installs only the server, which needs nothing from the
# project venv (run_tests.sh runs it alongside scripts/setup.sh).
#   client: label-studio-sdk and the few packages it imports, into the project venv with
#           `--no-deps` (pins and the reason in constraints-labelstudio.txt); no other package
#           in that venv changes version.
#   server: label-studio in its OWN virtualenv (ELFS_LABEL_STUDIO_VENV, default
#           .label-studio-venv), never the project venv: its dependencies clash with ours.
#           Every package there is pinned (constraints-labelstudio-server.txt, with the reason);
#           a venv whose versions differ from the file is brought back to it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${ELFS_VENV:-$root/.venv}"
ls_venv="${ELFS_LABEL_STUDIO_VENV:-$root/.label-studio-venv}"
ls_version="1.23.2"
python="${PYTHON:-python3}"
pins_file="constraints-labelstudio.txt"
server_pins_file="constraints-labelstudio-server.txt"

server_only=false
for a in "$@"; do
    case "$a" in
        --server-only) server_only=true ;;
        *)
            echo "[setup-ls] ERROR: unknown argument '$a'. Fix: no argument, or --server-only" >&2
            exit 2
            ;;
    esac
done

if [ "$server_only" = false ]; then
    if [ ! -x "$venv/bin/python" ]; then
        echo "[setup-ls] ERROR: no project venv at $venv. Fix: bash scripts/setup.sh first" >&2
        exit 1
    fi
    pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    mapfile -t pins < <(grep -Ev '^[[:space:]]*(#|$)' "$pins_file")
    names=("${pins[@]%%==*}")

    # --- client: label-studio-sdk in the project venv ----------------------------------------
    stamp="$venv/.fiftyone-elfs-labelstudio-sdk"
    want="$(sha256sum "$pins_file" | cut -c1-16)"
    # The stamp plus a cheap metadata check (someone may have uninstalled or upgraded a pin since).
    installed_ok() {
        "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version

for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
PY
    }
    if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ] && installed_ok; then
        echo "[setup-ls] label-studio-sdk client up to date in $venv"
    else
        echo "[setup-ls] installing ${pins[*]} into $venv (--no-deps)"
        before="$(mktemp)"
        after="$(mktemp)"
        trap 'rm -f "$before" "$after"' EXIT
        # Everything except the pinned packages themselves must keep its version.
        skip="$(printf '%s\n' "${names[@]}" | tr '[:upper:]_' '[:lower:]-' | paste -sd'|')"
        freeze() {
            "${pip[@]}" list --format=freeze 2>/dev/null | tr '[:upper:]_' '[:lower:]-' \
                | grep -Ev "^($skip)==" | sort
        }
        freeze >"$before"
        "${pip[@]}" install -q --no-deps -c "$pins_file" "${names[@]}"
        freeze >"$after"
        if ! diff -u "$before" "$after" >&2; then
            echo "[setup-ls] ERROR: installing the Label Studio client changed other packages (diff above)." >&2
            echo "[setup-ls] Fix: bash scripts/setup.sh to restore the pins in constraints.txt" >&2
            exit 1
        fi
        if ! "$venv/bin/python" -c "import label_studio_sdk; label_studio_sdk.Client; \
    import label_studio_sdk.converter.brush; import fiftyone.utils.labelstudio" 2>/tmp/elfs-setup-ls.log; then
            tail -5 /tmp/elfs-setup-ls.log >&2
            echo "[setup-ls] ERROR: label_studio_sdk does not import in $venv (traceback above)." >&2
            echo "[setup-ls] Fix: a missing module means $pins_file lacks a --no-deps dependency:" >&2
            echo "[setup-ls]      add it there with an exact pin, then run this script again" >&2
            exit 1
        fi
        echo "$want" >"$stamp"
        echo "[setup-ls] label_studio_sdk imports; no other package in $venv changed"
    fi
fi

# --- server: label-studio in its own virtualenv ----------------------------------------------
ls_stamp="$ls_venv/.fiftyone-elfs-label-studio"
ls_want="$ls_version $(sha256sum "$server_pins_file" | cut -d' ' -f1)"
if [ "$(cat "$ls_stamp" 2>/dev/null || true)" = "$ls_want" ] && [ -x "$ls_venv/bin/label-studio" ]; then
    echo "[setup-ls] label-studio $ls_version server up to date in $ls_venv"
else
    if [ ! -x "$ls_venv/bin/python" ]; then
        echo "[setup-ls] creating virtualenv $ls_venv"
        "$python" -m venv "$ls_venv"
    fi
    if ! grep -qx "label-studio==$ls_version" "$server_pins_file"; then
        echo "[setup-ls] ERROR: $server_pins_file does not pin label-studio==$ls_version." >&2
        echo "[setup-ls] Fix: freeze a working label-studio $ls_version venv into it" >&2
        exit 1
    fi
    echo "[setup-ls] installing label-studio==$ls_version and its pinned dependencies" \
        "($server_pins_file) into $ls_venv (first time: ~2 min)"
    if ! "$ls_venv/bin/python" -m pip --disable-pip-version-check install -q \
            -r "$server_pins_file" >/tmp/elfs-setup-ls-server.log 2>&1; then
        tail -20 /tmp/elfs-setup-ls-server.log >&2
        echo "[setup-ls] ERROR: pip could not install the pins of $server_pins_file (log above)." >&2
        echo "[setup-ls] Fix: check that PyPI is reachable, or delete $ls_venv and run again" >&2
        exit 1
    fi
    echo "$ls_want" >"$ls_stamp"
fi
echo "[setup-ls] server: $ls_venv/bin/label-studio"
