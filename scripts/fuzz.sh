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
	# Go 1.26's fuzzing coordinator can end a run that found nothing with a
	# bare "context deadline exceeded" as -fuzztime expires (golang/go#75804,
	# fixed in Go 1.27). Such a run wrote no failing input: run it again,
	# twice at most. A real finding ("Failing input written", a panic, a
	# t.Error) fails at once.
	for try in 1 2 3; do
		log=$(mktemp)
		set +e
		"$GO" test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg" 2>&1 | tee "$log"
		status=${PIPESTATUS[0]}
		set -e
		deadline_only=0
		if [ "$status" -ne 0 ] && grep -q 'context deadline exceeded' "$log" &&
			! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
			deadline_only=1
		fi
		rm -f "$log"
		if [ "$status" -eq 0 ]; then break; fi
		if [ "$deadline_only" = 0 ]; then
			failed+=("$name")
			break
		fi
		echo "== $name: the run ended on Go's fuzztime deadline race with nothing found (try $try)"
		if [ "$try" = 3 ]; then failed+=("$name"); fi
	done
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzzing found failures in: ${failed[*]} (inputs under testdata/fuzz/)" >&2
	exit 1
fi
