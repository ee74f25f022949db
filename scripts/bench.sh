#!/usr/bin/env bash
# The benchmarks of issue 5: framefarm side by side with plain ffmpeg (and
# cat/cp), in the same run, as medians of several runs with the ratio to
# the baseline. Prints a markdown table and writes it, with the machine it
# ran on, to BENCHMARKS.md (between the "bench:begin/end" markers; the text
# around them is kept).
#
#   scripts/bench.sh           # make bench: the full suite, < 20 min on 2 cores
#   scripts/bench.sh --quick   # make bench-quick: small inputs, < 3 min; for CI
#
# bench-quick fails only when the farm breaks (a run fails, a video has the
# wrong frame count, the load-generated job does not finish); no timing is
# ever asserted. Its table goes to $BENCH_DIR/BENCHMARKS-quick.md.
#
# Environment: BENCH_DIR (inputs, cached between runs, and run folders;
# default /tmp/framefarm-bench), BENCH_REPS (runs per measurement),
# BENCH_OUT (the markdown file), BENCH_CPU_SHARES (cgroup v1 cpu.shares of
# the bench's parent group, 4096: on a shared machine the bench then gets
# about as much CPU as 4 busy threads would), BENCH_NO_CGROUP=1,
# BENCH_PROFILE=0/1 (pprof of the coordinator and a node during one run of
# the overhead and capacity sections; on in the full run; profiles in the run
# folder),
# KEEP_RUNS=1 (keep data folders), NODE_ARGS (extra flags for every node,
# e.g. "--slots 1" for a before/after), BENCH_ONLY="capacity dataplane" (run only
# these sections; the table then goes to the run folder unless BENCH_OUT),
# VERSITYGW (the S3 server of the bucket section; default bin/versitygw,
# which scripts/install-versitygw.sh puts there).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
if [ "${1:-}" = --quick ]; then QUICK=1; fi
BIN=${BIN:-$ROOT/bin/framefarm}
LOADGEN=${LOADGEN:-$ROOT/bin/loadgen}
BENCH_DIR=${BENCH_DIR:-/tmp/framefarm-bench}
FRAMES_DIR=$BENCH_DIR/frames
RUN=$BENCH_DIR/run-$(date +%Y%m%d-%H%M%S)-$$
RES=$RUN/results.tsv
NOTES=$RUN/notes.tsv
PROF=$RUN/profiles
mkdir -p "$RUN" "$FRAMES_DIR" "$PROF"
: >"$RES"
: >"$NOTES"

# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"
# shellcheck source=scripts/bench/report.sh
source "$ROOT/scripts/bench/report.sh"

