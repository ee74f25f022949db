#!/usr/bin/env bash
# Installs the emulators the gs:// and azblob:// storage tests start on
# loopback, into bin/ at pinned versions, keeping what is already there at
# that version:
#   bin/fake-gcs-server  Google Cloud Storage's JSON API (Go module proxy)
#   bin/azurite-blob     Azure Blob Storage (npm; bin/azurite/ holds the package)
# Azurite 3.35.0 is pinned because 3.36 and later ask for Node 21 or 22 while
# Debian's nodejs is 18; the tests pass --skipApiVersionCheck since the Azure
# SDK may speak a newer API version than this Azurite knows.
set -euo pipefail

FAKE_GCS_VERSION=v1.56.1
AZURITE_VERSION=3.35.0
GO=${GO:-go}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/bin"

gcs="$root/bin/fake-gcs-server"
if [ -x "$gcs" ] && "$GO" version -m "$gcs" 2>/dev/null | grep -q "mod[[:space:]]*github.com/fsouza/fake-gcs-server[[:space:]]*$FAKE_GCS_VERSION"; then
  :
else
  echo "install-storage-emulators: installing github.com/fsouza/fake-gcs-server $FAKE_GCS_VERSION into bin/" >&2
  # Outside the module, so framefarm's go.mod is left alone.
  (cd "$(mktemp -d)" && GOBIN="$root/bin" GOFLAGS=-mod=mod "$GO" install "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION")
fi

azdir="$root/bin/azurite"
have=""
if [ -f "$azdir/node_modules/azurite/package.json" ] && command -v node >/dev/null 2>&1; then
  have=$(node -p "require('$azdir/node_modules/azurite/package.json').version" 2>/dev/null || true)
fi
if [ "$have" != "$AZURITE_VERSION" ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null 2>&1 || { echo "install-storage-emulators: node and npm are missing and I am not root: install nodejs and npm" >&2; exit 1; }
      sudo=sudo
    fi
    echo "install-storage-emulators: installing nodejs and npm with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  echo "install-storage-emulators: installing azurite $AZURITE_VERSION into bin/azurite" >&2
  rm -rf "$azdir"
  mkdir -p "$azdir"
  # --prefix keeps it out of the global node_modules; no package-lock or
  # audit: the pin is the version above.
  npm install --prefix "$azdir" --no-audit --no-fund --no-package-lock --omit=dev --loglevel=error "azurite@$AZURITE_VERSION" >&2
fi
ln -sf "azurite/node_modules/.bin/azurite-blob" "$root/bin/azurite-blob"
