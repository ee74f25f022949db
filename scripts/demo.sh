#!/usr/bin/env bash
# The demo: renders sample frames into a video on a local farm (one
# coordinator, two render machines each with its ambassador and node), then
# fetches the result. Run it through `make demo`, which builds first.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/framefarm}
DEMO=${DEMO_DIR:-demo}
PORT=${DEMO_PORT:-5555}
FRAMES=$DEMO/frames
OUT=$DEMO/demo.mp4
COORD=127.0.0.1:$PORT

mkdir -p "$DEMO"
rm -rf "$DEMO/data" "$DEMO/logs"
mkdir -p "$DEMO/logs"
if [ ! -f "$FRAMES/shot_0240.png" ]; then
  echo "demo: generating 240 sample frames (1280x720 PNG) in $FRAMES"
  mkdir -p "$FRAMES"
  ffmpeg -v error -y -f lavfi -i "mandelbrot=s=1280x720:r=24" -frames:v 240 -start_number 1 "$FRAMES/shot_%04d.png"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" coordinator --frames "$FRAMES" --out "$OUT" --data "$DEMO/data" --listen "$COORD" \
  --fps 24 --codec libx264 --preset veryfast --sets 8 >"$DEMO/logs/coordinator.log" 2>&1 &
pids+=($!)
for i in 1 2; do
  port=$((PORT + i))
  "$BIN" ambassador --coordinator "$COORD" --listen "127.0.0.1:$port" >"$DEMO/logs/ambassador-$i.log" 2>&1 &
  pids+=($!)
  "$BIN" node --ambassador "127.0.0.1:$port" --name "demo-node-$i" --once >"$DEMO/logs/node-$i.log" 2>&1 &
  pids+=($!)
done

for _ in $(seq 50); do "$BIN" status --coordinator "$COORD" >/dev/null 2>&1 && break; sleep 0.2; done
echo "demo: farm started (coordinator $COORD, 2 nodes); logs in $DEMO/logs"
echo "demo: watch progress from another terminal with:"
echo "        $BIN status --coordinator $COORD --watch"
# The web app is on 127.0.0.1:8080 unless that port was taken (the
# coordinator then runs without it and says so in its log).
web=$(sed -n 's/.*msg="web app listening" addr=\([^ ]*\).*/\1/p' "$DEMO/logs/coordinator.log" | head -1)
if [ -n "$web" ]; then
  echo "demo: or in a browser (jobs, the sets live, nodes): http://$web/"
fi
"$BIN" fetch --coordinator "$COORD" -o "$DEMO/fetched.mp4" --wait
"$BIN" status --coordinator "$COORD" | tee "$DEMO/status.txt"
echo
# Both machines must have rendered: a node left idle by a slow start (issue
# 13) would still give a good video, only slower.
for i in 1 2; do
  sets=$(grep -cE "^[0-9]+ .* demo-node-$i " "$DEMO/status.txt" || true)
  if [ "$sets" -eq 0 ]; then
    echo "demo: demo-node-$i rendered no set; see $DEMO/logs/node-$i.log and $DEMO/logs/ambassador-$i.log" >&2
    exit 1
  fi
  echo "demo: demo-node-$i rendered $sets of the sets"
done
echo "demo: the video is $OUT ($(ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$OUT") frames, $(ffprobe -v error -show_entries format=duration -of csv=p=0 "$OUT") s)"
echo "demo: play it with: ffplay $OUT   (or any video player)"