cleanup() {
	stop_all
	cg_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in ffmpeg ffprobe awk taskset; do
	command -v $tool >/dev/null || die "$tool is missing (make deps installs ffmpeg)"
done
[ -x "$BIN" ] || die "$BIN is missing: run make build"
[ -x "$LOADGEN" ] || die "$LOADGEN is missing: go build -o bin/loadgen ./scripts/loadgen"
VERSITYGW=${VERSITYGW:-$ROOT/bin/versitygw}

T_START=$EPOCHREALTIME
cg_init
log "run folder $RUN; CPU emulation: $CG_MODE ($CG_REASON)"
BUSY0=$(busy_seconds)
BENCHCPU0=$(cg_cpu)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- parameters
if [ $QUICK = 1 ]; then
	MODE=quick
	REPS=${BENCH_REPS:-1}
	O_FRAMES=q360 O_N=120 O_SIZE=640x360 O_SRC=testsrc2 O_PRESETS="veryfast" O_STREAM_PRESET=veryfast
	S_FRAMES=q360 S_PRESET=veryfast
	V_FRAMES=q180 V_N=24 V_SIZE=320x180 V_SRC=testsrc2
	C_FRAMES=q16 C_N=1000 C_SETS=40 C_NODES="20" C_UNTIL_DONE=1
	D_FRAMES=q360 D_SETS=4 D_ROUNDS=3 J_SRC=testsrc2
	M_FRAMES=q4k M_N=4 M_SRC=testsrc2 M_SETS=2 M_REPS=1
	B_FRAMES=q360 B_NODES="1 2" B_SETS=4 B_ROUNDS=2 B_FINALS="64 1024"
	PROFILE=${BENCH_PROFILE:-0}
else
	MODE=full
	REPS=${BENCH_REPS:-3}
	O_FRAMES=f720 O_N=600 O_SIZE=1280x720 O_SRC=mandelbrot O_PRESETS="veryfast medium" O_STREAM_PRESET=veryfast
	S_FRAMES=f720-240 S_PRESET=veryfast
	V_FRAMES=f360 V_N=96 V_SIZE=640x360 V_SRC=mandelbrot
	C_FRAMES=f16 C_N=100000 C_SETS=25000 C_NODES="100 1000" C_UNTIL_DONE=0 C_WARM=3 C_WIN=10 C_RATE=1000
	D_FRAMES=f720 D_SETS=8 D_ROUNDS=5 J_SRC=mandelbrot
	M_FRAMES=f4k M_N=24 M_SRC=mandelbrot M_SETS=4 M_REPS=1
	B_FRAMES=b720 B_N=240 B_NODES="1 2 4" B_SETS=8 B_ROUNDS=3 B_FINALS="256 4096"
	PROFILE=${BENCH_PROFILE:-1}
fi
SETS=8
# A guard on the coordinator under load: cap it and its
# children, so a thousand at once cannot take the machine's memory.
COORD_MEM=${BENCH_COORD_MEM:-4294967296}

# ---------------------------------------------------------------- inputs
# gen NAME COUNT SIZE SOURCE [DIGITS]: numbered PNG frames made by ffmpeg,
# cached in $FRAMES_DIR/NAME.
gen() {
	local name=$1 n=$2 size=$3 src=$4 digits=${5:-4} dir=$FRAMES_DIR/$1
	if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$n $size $src" ]; then return 0; fi
	rm -rf "$dir"
	mkdir -p "$dir"
	log "making $n $size $src frames in $dir"
	local t0=$EPOCHREALTIME
	ffmpeg -nostdin -v error -f lavfi -i "$src=s=$size:r=24" -frames:v "$n" -start_number 1 "$dir/f_%0${digits}d.png"
	echo "$n $size $src" >"$dir/.complete.tmp"
	mv "$dir/.complete.tmp" "$dir/.complete"
	log "  made in $(elapsed "$t0") s"
}
# subset NAME FROM COUNT: the first COUNT frames of FROM, as hard links.
subset() {
	local dir=$FRAMES_DIR/$1 from=$FRAMES_DIR/$2 n=$3
	if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$n of $2 $(cat "$from/.complete")" ]; then return 0; fi
	rm -rf "$dir"
	mkdir -p "$dir"
	find "$from" -maxdepth 1 -name 'f_*.png' | sort | awk -v n="$n" 'NR<=n' | xargs -I{} ln {} "$dir/"
	echo "$n of $2 $(cat "$from/.complete")" >"$dir/.complete"
}
count() { find -L "$FRAMES_DIR/$1" -maxdepth 1 -name 'f_*.png' 2>/dev/null | wc -l; }
bytes() { find -L "$FRAMES_DIR/$1" -maxdepth 1 -name 'f_*.png' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END{print s+0}'; }
getsize() { ffprobe -v error -show_entries stream=width,height -of csv=p=0:s=x "$(find -L "$FRAMES_DIR/$1" -maxdepth 1 -name 'f_*.png' | awk 'NR==1')"; }
SECTIONS=${BENCH_ONLY:-overhead scaling poorthreads capacity dataplane memory bucket}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
if want bucket; then
	[ -x "$VERSITYGW" ] || die "$VERSITYGW is missing (the bucket section's S3 server): run scripts/install-versitygw.sh or set VERSITYGW"
fi
if want overhead || want scaling || want dataplane || want memory || [ "$PROFILE" = 1 ] || { want bucket && [ $QUICK = 1 ]; }; then
	gen "$O_FRAMES" "$O_N" "$O_SIZE" "$O_SRC"
	rec in.o.bytes "$(bytes "$O_FRAMES")"
fi
if want scaling && [ $QUICK = 0 ]; then subset "$S_FRAMES" "$O_FRAMES" 240; fi
if want poorthreads; then gen "$V_FRAMES" "$V_N" "$V_SIZE" "$V_SRC"; fi
if want capacity || [ "$PROFILE" = 1 ]; then
	gen "$C_FRAMES" "$C_N" 16x16 testsrc2 6
	if [ $QUICK = 0 ]; then gen q16 1000 16x16 testsrc2 6; fi
fi
if want memory; then
	gen "$M_FRAMES" "$M_N" 3840x2160 "$M_SRC"
	rec in.m.bytes "$(bytes "$M_FRAMES")"
fi
if want bucket && [ $QUICK = 0 ]; then gen "$B_FRAMES" "$B_N" 1280x720 mandelbrot; fi
T_INPUTS=$(elapsed "$T_START")

# What starting one ffprobe costs on this machine (the farm starts an
# ffmpeg per set): wall and CPU per start of "ffprobe -version".
launch_cost() {
	cg_new launch
	local t0=$EPOCHREALTIME n=10
	(cg_exec launch bash -c "for i in \$(seq $n); do ffprobe -version >/dev/null; done")
	rec env.launch_ms "$(calc "$(elapsed "$t0") * 1000 / $n" 0)"
	if [ "$CG_MODE" != none ]; then rec env.launch_cpu_ms "$(calc "$(cg_cpu launch) * 1000 / $n" 0)"; fi
	cg_rm launch
}
launch_cost

# ---------------------------------------------------------------- 1 overhead
x264() { echo "-c:v libx264 -preset $1 -pix_fmt yuv420p"; }
overhead() {
	local F=$FRAMES_DIR/$O_FRAMES p r
	for p in $O_PRESETS; do
		for ((r = 1; r <= REPS; r++)); do
			log "1 overhead: $p, run $r/$REPS"
			# Alternate the order, so drift in the machine's load hits both.
			local order="ff farm"
			if [ $((r % 2)) = 0 ]; then order="farm ff"; fi
			local w
			for w in $order; do
				if [ $w = ff ]; then
					# shellcheck disable=SC2046
					ffmpeg_run "o-ff-$p-$r" "" "$RUN/o-ff.mp4" -framerate 24 -start_number 1 -i "$F/f_%04d.png" $(x264 "$p")
					rec "o.$p.ff.wall" "$R_WALL"
					rec "o.$p.ff.cpu" "$R_CPU"
					[ "$(frames_of "$RUN/o-ff.mp4")" = "$O_N" ] || die "plain ffmpeg wrote the wrong frame count"
				else
					if [ "$PROFILE" = 1 ] && [ "$p" = veryfast ] && [ "$r" = "$REPS" ]; then
						# The last run is profiled (pprof on the coordinator and the
						# node; sampling costs about 1% CPU).
						log "  (profiling the coordinator and the node during this run)"
						COORD_PPROF=1 NODE_PPROF=1 FARM_HOOK=prof_farm_hook farm_run "o-farm-$p-$r" "$F" 1 "" $SETS mp4 -- \
							--codec libx264 --preset "$p" --fps 24
						cp "$R_DIR/node-1.log" "$PROF/node-render.log"
						cp "$R_DIR/coordinator.log" "$PROF/coordinator-render.log"
					else
						farm_run "o-farm-$p-$r" "$F" 1 "" $SETS mp4 -- --codec libx264 --preset "$p" --fps 24
					fi
					rec "o.$p.farm.wall" "$R_WALL"
					rec "o.$p.set_ovh" "$R_SET_OVH"
					rec "o.$p.cpu.c" "$R_CPU_C"
					rec "o.$p.cpu.ck" "$R_CPU_CK"
					rec "o.$p.cpu.a" "$R_CPU_A"
					rec "o.$p.cpu.n" "$R_CPU_N"
					rec "o.$p.cpu.nk" "$R_CPU_NK"
					rec "o.$p.farm.cpu" "$R_CPU"
					rec "o.$p.farm.startup" "$R_STARTUP"
					rec "o.$p.farm.join_ms" "$R_JOIN_MS"
					rec "o.$p.farm.tail" "$R_TAIL"
				fi
			done
			if [ "$p" = "$O_STREAM_PRESET" ]; then
				# The same job with the frames streamed, as a node on another
				# machine without the shared folder gets them.
				log "1 overhead: $p, frames streamed, run $r/$REPS"
				NODE_ARGS="${NODE_ARGS:-} --frames-from stream" farm_run "o-stream-$p-$r" "$F" 1 "" $SETS mp4 -- --codec libx264 --preset "$p" --fps 24
				rec "o.$p.stream.wall" "$R_WALL"
				rec "o.$p.stream.cpu" "$R_CPU"
				rec "o.$p.stream.set_ovh" "$R_SET_OVH"
				rec m.small.c "$R_HWM_C"
				rec m.small.a "$R_HWM_A"
				rec m.small.n "$R_HWM_N"
			fi
		done
	done
	rm -f "$RUN/o-ff.mp4"
}

# ---------------------------------------------------------------- 2 scaling
scaling() {
	local F=$FRAMES_DIR/$S_FRAMES r n nodes cpus
	local pattern="$F/f_%04d.png"
	if [ "$CG_MODE" != none ]; then
		nodes="1 2 4"
		cpus=0.5
		note s.how "emulated: each node and its ffmpeg in a cgroup with a 0.5 CPU quota ($CG_REASON)"
	elif [ "$(nproc)" -ge 2 ]; then
		nodes="1 2"
		cpus=1
		note s.how "FALLBACK, no cgroups ($CG_REASON): each node pinned to 1 core with taskset; 4 nodes skipped (needs a CPU quota)"
		note s.skip4 "skipped: no cgroup CPU quota available ($CG_REASON)"
	else
		note s.how "skipped: no cgroups ($CG_REASON) and 1 core"
		return 0
	fi
	note s.cpus "$cpus"
	note s.what "$(count "$S_FRAMES") $(getsize "$S_FRAMES") frames"
	note s.nodes "$nodes"
	# As many runs as the others: with 4 × 0.5 CPU the nodes take the whole
	# box, so the farm's times move with anything else on the machine while
	# the baseline's (0.5 CPU) do not, and a median of 2 is a mean.
	local sreps=$REPS
	for ((r = 1; r <= sreps; r++)); do
		log "2 scaling: run $r/$sreps"
		# shellcheck disable=SC2046
		PIN=0 ffmpeg_run "s-ff-$r" "$cpus" "$RUN/s-ff.mp4" -framerate 24 -start_number 1 -i "$pattern" $(x264 $S_PRESET)
		rec s.ff.wall "$R_WALL"
		for n in $nodes; do
			farm_run "s-farm$n-$r" "$F" "$n" "$cpus" $SETS mp4 -- --codec libx264 --preset $S_PRESET --fps 24
			rec "s.$n.wall" "$R_WALL"
			rec "s.$n.set_ovh" "$R_SET_OVH"
		done
		# The most nodes again, streaming the frames (machines without the
		# shared folder).
		NODE_ARGS="${NODE_ARGS:-} --frames-from stream" farm_run "s-stream$n-$r" "$F" "$n" "$cpus" $SETS mp4 -- --codec libx264 --preset $S_PRESET --fps 24
		rec "s.${n}s.wall" "$R_WALL"
		rec "s.${n}s.set_ovh" "$R_SET_OVH"
	done
	rm -f "$RUN/s-ff.mp4"
}

# ---------------------------------------------------------------- 3 poor threading
poorthreads() {
	local encoders
	encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null || true)
	if ! grep -q ' libvpx-vp9 ' <<<"$encoders"; then
		note v.skip "skipped: this ffmpeg has no libvpx-vp9"
		return 0
	fi
	local F=$FRAMES_DIR/$V_FRAMES r
	for ((r = 1; r <= REPS; r++)); do
		log "3 VP9 (threads poorly): run $r/$REPS"
		# The farm's VP9 command line adds -row-mt 1; so does the baseline.
		ffmpeg_run "v-ff-$r" "" "$RUN/v-ff.webm" -framerate 24 -start_number 1 -i "$F/f_%04d.png" -c:v libvpx-vp9 -row-mt 1 -pix_fmt yuv420p
		rec v.ff.wall "$R_WALL"
		rec v.ff.cpu "$R_CPU"
		farm_run "v-farm-$r" "$F" 2 "" $SETS webm -- --codec libvpx-vp9 --fps 24
		rec v.farm.wall "$R_WALL"
		rec v.farm.cpu "$R_CPU"
		rec v.set_ovh "$R_SET_OVH"
	done
	rm -f "$RUN/v-ff.webm"
}

# ---------------------------------------------------------------- 4 capacity
# cap_run TAG NODES LOADGEN-FLAGS...: a fresh coordinator on the tiny-frame
# job (FFV1 parts, as checked as any), driven by loadgen. Sets C_* from its
# RESULT line.
cap_run() {
	local tag=$1 nodes=$2
	shift 2
	local d=$RUN/$tag
	rm -rf "$d"
	mkdir -p "$d"
	cg_new "$tag-c" "" "$COORD_MEM"
	local t0=$EPOCHREALTIME
	cg_exec "$tag-c" "$BIN" coordinator --frames "$FRAMES_DIR/$C_FRAMES" --data "$d/data" --listen 127.0.0.1:0 \
		--sets "$C_SETS" --codec ffv1 --fps 24 ${CAP_PPROF:+--pprof 127.0.0.1:0} >"$d/coordinator.out" 2>"$d/coordinator.log" &
	local cpid=$!
	PIDS+=("$cpid")
	local caddr
	caddr=$(wait_addr "$d/coordinator.out" "$cpid") || { tail -5 "$d/coordinator.log" >&2; die "$tag: coordinator did not start"; }
	C_STARTUP=$(elapsed "$t0")
	C_HWM_START=$(hwm "$cpid")
	C_PID=$cpid
	C_DIR=$d
	local hook=""
	if [ -n "${CAP_HOOK:-}" ]; then
		$CAP_HOOK &
		hook=$!
	fi
	timeout 1800 "$LOADGEN" cycles --coordinator "$caddr" --nodes "$nodes" --pid "$cpid" --work "$d" \
		--cgroup-usage "$(cg_usage_file "$tag-c")" "$@" >"$d/loadgen.out" 2>&1 ||
		{ cat "$d/loadgen.out" >&2; tail -5 "$d/coordinator.log" >&2; die "$tag: the load generator failed"; }
	if [ -n "$hook" ]; then wait "$hook" 2>/dev/null || true; fi
	sed -n '/^loadgen:/p' "$d/loadgen.out" | sed "s/^/  [$tag] /" >&2
	C_RESULT=$(grep '^RESULT ' "$d/loadgen.out")
	stop "$cpid"
	PIDS=()
	cg_rm "$tag-c"
}
# field KEY: a value of the last RESULT line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$C_RESULT"; }

capacity() {
	local n r
	local creps=$REPS
	if [ $QUICK = 0 ]; then creps=2; fi
	for n in $C_NODES; do
		for ((r = 1; r <= creps; r++)); do
			log "4 coordinator capacity: $n nodes, run $r/$creps"
			if [ "$C_UNTIL_DONE" = 1 ]; then
				cap_run "c$n-$r" "$n" --until-done
				[ "$(field job_state)" = done ] || die "the load-generated job did not finish: $C_RESULT"
			elif [ "$PROFILE" = 1 ] && [ "$n" = 100 ] && [ "$r" = 1 ]; then
				log "  (profiling the coordinator during this run)"
				CAP_PPROF=1 CAP_HOOK=prof_cap_hook PROF_SUFFIX="" cap_run "c$n-$r" "$n" --warmup "${C_WARM}s" --duration "${C_WIN}s"
				cp "$C_DIR/loadgen.out" "$PROF/loadgen-100.txt"
			else
				cap_run "c$n-$r" "$n" --warmup "${C_WARM}s" --duration "${C_WIN}s"
			fi
			rec c.startup "$C_STARTUP"
			rec c.hwm_start "$C_HWM_START"
			rec "c.$n.cps" "$(field cycles_per_s)"
			rec "c.$n.cycles" "$(field cycles)"
			rec "c.$n.grants" "$(field grants)"
			rec "c.$n.p50" "$(field grant_p50_ms)"
			rec "c.$n.p99" "$(field grant_p99_ms)"
			rec "c.$n.hwm" "$(field coord_hwm_kb)"
			rec "c.$n.errors" "$(field errors)"
			rec "c.$n.cg_s" "$(field coord_cgroup_cpu_s)"
			rec "c.$n.own_s" "$(field coord_cpu_s)"
			rec "c.$n.secs" "$(field seconds)"
			local cyc cg own
			cyc=$(field cycles) cg=$(field coord_cgroup_cpu_s) own=$(field coord_cpu_s)
			if [ "$cyc" -gt 0 ] && [ "$CG_MODE" != none ]; then
				rec "c.$n.cpu_ms" "$(calc "$cg * 1000 / $cyc" 1)"
				rec "c.$n.own_ms" "$(calc "$own * 1000 / $cyc" 1)"
			fi
		done
	done
	if [ $QUICK = 0 ]; then
		# Latency at a given load: the same nodes, each starting a cycle
		# every nodes/C_RATE seconds (as real nodes do between encodes),
		# rather than at saturation, where by Little's law a grant waits
		# about nodes/throughput whatever the coordinator does.
		for n in $C_NODES; do
			for ((r = 1; r <= creps; r++)); do
				log "4 coordinator capacity: $n nodes at an offered $C_RATE cycles/s, run $r/$creps"
				cap_run "cp$n-$r" "$n" --rate "$C_RATE" --warmup "${C_WARM}s" --duration "${C_WIN}s"
				rec "c.$n.pace.cps" "$(field cycles_per_s)"
				rec "c.$n.pace.p50" "$(field grant_p50_ms)"
				rec "c.$n.pace.p99" "$(field grant_p99_ms)"
				rec "c.$n.pace.hwm" "$(field coord_hwm_kb)"
				local cyc cg
				cyc=$(field cycles) cg=$(field coord_cgroup_cpu_s)
				if [ "$cyc" -gt 0 ] && [ "$CG_MODE" != none ]; then rec "c.$n.pace.cpu_ms" "$(calc "$cg * 1000 / $cyc" 2)"; fi
			done
		done
		# The cost of a cycle, counted over a whole small job (10 frames a
		# set, as above) run to completion by 10 nodes.
		for ((r = 1; r <= 1; r++)); do
			log "4 coordinator capacity: cost per cycle, small job run to completion"
			C_FRAMES=q16 C_SETS=100 cap_run "ccost-$r" 10 --until-done
			[ "$(field job_state)" = done ] || die "the load-generated job did not finish: $C_RESULT"
			rec c.cost.cps "$(field cycles_per_s)"
			rec c.cost.p50 "$(field grant_p50_ms)"
			rec c.cost.p99 "$(field grant_p99_ms)"
			local cyc cg own
			cyc=$(field cycles) cg=$(field coord_cgroup_cpu_s) own=$(field coord_cpu_s)
			if [ "$cyc" -gt 0 ] && [ "$CG_MODE" != none ]; then
				rec c.cost.cpu_ms "$(calc "$cg * 1000 / $cyc" 1)"
				rec c.cost.own_ms "$(calc "$own * 1000 / $cyc" 1)"
			fi
		done
		# Diagnostic: the same grants with ReleaseSet instead of a part:
		# durable state and gRPC only, no upload.
		for ((r = 1; r <= creps; r++)); do
			log "4 coordinator capacity: grant+release diagnostic (100 nodes), run $r/$creps"
			if [ "$PROFILE" = 1 ] && [ "$r" = 1 ]; then
				log "  (profiling the coordinator during this run)"
				CAP_PPROF=1 CAP_HOOK=prof_cap_hook PROF_SUFFIX="-release" PROF_DELAY=3 PROF_SECS=8 \
					cap_run "crel-$r" 100 --release --warmup 3s --duration 10s
			else
				cap_run "crel-$r" 100 --release --warmup 3s --duration 10s
			fi
			rec c.rel.cps "$(field cycles_per_s)"
			rec c.rel.p50 "$(field grant_p50_ms)"
			rec c.rel.p99 "$(field grant_p99_ms)"
			rec c.rel.hwm "$(field coord_hwm_kb)"
			local cyc cg
			cyc=$(field cycles) cg=$(field coord_cgroup_cpu_s)
			if [ "$cyc" -gt 0 ] && [ "$CG_MODE" != none ]; then rec c.rel.cpu_ms "$(calc "$cg * 1000 / $cyc" 3)"; fi
		done
	fi
}

# ---------------------------------------------------------------- 5 data plane
dataplane() {
	local F=$FRAMES_DIR/$D_FRAMES r d=$RUN/stream
	mkdir -p "$d"
	# The streamed set is set 0 (given back and granted again): its frames.
	local n base extra first
	n=$(count "$D_FRAMES")
	base=$((n / D_SETS)) extra=$((n % D_SETS))
	first=$((base + (extra > 0 ? 1 : 0)))
	find "$F" -maxdepth 1 -name 'f_*.png' | sort | awk -v n="$first" 'NR<=n' >"$d/files"
	local setbytes
	setbytes=$(xargs stat -c %s <"$d/files" | awk '{s+=$1} END{print s}')
	note d.set "$first frames, $(calc "$setbytes/1e6" 1) MB"
	cg_new stream-c
	cg_exec stream-c "$BIN" coordinator --frames "$F" --data "$d/data" --listen 127.0.0.1:0 --sets "$D_SETS" \
		--codec libx264 --fps 24 >"$d/coordinator.out" 2>"$d/coordinator.log" &
	local cpid=$!
	PIDS+=("$cpid")
	local caddr aaddr
	caddr=$(wait_addr "$d/coordinator.out" "$cpid") || die "stream: coordinator did not start"
	cg_new stream-a
	cg_exec stream-a "$BIN" ambassador --coordinator "$caddr" --listen 127.0.0.1:0 >"$d/ambassador.out" 2>"$d/ambassador.log" &
	local apid=$!
	PIDS+=("$apid")
	aaddr=$(wait_addr "$d/ambassador.out" "$apid") || die "stream: ambassador did not start"
	xargs cat <"$d/files" >/dev/null # warm the page cache for all
	for ((r = 1; r <= REPS; r++)); do
		log "5 data plane: streaming, run $r/$REPS"
		local out
		out=$("$LOADGEN" stream --coordinator "$caddr" --rounds "$D_ROUNDS") || die "stream: loadgen failed: $out"
		rec d.direct "$(sed -n 's/.* mb_per_s=\([^ ]*\).*/\1/p' <<<"$out" | tail -1)"
		out=$("$LOADGEN" stream --coordinator "$aaddr" --rounds "$D_ROUNDS") || die "stream via ambassador: loadgen failed: $out"
		rec d.amb "$(sed -n 's/.* mb_per_s=\([^ ]*\).*/\1/p' <<<"$out" | tail -1)"
		local t0=$EPOCHREALTIME k
		for ((k = 0; k < D_ROUNDS; k++)); do xargs cat <"$d/files" >/dev/null; done
		rec d.cat "$(calc "$setbytes * $D_ROUNDS / 1e6 / $(elapsed "$t0")" 1)"
	done
	stop "$cpid" "$apid"
	PIDS=()
	cg_rm stream-c stream-a
	rm -rf "$d/data"

	# The join: a job of FFV1 parts (made once per set size by loadgen),
	# completed by simulated nodes; the coordinator's job_done event says
	# how long the join took (concat, verification of every timestamp,
	# SHA-256 and fsync). Baseline: cp of the same bytes, then fsync.
	# Into .mkv, ffmpeg's concat demuxer joins them; into .mov, the parts'
	# own container, the coordinator rewrites their tables in Go.
	local jx key
	for jx in mkv mov; do
	key=j
	if [ $jx = mov ]; then key=jm; fi
	for ((r = 1; r <= REPS; r++)); do
		log "5 data plane: join into .$jx, run $r/$REPS"
		local jd=$RUN/join-$jx-$r
		rm -rf "$jd"
		mkdir -p "$jd"
		cg_new "join-$jx-$r-c"
		cg_exec "join-$jx-$r-c" "$BIN" coordinator --frames "$F" --data "$jd/data" --listen 127.0.0.1:0 --sets "$D_SETS" \
			--codec ffv1 --fps 24 --keep-parts --out "$jd/out.$jx" >"$jd/coordinator.out" 2>"$jd/coordinator.log" &
		cpid=$!
		PIDS+=("$cpid")
		caddr=$(wait_addr "$jd/coordinator.out" "$cpid") || die "join: coordinator did not start"
		"$LOADGEN" cycles --coordinator "$caddr" --nodes "$D_SETS" --until-done --pid "$cpid" --work "$jd" \
			--part-source "$J_SRC" --part-cache "$BENCH_DIR/parts" >"$jd/loadgen.out" 2>&1 ||
			{ cat "$jd/loadgen.out" >&2; die "join: the load generator failed"; }
		C_RESULT=$(grep '^RESULT ' "$jd/loadgen.out")
		[ "$(field job_state)" = done ] || die "join: the job did not finish: $C_RESULT"
		stop "$cpid"
		PIDS=()
		cg_rm "join-$jx-$r-c"
		local parts pbytes jms
		parts=$(find "$jd/data/jobs" -path '*/parts/set-*' -type f | sort)
		pbytes=$(stat -c %s $parts | awk '{s+=$1} END{print s}')
		jms=$(field join_ms)
		rec $key.bytes "$pbytes"
		rec $key.ms "$jms"
		rec $key.mbps "$(calc "$pbytes / 1e3 / $jms" 1)"
		# shellcheck disable=SC2086
		cat $parts >/dev/null
		local t0=$EPOCHREALTIME
		# shellcheck disable=SC2086
		cat $parts >"$jd/cp.out"
		local tcp
		tcp=$(elapsed "$t0")
		sync "$jd/cp.out"
		local tsync
		tsync=$(elapsed "$t0")
		rec $key.cp_ms "$(calc "$tcp * 1000" 0)"
		rec $key.cpsync_ms "$(calc "$tsync * 1000" 0)"
		rec $key.cpsync_mbps "$(calc "$pbytes / 1e6 / $tsync" 1)"
		rm -rf "$jd/data" "$jd/cp.out" "$jd/out.$jx"
	done
	done
}

# ---------------------------------------------------------------- 6 memory
memory() {
	local F=$FRAMES_DIR/$M_FRAMES r
	local big
	big=$(find "$F" -maxdepth 1 -name 'f_*.png' -printf '%s\n' | sort -n | tail -1)
	note m.big "$(calc "$big/1e6" 1)"
	for ((r = 1; r <= M_REPS; r++)); do
		log "6 memory: 4K frames, run $r/$M_REPS"
		# Streamed: read in place, 4K frames would cost the roles nothing.
		NODE_ARGS="${NODE_ARGS:-} --frames-from stream" farm_run "m4k-$r" "$F" 1 "" "$M_SETS" mp4 -- --codec libx264 --preset ultrafast --fps 24
		rec m.4k.c "$R_HWM_C"
		rec m.4k.a "$R_HWM_A"
		rec m.4k.n "$R_HWM_N"
	done
}

# ---------------------------------------------------------------- 7 bucket
# Frames in an S3 bucket (versitygw, posix backend, on loopback), rendered
# by N emulated machines that read them straight from the server through the
# coordinator's pre-signed GETs (--frames-from auto with --storage), against
# the same job with every frame streamed through the coordinator, which
# reads the bucket itself (--frames-from stream), which also uploads the
# parts through the coordinator rather than putting them: the whole path of
# a node without bucket access against the whole direct one. x264
# ultrafast: the cheapest encode the farm offers (ffv1 costs 3x its CPU per
# 720p frame here), so that moving the frames weighs as much as it can.

# s3_start DIR: versitygw on a free loopback port with fresh root keys, in
# its own group (its CPU is reported). Sets S3_PID, S3_ADDR, S3_ENV (the
# AWS environment for the coordinator and the upload, never the nodes: they
# hold no keys, only the URLs).
s3_start() {
	local d=$1 try port secret
	mkdir -p "$d/root" "$d/meta"
	secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
	S3_ENV=(AWS_ACCESS_KEY_ID=framefarmbench "AWS_SECRET_ACCESS_KEY=$secret" AWS_EC2_METADATA_DISABLED=true
		"AWS_CONFIG_FILE=$d/no-aws-config" "AWS_SHARED_CREDENTIALS_FILE=$d/no-aws-credentials")
	S3_SECRET=$secret
	cg_new s3
	for try in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 30000))
		if (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi # taken
		cg_exec s3 env ROOT_ACCESS_KEY_ID=framefarmbench "ROOT_SECRET_ACCESS_KEY=$secret" \
			"$VERSITYGW" --port "127.0.0.1:$port" posix --sidecar "$d/meta" "$d/root" >"$d/versitygw.log" 2>&1 &
		S3_PID=$!
		S3_ADDR=127.0.0.1:$port
		local i
		for i in $(seq 200); do
			if (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && kill -0 "$S3_PID" 2>/dev/null; then return 0; fi
			kill -0 "$S3_PID" 2>/dev/null || break
			sleep 0.05
		done
		stop "$S3_PID"
	done
	tail -5 "$d/versitygw.log" >&2
	die "bucket: versitygw did not start"
}
s3_url() { echo "s3://$1?endpoint=http://$S3_ADDR&region=us-east-1&use_path_style=true"; }

# scrape URL NAME: a counter's value ("-1" if not there).
scrape() {
	curl -sf "http://$1/metrics" | awk -v n="$2" '$1==n{printf "%.0f\n", $2; f=1} END{if (!f) print -1}'
}
metrics_addr() { sed -n 's/.*msg="metrics listening" addr=\([^ ]*\).*/\1/p' "$1" 2>/dev/null | awk 'NR==1'; }

# bucket_run TAG MODE NODES CPUS: a fresh standing farm (coordinator with
# --storage in the bucket "parts"), NODES machines (ambassador + node with
# --frames-from MODE, the node under a CPUS quota), all waiting for work;
# then the job of frames/$B_FRAMES/ is submitted and timed to the
# coordinator's job_done. Sets B_WALL, B_SUBMIT, B_SET_OVH, B_STREAMED,
# B_PARTS_UP (coordinator counters), B_BUCKET (nodes' bucket bytes),
# B_CPU_C, B_CPU_N, B_CPU_S3, B_LOST, B_PUT_FALLBACK.
bucket_run() {
	local tag=$1 mode=$2 nodes=$3 cpus=$4 i
	local d=$RUN/$tag
	rm -rf "$d"
	mkdir -p "$d"
	local groups=("$tag-c")
	cg_new "$tag-c"
	cg_exec "$tag-c" env "${S3_ENV[@]}" "$BIN" coordinator --data "$d/data" --listen 127.0.0.1:0 --http "" \
		--metrics 127.0.0.1:0 --storage "$(s3_url parts/farm/)" >"$d/coordinator.out" 2>"$d/coordinator.log" &
	local cpid=$!
	PIDS+=("$cpid")
	local caddr
	caddr=$(wait_addr "$d/coordinator.out" "$cpid") || { tail -5 "$d/coordinator.log" >&2; die "$tag: coordinator did not start"; }
	local apids=() npids=()
	machines_start "$caddr" --frames-from "$mode" --metrics 127.0.0.1:0
	# Every node asking for work before the job comes, so the clock holds
	# the job and not the farm's start-up.
	local t=0
	while [ "$("$BIN" nodes --coordinator "$caddr" 2>/dev/null | awk 'NR>1' | wc -l)" -lt "$nodes" ]; do
		t=$((t + 1))
		[ $t -lt 600 ] || die "$tag: not all $nodes node(s) reached the coordinator in 60 s"
		sleep 0.1
	done
	local s3cpu0 t0 id
	s3cpu0=$(cg_cpu s3)
	t0=$EPOCHREALTIME
	id=$(env "${S3_ENV[@]}" "$BIN" submit --coordinator "$caddr" --frames "$(s3_url "frames/$B_FRAMES/")" --sets "$B_SETS" \
		--codec libx264 --preset ultrafast --fps 24 2>"$d/submit.log") || { cat "$d/submit.log" >&2; die "$tag: submit failed"; }
	B_SUBMIT=$(elapsed "$t0")
	timeout "${FETCH_TIMEOUT:-1800}" "$BIN" fetch --coordinator "$caddr" --job "$id" -o "$d/out.mp4" --wait >"$d/fetch.out" 2>"$d/fetch.log" ||
		{ tail -n 3 "$d/fetch.log" "$d/coordinator.log" >&2; die "$tag: fetch failed (see $d)"; }
	local done_at
	done_at=$(sed -n 's/^time=\([^ ]*\) .*msg=job_done.*/\1/p' "$d/coordinator.log" | awk 'NR==1')
	[ -n "$done_at" ] || die "$tag: no job_done in the coordinator's log"
	B_WALL=$(calc "$(date -d "$done_at" +%s.%N) - $t0")
	B_CPU_S3=$(calc "$(cg_cpu s3) - $s3cpu0")
	local cm
	cm=$(metrics_addr "$d/coordinator.log")
	B_STREAMED=$(scrape "$cm" framefarm_frame_stream_bytes_total)
	B_PARTS_UP=$(scrape "$cm" framefarm_part_upload_bytes_total)
	B_BUCKET=0
	for ((i = 1; i <= nodes; i++)); do
		B_BUCKET=$((B_BUCKET + $(scrape "$(metrics_addr "$d/node-$i.log")" framefarm_node_bucket_bytes_total)))
	done
	stop "$cpid" "${apids[@]}" "${npids[@]}"
	PIDS=("$S3_PID")
	B_CPU_C=-1 B_CPU_N=-1
	if [ "$CG_MODE" != none ]; then
		B_CPU_C=$(cg_cpu "$tag-c")
		B_CPU_N=0
		for ((i = 1; i <= nodes; i++)); do B_CPU_N=$(calc "$B_CPU_N + $(cg_cpu "$tag-n$i") + $(cg_cpu "$tag-a$i")"); done
	fi
	cg_rm "${groups[@]}"
	local want got bytes
	bytes=$(bytes "$B_FRAMES")
	want=$(count "$B_FRAMES")
	got=$(frames_of "$d/out.mp4")
	[ "$got" = "$want" ] || die "$tag: the farm's video has ${got:-no} frames, the folder has $want"
	# Every frame must have come the way this run measures. Counted from
	# the coordinator's metric and the sets the nodes logged the other way,
	# not from the sets logged this way: a node whose heartbeat hears that
	# its set is complete before the answer to its part does drops the set
	# as a lost lease, without a "part uploaded" line (B_LOST counts them).
	local other=streamed n_other
	if [ "$mode" = stream ]; then other=bucket; fi
	n_other=$(cat "$d"/node-*.log | grep -c "msg=\"part uploaded\".* frames=$other" || true)
	[ "$n_other" = 0 ] || die "$tag: $n_other set(s) had frames=$other in a --frames-from $mode run (see $d/node-*.log)"
	if [ "$mode" = stream ]; then
		[ "$B_STREAMED" -ge "$bytes" ] || die "$tag: the coordinator streamed $B_STREAMED frame bytes of $bytes"
	else
		[ "$B_STREAMED" = 0 ] || die "$tag: the coordinator streamed $B_STREAMED frame bytes in a direct run"
	fi
	B_LOST=$(cat "$d"/node-*.log | grep -c 'msg="lease lost; dropping the set"' || true)
	# A part whose PUT failed goes through the coordinator instead; count
	# them and keep one reason, so the table says why part bytes moved.
	B_PUT_FALLBACK=$(cat "$d"/node-*.log | grep -c 'msg="putting the part into the bucket failed' || true)
	if [ "$B_PUT_FALLBACK" != 0 ]; then
		note b.put_fallback_why "$(cat "$d"/node-*.log | sed -n 's/.*msg="putting the part into the bucket failed.* err=//p' | awk 'NR==1')"
	fi
	B_SET_OVH=$(set_overhead "$d")
	if grep -rqF "$S3_SECRET" "$d"; then die "$tag: the S3 secret key appears in the farm's output (see $d)"; fi
	if [ "${KEEP_RUNS:-0}" != 1 ]; then rm -rf "$d/data" "$d"/work-* "$d/out.mp4"; fi
	return 0
}

# bucket_rates: the read rate alone, without ffmpeg: loadgen acquires sets
# of the job as N nodes would (N streams, each its own connection) and reads
# their frames to nowhere, either from their pre-signed URLs or streamed by
# the coordinator (which reads the bucket itself), B_ROUNDS sets a stream.
bucket_rates() {
	local d=$RUN/b-rates r n m
	mkdir -p "$d"
	cg_new b-rates-c
	cg_exec b-rates-c env "${S3_ENV[@]}" "$BIN" coordinator --data "$d/data" --listen 127.0.0.1:0 --http "" \
		--metrics 127.0.0.1:0 --storage "$(s3_url parts/farm/)" >"$d/coordinator.out" 2>"$d/coordinator.log" &
	local cpid=$!
	PIDS+=("$cpid")
	local caddr
	caddr=$(wait_addr "$d/coordinator.out" "$cpid") || { tail -5 "$d/coordinator.log" >&2; die "bucket rates: coordinator did not start"; }
	env "${S3_ENV[@]}" "$BIN" submit --coordinator "$caddr" --frames "$(s3_url "frames/$B_FRAMES/")" --sets "$B_SETS" \
		--codec libx264 --preset ultrafast --fps 24 >"$d/submit.out" 2>&1 || { cat "$d/submit.out" >&2; die "bucket rates: submit failed"; }
	local cm
	cm=$(metrics_addr "$d/coordinator.log")
	for ((r = 1; r <= REPS; r++)); do
		for n in $B_NODES; do
			local order="bucket coordinator"
			if [ $(((r + n) % 2)) = 0 ]; then order="coordinator bucket"; fi
			for m in $order; do
				log "7 bucket: read rate, $n stream(s) from the $m, run $r/$REPS"
				local s0 out
				s0=$(scrape "$cm" framefarm_frame_stream_bytes_total)
				out=$("$LOADGEN" stream --coordinator "$caddr" --from "$m" --parallel "$n" --rounds "$B_ROUNDS" 2>&1) ||
					{ echo "$out" >&2; tail -5 "$d/coordinator.log" >&2; die "bucket rates: loadgen failed"; }
				local got streamed
				got=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$out" | tail -1)
				streamed=$(($(scrape "$cm" framefarm_frame_stream_bytes_total) - s0))
				if [ $m = bucket ]; then
					[ "$streamed" = 0 ] || die "bucket rates: the coordinator streamed $streamed bytes while the frames were read from the bucket"
				else
					[ "$streamed" -ge "$got" ] || die "bucket rates: the coordinator streamed $streamed of $got bytes"
				fi
				rec "b.$n.rate.$m" "$(sed -n 's/.* aggregate_mb_per_s=\([^ ]*\).*/\1/p' <<<"$out" | tail -1)"
				rec "b.$n.rate.$m.each" "$(sed -n 's/.* mb_per_s=\([^ ]*\).*/\1/p' <<<"$out" | tail -1)"
				rec "b.$n.rate.$m.streamed" "$streamed"
				rec "b.rate.sets" "$((n * B_ROUNDS))"
			done
		done
	done
	stop "$cpid"
	PIDS=("$S3_PID")
	rec b.rate.cpu_c "$(cg_cpu b-rates-c)"
	cg_rm b-rates-c
	if [ "${KEEP_RUNS:-0}" != 1 ]; then rm -rf "$d/data"; fi
}

# bucket_finals: one file put into the bucket as the coordinator puts a
# final into --storage or to --out (storage.Bucket.Put: a multipart upload
# on S3), at the sizes B_FINALS (MiB) 16× apart: its rate, and the peak
# memory of the process putting it.
bucket_finals() {
	local d=$RUN/b-finals size r out
	for size in $B_FINALS; do
		mkdir -p "$d/$size"
		head -c "${size}M" /dev/urandom >"$d/$size/final.mkv"
		for ((r = 1; r <= REPS; r++)); do
			log "7 bucket: a final of $size MiB put into the bucket, run $r/$REPS"
			out=$(env "${S3_ENV[@]}" "$LOADGEN" put --parallel 1 --from "$d/$size" --to "$(s3_url "parts/finals-bench/$size/")") ||
				{ tail -5 "$RUN/s3/versitygw.log" >&2; die "bucket: putting a final of $size MiB failed: $out"; }
			rec "b.final.$size.mbps" "$(calc "$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$out") / 1e6 / $(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$out")" 0)"
			rec "b.final.$size.rss" "$(sed -n 's/.* peak_rss_kb=\([0-9]*\).*/\1/p' <<<"$out")"
		done
		rm -rf "$d/$size" "$RUN/s3/root/parts/finals-bench/$size"
	done
	note b.finals "$B_FINALS"
}

