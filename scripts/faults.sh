#!/usr/bin/env bash
# The fault tests (issue 3): kill -9 of nodes and of the coordinator, SIGTERM,
# zombies, corrupt uploads, a failing ffmpeg, a 30s coordinator outage and a
# cut network link (a network namespace; skipped, and said so, where
# `ip netns add` is not permitted), graceful shutdown. Every trial renders a
# fresh job and checks its video frame by frame against one ffmpeg run.
# Run through `make test-faults`. About 10 minutes on 2 cores.
#
# It prints one line per scenario, "name: N passed, M failed", and exits
# non-zero if any trial failed. FAULTS_RUN narrows the scenarios (a -run
# regexp), e.g. FAULTS_RUN=TestFaultNodeKill.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
RUN=${FAULTS_RUN:-TestFault}
LOG=${FAULTS_LOG:-$(mktemp -t framefarm-faults-XXXXXX.log)}

$GO vet -tags faults ./... || exit 1
start=$(date +%s)
$GO test -tags faults -run "$RUN" -count=1 -timeout 40m -v ./cmd/framefarm 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo
echo "== fault scenarios ($(( $(date +%s) - start ))s; full log: $LOG)"
grep -E '^[a-z0-9-]+: ([0-9]+ passed, [0-9]+ failed|a dead node)|^  TestFault|^--- SKIP|^    .*skipped' "$LOG" || true
if [ "$status" -ne 0 ]; then
  echo "== FAILED: go test exited $status; failures:"
  grep -E '^\s*--- FAIL' "$LOG" || true
fi
exit "$status"
