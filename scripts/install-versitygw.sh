#!/usr/bin/env bash
# Installs versitygw, the S3-compatible server the storage tests start on
# loopback, into bin/ from the Go module proxy at a pinned version. A binary
# already there is kept when `go version -m` shows it is that version.
set -euo pipefail

VERSION=v1.8.0
GO=${GO:-go}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin/versitygw"
if [ -x "$bin" ] && "$GO" version -m "$bin" 2>/dev/null | grep -q "mod[[:space:]]*github.com/versity/versitygw[[:space:]]*$VERSION"; then
  exit 0
fi
echo "install-versitygw: installing github.com/versity/versitygw $VERSION into bin/" >&2
mkdir -p "$root/bin"
# Outside the module, so framefarm's go.mod is left alone.
cd "$(mktemp -d)"
GOBIN="$root/bin" GOFLAGS=-mod=mod "$GO" install "github.com/versity/versitygw/cmd/versitygw@$VERSION"
