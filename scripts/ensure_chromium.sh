#!/usr/bin/env bash
# Make sure a headless Chromium is available for the report rendering test.
# Prints the path of the browser binary on stdout and exits 0, or explains on stderr and exits 1.
# Installs Debian's `chromium` package with apt-get when it is missing and we are root (or have
# passwordless sudo). Set ARR_NO_APT=1 to forbid the install (the caller then gets exit 1).
set -euo pipefail

find_browser() {
  for b in "${ARR_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
    [ -n "$b" ] || continue
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}

if find_browser; then exit 0; fi

if [ "${ARR_NO_APT:-0}" = "1" ]; then
  echo "ensure_chromium: no chromium on PATH and ARR_NO_APT=1 forbids installing it" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure_chromium: chromium is missing and this user cannot run apt-get (not root, no sudo)." >&2
    echo "  install it with: apt-get install -y chromium   (or set ARR_CHROMIUM=/path/to/chrome)" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: chromium is missing and there is no apt-get here; set ARR_CHROMIUM=/path/to/chrome" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
{
  $SUDO apt-get install -y --no-install-recommends chromium \
    || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends chromium; }
} >&2 || { echo "ensure_chromium: apt-get install chromium failed (see above)" >&2; exit 1; }

if find_browser; then exit 0; fi
echo "ensure_chromium: apt-get finished but no chromium binary is on PATH" >&2
exit 1
