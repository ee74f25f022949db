#!/usr/bin/env bash
# Runs every fuzz target of framefarm, one after the other, each for
# FUZZTIME (default 10s; `make fuzz` in CI, longer by hand:
# FUZZTIME=10m scripts/fuzz.sh). Name targets to run only those:
#   scripts/fuzz.sh FuzzScan FuzzNodeRequests
# An input that fails is written under the package's testdata/fuzz/<Target>/;
# commit it with the fix, so that `go test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
# Minimizing each new interesting input may otherwise take the whole budget.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}

targets=(
	"./internal/frameseq FuzzParseName"
	"./internal/frameseq FuzzScan"
	"./internal/ffmpeg FuzzWriteConcatList"
	"./internal/mp4 FuzzRead"
	"./internal/mp4 FuzzJoinPart"
	"./internal/ffmpeg FuzzReadMatroska"
	"./internal/creds FuzzChecker"
	"./coordinator FuzzNodeRequests"
)

failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then
		continue
	fi
	echo "== $name ($pkg, $FUZZTIME)"
	if ! "$GO" test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg"; then
		failed+=("$name")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzzing found failures in: ${failed[*]} (inputs under testdata/fuzz/)" >&2
	exit 1
fi