bucket() {
	local cpus="" r n m
	if [ "$CG_MODE" != none ]; then
		cpus=0.5
		note b.how "each node and its ffmpeg in a cgroup with a 0.5 CPU quota (an emulated machine); versitygw, the coordinator and the ambassadors without one"
	else
		note b.how "no cgroups ($CG_REASON): nodes without a CPU quota, sharing the machine's $(nproc) cores"
	fi
	note b.cpus "${cpus:-all}"
	local d=$RUN/s3
	s3_start "$d"
	PIDS=("$S3_PID")
	mkdir -p "$d/root/frames" "$d/root/parts"
	local out
	out=$(env "${S3_ENV[@]}" "$LOADGEN" put --from "$FRAMES_DIR/$B_FRAMES" --to "$(s3_url "frames/$B_FRAMES/")") ||
		{ tail -5 "$d/versitygw.log" >&2; die "bucket: uploading the frames failed: $out"; }
	sed -n '/^loadgen:/p' <<<"$out" | sed 's/^/  /' >&2
	local bytes
	bytes=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$out")
	[ "$bytes" = "$(bytes "$B_FRAMES")" ] || die "bucket: put $bytes bytes, the folder has $(bytes "$B_FRAMES")"
	rec b.bytes "$bytes"
	rec b.put_mbps "$(calc "$bytes / 1e6 / $(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$out")" 0)"
	note b.what "$(count "$B_FRAMES") $(getsize "$B_FRAMES") PNG ($(calc "$bytes/1e6" 1) MB) in $B_SETS sets"
	note b.nodes "$B_NODES"
	note b.rounds "$B_ROUNDS"
	bucket_finals
	bucket_rates
	for ((r = 1; r <= REPS; r++)); do
		for n in $B_NODES; do
			# Alternate the order, so drift in the machine's load hits both.
			local order="auto stream"
			if [ $(((r + n) % 2)) = 0 ]; then order="stream auto"; fi
			for m in $order; do
				local key=direct
				if [ $m = stream ]; then key=stream; fi
				log "7 bucket: $n node(s), frames $([ $m = auto ] && echo "read from the bucket" || echo "streamed through the coordinator"), run $r/$REPS"
				bucket_run "b-$key$n-$r" "$m" "$n" "$cpus"
				rec "b.$n.$key.wall" "$B_WALL"
				rec "b.$n.$key.mbps" "$(calc "$bytes / 1e6 / $B_WALL" 1)"
				rec "b.$n.$key.submit" "$B_SUBMIT"
				rec "b.$n.$key.set_ovh" "$B_SET_OVH"
				rec "b.$n.$key.streamed" "$B_STREAMED"
				rec "b.$n.$key.parts_up" "$B_PARTS_UP"
				rec "b.$n.$key.bucket" "$B_BUCKET"
				rec "b.$n.$key.cpu_c" "$B_CPU_C"
				rec "b.$n.$key.cpu_n" "$B_CPU_N"
				rec "b.$n.$key.cpu_s3" "$B_CPU_S3"
				rec b.lost "$B_LOST"
				rec b.put_fallback "$B_PUT_FALLBACK"
			done
		done
	done
	stop "$S3_PID"
	PIDS=()
	cg_rm s3
	if [ "${KEEP_RUNS:-0}" != 1 ]; then rm -rf "$d/root" "$d/meta"; fi
}

