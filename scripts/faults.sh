#!/usr/bin/env bash
# The fault tests (issue 3): kill -9 of nodes and of the coordinator, SIGTERM,
# zombies, corrupt uploads, a failing ffmpeg, a 30s coordinator outage and a
# cut network link (a network namespace; skipped, and said so, where
# `ip netns add` is not permitted and this is not root), graceful shutdown; and (issue 17) the
# coordinator's --data full, a node's own machine failing it (no ffmpeg, a
# full --work), hostile HTTP/2 clients (slow senders, a connection flood,
# under a descriptor limit set with prlimit) and a slow lossy link (tc tbf,
# iptables, a delaying proxy). Every trial renders a fresh job and checks its
# video frame by frame against one ffmpeg run.
# Run through `make test-faults`. About 6 minutes on 2 cores.
#
# It prints one line per scenario, "name: N passed, M failed", and exits
# non-zero if any trial failed. FAULTS_RUN narrows the scenarios (a -run
# regexp), e.g. FAULTS_RUN=TestFaultNodeKill.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
RUN=${FAULTS_RUN:-TestFault}
LOG=${FAULTS_LOG:-$(mktemp -t framefarm-faults-XXXXXX.log)}

# The network scenarios need ip, tc and iptables, the flood prlimit. As
# root with apt-get they are installed, and then a scenario that finds
# something missing fails rather than skips (FRAMEFARM_REQUIRE).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export FRAMEFARM_REQUIRE=1
  missing=""
  for c in ip:iproute2 tc:iproute2 iptables:iptables prlimit:util-linux; do
    command -v "${c%%:*}" >/dev/null 2>&1 || missing="$missing ${c#*:}"
  done
  if [ -n "$missing" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

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
