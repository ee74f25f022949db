# Helpers of scripts/bench.sh: timing, medians, cgroups, process control,
# farm runs. Sourced, not run.

# ---------------------------------------------------------------- basics

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

now() { echo "$EPOCHREALTIME"; }
# elapsed T0 [T1]: seconds between two $EPOCHREALTIME stamps.
elapsed() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN{printf "%.3f", b-a}'; }
calc() { awk "BEGIN{printf \"%.${2:-3}f\", $1}"; }

# Results: one "key<TAB>value" line per measurement; several values of a
# key are several runs, summarised by their median.
rec() { printf '%s\t%s\n' "$1" "$2" >>"$RES"; }
median() {
	sort -g | awk '{a[NR]=$1} END{ if (NR==0) {print "nan"; exit}
		if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2 }'
}
get() { awk -F'\t' -v k="$1" '$1==k{print $2}' "$RES" | median; }
runs() { awk -F'\t' -v k="$1" '$1==k{n++} END{print n+0}' "$RES"; }
has() { [ "$(runs "$1")" -gt 0 ]; }
# note KEY TEXT: a text result (skips, reasons); the last one wins.
note() { printf '%s\t%s\n' "$1" "$2" >>"$NOTES"; }
getnote() { awk -F'\t' -v k="$1" '$1==k{v=$2} END{print v}' "$NOTES"; }

# ---------------------------------------------------------------- processes

