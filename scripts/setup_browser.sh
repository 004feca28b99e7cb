#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the App browser test (tests/test_app_browser.py).
# Idempotent: does nothing when both are present. Installs Debian's `chromium` and
# `chromium-driver` with apt-get (as root, or through passwordless sudo); Playwright's own browser
# download is not needed. ELFS_CHROMIUM / ELFS_CHROMEDRIVER point the test at other binaries.
set -euo pipefail
chromium="${ELFS_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
driver="${ELFS_CHROMEDRIVER:-$(command -v chromedriver || true)}"
if [ -n "$chromium" ] && [ -n "$driver" ]; then
    echo "[setup-browser] chromium and chromedriver present: $chromium, $driver"
    exit 0
fi
if [ "$(id -u)" = "0" ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "[setup-browser] ERROR: chromium/chromedriver are missing and apt-get needs root." >&2
    echo "[setup-browser] Fix: sudo apt-get install chromium chromium-driver" >&2
    echo "[setup-browser]      (or set ELFS_CHROMIUM and ELFS_CHROMEDRIVER to your binaries)" >&2
    exit 1
fi
echo "[setup-browser] installing chromium and chromium-driver with apt-get (first time: ~1 min)"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -q chromium chromium-driver \
        >/tmp/elfs-setup-browser.log 2>&1; then
    "${sudo[@]}" apt-get update -q >>/tmp/elfs-setup-browser.log 2>&1
    "${sudo[@]}" apt-get install -y -q chromium chromium-driver \
        >>/tmp/elfs-setup-browser.log 2>&1 || {
        echo "[setup-browser] ERROR: apt-get failed; see /tmp/elfs-setup-browser.log" >&2
        exit 1
    }
fi
echo "[setup-browser] $(chromium --version 2>/dev/null | head -1)"
