#!/usr/bin/env bash
# Installs what framefarm needs at run time and in tests: ffmpeg and ffprobe
# (Debian's build: libx264, libx265, libvpx, SVT-AV1, FFV1, ProRes). With
# "browser", also Debian's Chromium for the browser tests (make
# test-browser).
set -euo pipefail

# need "CMD..." PACKAGE...: installs the packages with apt-get unless every
# CMD is there.
need() {
  local cmd missing=""
  for cmd in $1; do
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
  done
  shift
  [ -z "$missing" ] && return 0
  cmd=${missing# }
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: $cmd is missing and I am not root: install $1 with your package manager" >&2; exit 1; }
    sudo=sudo
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: $cmd is missing and this is not a Debian-like system: install $1 yourself" >&2
    exit 1
  fi
  echo "install-deps: installing $* with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need "ffmpeg ffprobe" ffmpeg
if [ "${1:-}" = browser ]; then
  need chromium chromium fonts-dejavu-core
fi