PIDS=()
# stop PID...: SIGTERM, then SIGKILL after 5s; only processes we started.
stop() {
	local p
	for p in "$@"; do kill "$p" 2>/dev/null || true; done
	for _ in $(seq 50); do
		local alive=0
		for p in "$@"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
		if [ $alive = 0 ]; then break; fi
		sleep 0.1
	done
	for p in "$@"; do kill -9 "$p" 2>/dev/null || true; done
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
stop_all() {
	if [ ${#PIDS[@]} -gt 0 ]; then stop "${PIDS[@]}"; fi
	PIDS=()
}

# wait_addr FILE PID [TIMEOUT]: waits for "listening on ADDR" in FILE and
# prints ADDR; fails if PID exits first.
wait_addr() {
	local file=$1 pid=$2 limit=${3:-600} t0=$EPOCHREALTIME addr
	while :; do
		addr=$(sed -n 's/.*listening on \([^ ,]*\).*/\1/p' "$file" 2>/dev/null | awk 'NR==1')
		if [ -n "$addr" ]; then
			echo "$addr"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || return 1
		if [ "$(calc "($(elapsed "$t0") > $limit)" 0)" = 1 ]; then return 1; fi
		sleep 0.01
	done
}

# pcpu PID: user+system CPU seconds of PID itself (not its children).
pcpu() { awk '{sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# hwm PID: peak RSS (VmHWM) in kB.
hwm() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

frames_of() { ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$1" 2>/dev/null; }

# ---------------------------------------------------------------- cgroups
# One parent group for the whole run, a child per process we measure: the
# child's CPU time includes its ffmpeg/ffprobe children, and a quota on a
# node's group holds the node and its ffmpeg together (an emulated machine).

CG_MODE=none
CG_REASON=""
CG_NAME="framefarm-bench-$$"
# Our groups nest under the groups this shell is in, per controller, so
# every limit above us still applies.
CG_CPU="" CG_ACCT="" CG_MEM="" CG_DIR="" CG_HOME_CPU="" CG_HOME_ACCT="" CG_HOME_DIR=""

# cg_self CONTROLLER: this shell's v1 group path for CONTROLLER ("" if none).
cg_self() { awk -F: -v c="$1" '{n=split($2, a, ","); for (i=1;i<=n;i++) if (a[i]==c) print $3}' /proc/self/cgroup | awk 'NR==1'; }

cg_init() {
	if [ "${BENCH_NO_CGROUP:-0}" = 1 ]; then
		CG_REASON="cgroups disabled by BENCH_NO_CGROUP=1"
		return 0
	fi
	if [ "$(id -u)" != 0 ]; then
		CG_REASON="not root, so no cgroups can be created"
		return 0
	fi
	local cpu acct mem
	cpu=$(cg_self cpu)
	if [ -n "$cpu" ] && [ -f "/sys/fs/cgroup/cpu${cpu%/}/cpu.cfs_quota_us" ] && mkdir "/sys/fs/cgroup/cpu${cpu%/}/$CG_NAME" 2>/dev/null; then
		CG_MODE=v1
		CG_CPU="/sys/fs/cgroup/cpu${cpu%/}/$CG_NAME"
		acct=$(cg_self cpuacct)
		if [ -n "$acct" ] && mkdir "/sys/fs/cgroup/cpuacct${acct%/}/$CG_NAME" 2>/dev/null; then
			CG_ACCT="/sys/fs/cgroup/cpuacct${acct%/}/$CG_NAME"
		elif [ -f "$CG_CPU/cpuacct.usage" ]; then
			CG_ACCT=$CG_CPU # cpu and cpuacct mounted together
		fi
		mem=$(cg_self memory)
		if [ -n "$mem" ] && mkdir "/sys/fs/cgroup/memory${mem%/}/$CG_NAME" 2>/dev/null; then
			CG_MEM="/sys/fs/cgroup/memory${mem%/}/$CG_NAME"
		fi
		echo "${BENCH_CPU_SHARES:-4096}" >"$CG_CPU/cpu.shares"
		CG_HOME_CPU="/sys/fs/cgroup/cpu${cpu%/}" CG_HOME_ACCT="${acct:+/sys/fs/cgroup/cpuacct${acct%/}}"
		cg_new main
		cg_join main $$
		CG_REASON="cgroup v1: cpu.cfs_quota_us per node${CG_ACCT:+, cpuacct}${CG_MEM:+, memory}"
		return 0
	fi
	local self
	self=$(awk -F: '$1=="0"{print $3}' /proc/self/cgroup | awk 'NR==1')
	if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ -n "$self" ] && grep -qw cpu "/sys/fs/cgroup${self%/}/cgroup.controllers" 2>/dev/null &&
		mkdir "/sys/fs/cgroup${self%/}/$CG_NAME" 2>/dev/null; then
		CG_DIR="/sys/fs/cgroup${self%/}/$CG_NAME"
		echo "+cpu +memory" >"$CG_DIR/cgroup.subtree_control" 2>/dev/null || echo +cpu >"$CG_DIR/cgroup.subtree_control" 2>/dev/null || true
		if grep -qw cpu "$CG_DIR/cgroup.subtree_control" 2>/dev/null; then
			CG_MODE=v2
			CG_HOME_DIR="/sys/fs/cgroup${self%/}"
			cg_new main
			cg_join main $$
			echo $((${BENCH_CPU_SHARES:-4096} * 100 / 1024)) >"$CG_DIR/cpu.weight" 2>/dev/null || true
			CG_REASON="cgroup v2: cpu.max per node, cpu.stat"
			return 0
		fi
		rmdir "$CG_DIR"
		CG_DIR=""
		CG_REASON="cgroup v2 without a delegable cpu controller"
		return 0
	fi
	CG_REASON="no writable cgroup cpu controller (v1 /sys/fs/cgroup/cpu, or v2 cpu.max)"
	return 0
}

# cg_new NAME [CPUS] [MEMBYTES]: a child group, with a CPU quota (e.g. 0.5)
# and a memory limit when given.
cg_new() {
	local name=$1 cpus=${2:-} mem=${3:-}
	case $CG_MODE in
	v1)
		mkdir -p "$CG_CPU/$name"
		if [ -n "$CG_ACCT" ] && [ "$CG_ACCT" != "$CG_CPU" ]; then mkdir -p "$CG_ACCT/$name"; fi
		if [ -n "$cpus" ]; then
			echo 100000 >"$CG_CPU/$name/cpu.cfs_period_us"
			calc "$cpus * 100000" 0 >"$CG_CPU/$name/cpu.cfs_quota_us"
		fi
		if [ -n "$mem" ] && [ -n "$CG_MEM" ]; then
			mkdir -p "$CG_MEM/$name"
			echo "$mem" >"$CG_MEM/$name/memory.limit_in_bytes"
		fi
		;;
	v2)
		mkdir -p "$CG_DIR/$name"
		if [ -n "$cpus" ]; then echo "$(calc "$cpus * 100000" 0) 100000" >"$CG_DIR/$name/cpu.max"; fi
		if [ -n "$mem" ]; then echo "$mem" >"$CG_DIR/$name/memory.max" 2>/dev/null || true; fi
		;;
	esac
	return 0
}

# cg_join NAME PID
cg_join() {
	case $CG_MODE in
	v1)
		echo "$2" >"$CG_CPU/$1/cgroup.procs"
		if [ -n "$CG_ACCT" ] && [ "$CG_ACCT" != "$CG_CPU" ]; then echo "$2" >"$CG_ACCT/$1/cgroup.procs"; fi
		if [ -d "$CG_MEM/$1" ] && [ -n "$CG_MEM" ]; then echo "$2" >"$CG_MEM/$1/cgroup.procs"; fi
		;;
	v2) echo "$2" >"$CG_DIR/$1/cgroup.procs" ;;
	esac
	return 0
}

