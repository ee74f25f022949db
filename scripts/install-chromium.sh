#!/usr/bin/env bash
# Installs what the browser tests (build tag browser, make test-browser)
# need: Debian's Chromium, driven headless from Go.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-chromium: chromium is missing and I am not root: install chromium with your package manager" >&2; exit 1; }
  SUDO=sudo
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: chromium is missing and this is not a Debian-like system: install chromium yourself" >&2
  exit 1
fi
echo "install-chromium: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version >&2
