#!/usr/bin/env bash
# Measures a cold start (issue 13): two nodes start first, their ambassadors
# STAGGER seconds later, the coordinator STAGGER seconds after that. Prints
# how long after the coordinator listened the first set was granted, and
# the sets each node was granted. Usage: scripts/coldstart.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/framefarm}
RUNS=${1:-3}
STAGGER=${STAGGER:-3}
PORT=${COLDSTART_PORT:-5655}
WORK=$(mktemp -d /tmp/framefarm-coldstart-XXXXXX)
COORD=127.0.0.1:$PORT

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/frames"
ffmpeg -v error -f lavfi -i "testsrc2=s=320x240:r=24" -frames:v 96 -start_number 1 "$WORK/frames/f_%04d.png"

# ms prints a log line's time= as milliseconds since the epoch.
ms() { date -d "$(sed -E 's/^time=([^ ]+).*/\1/' <<<"$1")" +%s%3N; }

for run in $(seq "$RUNS"); do
  logs=$WORK/run-$run
  mkdir -p "$logs"
  pids=()
  for i in 1 2; do
    "$BIN" node --ambassador "127.0.0.1:$((PORT + i))" --name "node-$i" --once >"$logs/node-$i.log" 2>&1 &
    pids+=($!)
  done
  sleep "$STAGGER"
  for i in 1 2; do
    "$BIN" ambassador --coordinator "$COORD" --listen "127.0.0.1:$((PORT + i))" >"$logs/ambassador-$i.log" 2>&1 &
    pids+=($!)
  done
  sleep "$STAGGER"
  "$BIN" coordinator --frames "$WORK/frames" --data "$logs/data" --listen "$COORD" \
    --codec libx264 --preset veryfast --sets 4 --poll-window 2s >"$logs/coordinator.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do grep -q 'msg=set_granted' "$logs/coordinator.log" 2>/dev/null && break; sleep 0.1; done
  "$BIN" fetch --coordinator "$COORD" -o "$logs/out.mp4" --wait >/dev/null 2>&1 || echo "run $run: fetch failed"
  listening=$(grep -m1 'msg="coordinator listening"' "$logs/coordinator.log")
  granted=$(grep -m1 'msg=set_granted' "$logs/coordinator.log" || true)
  if [ -z "$granted" ]; then
    echo "run $run: no set granted"
  else
    echo "run $run: first set granted $(( $(ms "$granted") - $(ms "$listening") )) ms after the coordinator listened;" \
      "sets granted: node-1 $(grep -c 'msg=set_granted.*node=node-1' "$logs/coordinator.log" || true)," \
      "node-2 $(grep -c 'msg=set_granted.*node=node-2' "$logs/coordinator.log" || true)"
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
done