# cg_exec NAME CMD...: becomes CMD inside group NAME. It execs: call it with
# & (then $! is CMD's pid) or inside ( ).
cg_exec() {
	local name=$1
	shift
	cg_join "$name" "$BASHPID"
	exec "$@"
}

# cg_usage_file NAME: the file holding NAME's CPU usage ("" without).
cg_usage_file() {
	case $CG_MODE in
	v1) if [ -n "$CG_ACCT" ]; then echo "$CG_ACCT/$1/cpuacct.usage"; fi ;;
	v2) echo "$CG_DIR/$1/cpu.stat" ;;
	esac
	return 0
}

# cg_cpu [NAME]: CPU seconds used by group NAME (or all of ours); -1 without.
cg_cpu() {
	local sub=${1:+/$1}
	case $CG_MODE in
	v1) if [ -n "$CG_ACCT" ]; then awk '{printf "%.3f", $1/1e9}' "$CG_ACCT$sub/cpuacct.usage" 2>/dev/null || echo -1; else echo -1; fi ;;
	v2) awk '/^usage_usec/{printf "%.3f", $2/1e6}' "$CG_DIR$sub/cpu.stat" 2>/dev/null || echo -1 ;;
	*) echo -1 ;;
	esac
}

# cg_rm NAME...: removes groups whose processes are gone.
cg_rm() {
	local n d
	for n in "$@"; do
		for d in "$CG_CPU" "$CG_ACCT" "$CG_MEM" "$CG_DIR"; do
			if [ -n "$d" ] && [ -d "$d/$n" ]; then rmdir "$d/$n" 2>/dev/null || true; fi
		done
	done
	return 0
}

cg_cleanup() {
	local d p
	# Back home first: a group with a process in it cannot be removed.
	case $CG_MODE in
	v1)
		echo $$ >"$CG_HOME_CPU/cgroup.procs" 2>/dev/null || true
		if [ -n "${CG_HOME_ACCT:-}" ]; then echo $$ >"$CG_HOME_ACCT/cgroup.procs" 2>/dev/null || true; fi
		;;
	v2) echo $$ >"$CG_HOME_DIR/cgroup.procs" 2>/dev/null || true ;;
	esac
	# Whatever is still in our groups was started by this run.
	for d in "$CG_CPU" "$CG_DIR"; do
		if [ -n "$d" ] && [ -d "$d" ]; then
			for p in $(find "$d" -mindepth 2 -name cgroup.procs -exec cat {} + 2>/dev/null); do
				if [ "$p" != $$ ]; then kill "$p" 2>/dev/null || true; fi
			done
		fi
	done
	sleep 0.5
	for d in "$CG_CPU" "$CG_ACCT" "$CG_MEM" "$CG_DIR"; do
		if [ -n "$d" ] && [ -d "$d" ]; then
			find "$d" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
			rmdir "$d" 2>/dev/null || true
		fi
	done
	return 0
}

# Machine CPU use outside the bench: busy jiffies of /proc/stat minus the
# bench group's own CPU time.
busy_seconds() { awk '/^cpu /{b=0; for(i=2;i<=NF;i++) if(i!=5 && i!=6) b+=$i; printf "%.2f", b/100}' /proc/stat; }

# ---------------------------------------------------------------- runs

# ffmpeg_run TAG CPUS OUT ARGS...: one plain ffmpeg command in its own
# group (with a CPU quota when CPUS is set). Sets R_WALL, R_CPU.
ffmpeg_run() {
	local tag=$1 cpus=$2 out=$3
	shift 3
	cg_new "$tag" "$cpus"
	local t0=$EPOCHREALTIME
	if [ "$CG_MODE" = none ] && [ -n "${PIN:-}" ]; then
		taskset -c "$PIN" ffmpeg -nostdin -v error -y "$@" "$out" || die "ffmpeg $tag failed"
	else
		(cg_exec "$tag" ffmpeg -nostdin -v error -y "$@" "$out") || die "ffmpeg $tag failed"
	fi
	R_WALL=$(elapsed "$t0")
	R_CPU=$(cg_cpu "$tag")
	cg_rm "$tag"
}

