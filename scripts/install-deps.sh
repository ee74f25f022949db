#!/usr/bin/env bash
# Installs what framefarm needs at run time and in tests: ffmpeg and ffprobe
# (Debian's build: libx264, libx265, libvpx, SVT-AV1, FFV1, ProRes).
set -euo pipefail

if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: ffmpeg is missing and I am not root: install ffmpeg with your package manager" >&2; exit 1; }
  SUDO=sudo
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: ffmpeg is missing and this is not a Debian-like system: install ffmpeg (with ffprobe) yourself" >&2
  exit 1
fi
echo "install-deps: installing ffmpeg with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
ffmpeg -hide_banner -version | awk 'NR==1' >&2
