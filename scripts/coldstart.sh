#!/usr/bin/env bash
# Measures a cold start (issue 13) on a local farm of two render machines:
# the roles start in ORDER (default: the nodes first, their ambassadors
# STAGGER seconds later, the coordinator STAGGER seconds after that). For
# each node it prints how long after it could work (it runs, its ambassador
# and the coordinator listen) it was granted its first set, and how many
# sets each node was granted.
# Usage: [BIN=bin/framefarm] [ORDER="node ambassador coordinator"] [STAGGER=3] scripts/coldstart.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/framefarm}
RUNS=${1:-3}
STAGGER=${STAGGER:-3}
ORDER=${ORDER:-node ambassador coordinator}
PORT=${COLDSTART_PORT:-5655}
WORK=$(mktemp -d /tmp/framefarm-coldstart-XXXXXX)
COORD=127.0.0.1:$PORT

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/frames"
ffmpeg -v error -f lavfi -i "testsrc2=s=320x240:r=24" -frames:v 96 -start_number 1 "$WORK/frames/f_%04d.png"

# ms prints the time of the first line of a log that matches a pattern, in
# milliseconds since the epoch.
ms() { date -d "$(grep -m1 "$2" "$1" | sed -E 's/^time=([^ ]+).*/\1/')" +%s%3N; }

for run in $(seq "$RUNS"); do
  logs=$WORK/run-$run
  mkdir -p "$logs"
  pids=()
  nodes_started=0
  first=1
  for role in $ORDER; do
    [ "$first" = 1 ] || sleep "$STAGGER"
    first=0
    case $role in
    node)
      nodes_started=$(date +%s%3N)
      for i in 1 2; do
        "$BIN" node --ambassador "127.0.0.1:$((PORT + i))" --name "node-$i" --once >"$logs/node-$i.log" 2>&1 &
        pids+=($!)
      done ;;
    ambassador)
      for i in 1 2; do
        "$BIN" ambassador --coordinator "$COORD" --listen "127.0.0.1:$((PORT + i))" >"$logs/ambassador-$i.log" 2>&1 &
        pids+=($!)
      done ;;
    coordinator)
      "$BIN" coordinator --frames "$WORK/frames" --data "$logs/data" --listen "$COORD" \
        --codec libx264 --preset veryfast --sets 4 --poll-window 2s >"$logs/coordinator.log" 2>&1 &
      pids+=($!) ;;
    esac
  done
  for _ in $(seq 300); do grep -q 'msg=set_granted' "$logs/coordinator.log" 2>/dev/null && break; sleep 0.1; done
  "$BIN" fetch --coordinator "$COORD" -o "$logs/out.mp4" --wait >/dev/null 2>&1 || echo "run $run: fetch failed"
  if ! grep -q 'msg=set_granted' "$logs/coordinator.log"; then
    echo "run $run: no set granted"
  else
    line="run $run ($ORDER, ${STAGGER}s apart): first set granted"
    coord_up=$(ms "$logs/coordinator.log" 'msg="coordinator listening"')
    for i in 1 2; do
      # A node can work once it runs, its ambassador listens and the
      # coordinator listens: its wait is counted from the last of these.
      up=$nodes_started
      for t in "$coord_up" "$(ms "$logs/ambassador-$i.log" 'msg="ambassador listening"')"; do
        [ "$t" -gt "$up" ] && up=$t
      done
      if grep -q "msg=set_granted.*node=node-$i " "$logs/coordinator.log"; then
        line+=" to node-$i $(( $(ms "$logs/coordinator.log" "msg=set_granted.*node=node-$i ") - up )) ms"
      else
        line+=" to node-$i never"
      fi
      [ "$i" = 1 ] && line+=","
    done
    line+=" after it could work; sets granted: node-1 $(grep -c 'msg=set_granted.*node=node-1 ' "$logs/coordinator.log" || true),"
    line+=" node-2 $(grep -c 'msg=set_granted.*node=node-2 ' "$logs/coordinator.log" || true)"
    echo "$line"
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
done