# machines_start CADDR [NODE-FLAGS...]: for farm_run and bucket_run, NODES
# emulated machines on the coordinator at CADDR, each an ambassador and a
# node (the node in a group with the CPUS quota when set, with NODE-FLAGS
# and $NODE_ARGS). Uses the caller's tag, d, nodes and cpus, and appends to
# its groups, apids and npids.
machines_start() {
	local caddr=$1 i
	shift
	for ((i = 1; i <= nodes; i++)); do
		cg_new "$tag-a$i"
		cg_new "$tag-n$i" "$cpus"
		groups+=("$tag-a$i" "$tag-n$i")
		cg_exec "$tag-a$i" "$BIN" ambassador --coordinator "$caddr" --listen 127.0.0.1:0 >"$d/ambassador-$i.out" 2>"$d/ambassador-$i.log" &
		apids+=($!)
		PIDS+=($!)
	done
	for ((i = 1; i <= nodes; i++)); do
		local aaddr
		aaddr=$(wait_addr "$d/ambassador-$i.out" "${apids[$((i - 1))]}") || die "$tag: ambassador $i did not start"
		local pin=()
		if [ "$CG_MODE" = none ] && [ -n "$cpus" ]; then pin=(taskset -c $(((i - 1) % $(nproc)))); fi
		# shellcheck disable=SC2086 # NODE_ARGS holds several flags
		cg_exec "$tag-n$i" "${pin[@]}" "$BIN" node --ambassador "$aaddr" --name "$tag-n$i" --work "$d/work-$i" "$@" ${NODE_ARGS:-} \
			>"$d/node-$i.out" 2>"$d/node-$i.log" &
		npids+=($!)
		PIDS+=($!)
	done
}