# ---------------------------------------------------------------- profiles
pprof_top() { # URL OUT [extra pprof flags]
	local url=$1 out=$2
	shift 2
	if curl -sf -o "$out.pb.gz" "$url"; then
		go tool pprof -top -nodecount=30 "$@" "$BIN" "$out.pb.gz" >"$out.txt" 2>/dev/null || true
	fi
}
addr_in() { sed -n 's/.*msg="pprof listening" addr=\([^ ]*\).*/\1/p' "$1" 2>/dev/null | awk 'NR==1'; }
wait_pprof() { # LOG -> addr
	local a=""
	for _ in $(seq 500); do
		a=$(addr_in "$1")
		if [ -n "$a" ]; then break; fi
		sleep 0.02
	done
	echo "$a"
}
prof_cap_hook() {
	local a
	a=$(wait_pprof "$C_DIR/coordinator.log")
	[ -n "$a" ] || return 0
	for _ in $(seq 1000); do
		if grep -q 'msg="coordinator listening"' "$C_DIR/coordinator.log"; then break; fi
		sleep 0.02
	done
	if [ -z "$PROF_SUFFIX" ]; then
		pprof_top "http://$a/debug/pprof/heap" "$PROF/coordinator-heap-startup" -sample_index=inuse_space
		pprof_top "http://$a/debug/pprof/allocs" "$PROF/coordinator-allocs-startup" -sample_index=alloc_space
	fi
	sleep "${PROF_DELAY:-5}"
	pprof_top "http://$a/debug/pprof/profile?seconds=${PROF_SECS:-10}" "$PROF/coordinator-cpu-loadgen$PROF_SUFFIX"
	pprof_top "http://$a/debug/pprof/allocs" "$PROF/coordinator-allocs-loadgen$PROF_SUFFIX" -sample_index=alloc_space
}
prof_farm_hook() {
	local na ca
	na=$(wait_pprof "$R_DIR/node-1.log")
	ca=$(wait_pprof "$R_DIR/coordinator.log")
	[ -n "$na" ] || return 0
	sleep 1
	pprof_top "http://$ca/debug/pprof/profile?seconds=12" "$PROF/coordinator-cpu-render" &
	pprof_top "http://$na/debug/pprof/profile?seconds=12" "$PROF/node-cpu-render"
	wait
	pprof_top "http://$na/debug/pprof/allocs" "$PROF/node-allocs-render" -sample_index=alloc_space
}
# ---------------------------------------------------------------- run
for section in $SECTIONS; do $section; done

BUSY1=$(busy_seconds)
BENCHCPU1=$(cg_cpu)
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
T_TOTAL=$(elapsed "$T_START")
report
# The capacity runs leave ~25,000 parts each. Kept from run to run they
# piled up by the hundred thousand; deleted, they make every file created on
# this file system (ext4 without a journal) for a minute or two cost
# 0.5-1 ms of CPU instead of 40-70 us, as ext4 steps over recently deleted
# inodes: so they go now, after the measurements, not at the next run's
# start.
rm -rf "$RUN"/c*/data
log "done in $T_TOTAL s; table in $BENCH_OUT; raw results in $RES"