# farm_run TAG FRAMES NODES CPUS SETS OUTEXT -- COORDINATOR-FLAGS...
# A whole farm on loopback: coordinator, then per emulated machine an
# ambassador and a node (the node in a group with CPUS quota when set),
# timed from the coordinator's start to the fetched file. Sets R_WALL,
# R_CPU (all roles and their children), R_HWM_C/A/N (kB; max over
# machines), R_JOIN_MS, R_STARTUP, R_TAIL (job_done to fetched), R_DIR.
farm_run() {
	local tag=$1 frames=$2 nodes=$3 cpus=$4 sets=$5 ext=$6
	shift 7
	local d="$RUN/$tag"
	rm -rf "$d"
	mkdir -p "$d"
	R_DIR=$d
	local groups=("$tag-c") i
	cg_new "$tag-c"
	local t0=$EPOCHREALTIME
	cg_exec "$tag-c" "$BIN" coordinator --frames "$frames" --data "$d/data" --listen 127.0.0.1:0 --sets "$sets" \
		${COORD_PPROF:+--pprof 127.0.0.1:0} "$@" >"$d/coordinator.out" 2>"$d/coordinator.log" &
	local cpid=$!
	PIDS+=("$cpid")
	local caddr
	caddr=$(wait_addr "$d/coordinator.out" "$cpid") || { tail -5 "$d/coordinator.log" >&2; die "$tag: coordinator did not start"; }
	R_STARTUP=$(elapsed "$t0")
	local apids=() npids=()
	machines_start "$caddr" ${NODE_PPROF:+--pprof 127.0.0.1:0}
	R_NODE_PIDS="${npids[*]}"
	R_COORD_PID=$cpid
	local hook=""
	if [ -n "${FARM_HOOK:-}" ]; then
		$FARM_HOOK &
		hook=$!
	fi
	timeout "${FETCH_TIMEOUT:-1800}" "$BIN" fetch --coordinator "$caddr" -o "$d/out.$ext" --wait >"$d/fetch.out" 2>"$d/fetch.log" ||
		{ tail -n 3 "$d/fetch.log" "$d/coordinator.log" >&2; die "$tag: fetch failed (see $d)"; }
	local t1=$EPOCHREALTIME
	R_WALL=$(elapsed "$t0" "$t1")
	if [ -n "$hook" ]; then wait "$hook" 2>/dev/null || true; fi
	R_HWM_C=$(hwm "$cpid")
	R_HWM_A=0
	R_HWM_N=0
	local p h
	for p in "${apids[@]}"; do
		h=$(hwm "$p")
		if [ "$h" -gt "$R_HWM_A" ]; then R_HWM_A=$h; fi
	done
	for p in "${npids[@]}"; do
		h=$(hwm "$p")
		if [ "$h" -gt "$R_HWM_N" ]; then R_HWM_N=$h; fi
	done
	local own_c own_n=0
	own_c=$(pcpu "$cpid")
	for p in "${npids[@]}"; do own_n=$(calc "$own_n + $(pcpu "$p")"); done
	stop "$cpid" "${apids[@]}" "${npids[@]}"
	PIDS=()
	R_CPU_C=-1 R_CPU_CK=-1 R_CPU_A=-1 R_CPU_N=-1 R_CPU_NK=-1
	if [ "$CG_MODE" != none ]; then
		local ca=0 cn=0
		for ((i = 1; i <= nodes; i++)); do
			ca=$(calc "$ca + $(cg_cpu "$tag-a$i")")
			cn=$(calc "$cn + $(cg_cpu "$tag-n$i")")
		done
		R_CPU_C=$own_c R_CPU_CK=$(calc "$(cg_cpu "$tag-c") - $own_c") R_CPU_A=$ca R_CPU_N=$own_n R_CPU_NK=$(calc "$cn - $own_n")
	fi
	R_CPU=0
	if [ "$CG_MODE" != none ]; then
		local g
		for g in "${groups[@]}"; do R_CPU=$(calc "$R_CPU + $(cg_cpu "$g")"); done
	else
		R_CPU=-1
	fi
	cg_rm "${groups[@]}"
	local want got
	want=$(find "$frames" -maxdepth 1 -name 'f_*.png' | wc -l)
	got=$(frames_of "$d/out.$ext")
	[ "$got" = "$want" ] || die "$tag: the farm's video has ${got:-no} frames, the folder has $want"
	R_JOIN_MS=$(sed -n 's/.*msg=job_done.*joined in \([0-9.]*[a-zµ]*\).*/\1/p' "$d/coordinator.log" | awk 'NR==1' | dur_ms)
	local done_at
	done_at=$(sed -n 's/^time=\([^ ]*\) .*msg=job_done.*/\1/p' "$d/coordinator.log" | awk 'NR==1')
	R_TAIL=-1
	R_SET_OVH=$(set_overhead "$d")
	# Where the nodes took the frames from: every run says which it
	# measured, so it must be that one.
	local shared streamed
	shared=$(cat "$d"/node-*.log | grep -c 'msg="part uploaded".* frames=shared' || true)
	streamed=$(cat "$d"/node-*.log | grep -c 'msg="part uploaded".* frames=streamed' || true)
	case "${NODE_ARGS:-}" in
	*"--frames-from stream"*) [ "$shared" = 0 ] || die "$tag: $shared set(s) were read from the shared folder in a streamed run" ;;
	*) [ "$streamed" = 0 ] || die "$tag: $streamed set(s) were streamed although the nodes see the coordinator's folder (see $d/node-*.log)" ;;
	esac
	if [ -n "$done_at" ]; then R_TAIL=$(calc "$t1 - $(date -d "$done_at" +%s.%N)"); fi
	if [ "${KEEP_RUNS:-0}" != 1 ]; then rm -rf "$d/data" "$d"/work-*; fi
	return 0
}

# set_overhead DIR: median, over the sets, of the time a node spent on a set
# outside ffmpeg's encode (receiving frames, checking the part, uploading it
# and waiting for the coordinator's check), in ms: the node logs "took",
# the coordinator's part_accepted event the encode time.
set_overhead() {
	local d=$1
	{
		cat "$d"/node-*.log | sed -n 's/.*msg="part uploaded".* set=\([0-9]*\) .*took=\([^ ]*\).*/T \1 \2/p' |
			while read -r _ set took; do echo "T $set $(echo "$took" | dur_ms)"; done
		sed -n 's/.*msg=part_accepted.* set=\([0-9]*\) .*encoded in \([0-9]*\) ms.*/E \1 \2/p' "$d/coordinator.log"
	} | awk '$1=="T"{t[$2]=$3} $1=="E"{e[$2]=$3} END{for (k in t) if (k in e) print t[k]-e[k]}' | median
}

# dur_ms: a Go duration ("985ms", "1.2s", "1m2.5s") on stdin, in ms.
dur_ms() {
	awk '{ s=$0; t=0
		if (match(s, /^[0-9.]+m[0-9]/)) { split(s, a, "m"); t += a[1]*60000; s = substr(s, index(s, "m")+1) }
		if (s ~ /ms$/) t += s+0; else if (s ~ /µs$|us$/) t += (s+0)/1000; else if (s ~ /s$/) t += (s+0)*1000; else t = -1
		printf "%.0f\n", t }'
}
