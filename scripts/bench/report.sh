# The markdown report of scripts/bench.sh. Sourced, not run.

fmt() { # VALUE [DECIMALS]: a number, or "n/a"
	case $1 in "" | nan | -1 | -1.000) echo "n/a" ;; *) calc "$1" "${2:-2}" ;; esac
}
ok() { case $1 in "" | nan | n/a | -1 | -1.0* | -100) return 1 ;; esac; }
ratio() { # A B -> A/B
	if ok "$1" && ok "$2" && [ "$(calc "$2 != 0" 0)" = 1 ]; then calc "$1 / $2" "${3:-2}"; else echo "n/a"; fi
}
verdict() { # VALUE OP LIMIT -> met / MISSED
	if ! ok "$1"; then
		echo "n/a"
	elif [ "$(awk -v v="$1" -v l="$3" "BEGIN{print (v $2 l) ? 1 : 0}")" = 1 ]; then
		echo "met"
	else
		echo "**missed**"
	fi
}
mb() { fmt "$(calc "${1:-0} / 1024" 1)" 1; } # kB -> MB (MiB)
# The cgroup's and the process's clocks differ by a few ms: no "-0.0".
kids() { if [ "$CG_MODE" != none ]; then local d; d=$(calc "$(get "c.$1.cg_s") - $(get "c.$1.own_s")"); echo ", its child processes $(fmt "$(calc "($d < 0) ? 0 : $d")" 1) CPU-s"; fi; }
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }

machine() {
	local cpu mem ff gov commit dirty
	cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)
	ff=$(ffmpeg -version | awk 'NR==1' | awk '{print $3}')
	gov=$(go version 2>/dev/null | awk '{print $3}')
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=""
	if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then dirty=" + local changes"; fi
	local other
	other=$(calc "(($BUSY1 - $BUSY0) - ($BENCHCPU1 - $BENCHCPU0)) / $T_TOTAL" 2)
	if [ "$CG_MODE" = none ]; then other="unknown (no cgroup accounting)"; else other="$other cores on average"; fi
	cat <<EOF
Run: **$MODE** ($REPS run(s) per measurement, medians; ratios are framefarm / baseline), $(date -u '+%Y-%m-%d %H:%M UTC'),
commit $commit$dirty, bench wall time $(calc "$T_TOTAL/60" 1) min (inputs $(fmt "$T_INPUTS" 0) s).

Machine: $(nproc) cores (\`nproc\`), $cpu, $mem memory, ffmpeg $ff, $gov, Linux $(uname -r).
CPU emulation: $CG_MODE — $CG_REASON. Other processes on the machine used $other
during the run (load average $LOAD0 at the start, $LOAD1 at the end); the bench's own cgroup has cpu.shares ${BENCH_CPU_SHARES:-4096}.
Starting one \`ffprobe -version\` here takes $(fmt "$(get env.launch_ms)" 0) ms and $(fmt "$(get env.launch_cpu_ms)" 0) ms of CPU (the farm starts one ffmpeg per set, the node's encode; parts and MP4/MOV finals are checked and joined in Go, Matroska finals joined by one ffmpeg).
EOF
}

table() {
	local p n
	row "#" "measurement" "framefarm" "baseline" "ratio / result" "target" "verdict"
	row "---" "---" "---:" "---:" "---:" "---" "---"
	local o_mb
	o_mb=$(calc "$(get in.o.bytes) / 1e6" 0)
	for p in $O_PRESETS; do
		local fw bw r
		fw=$(get "o.$p.farm.wall") bw=$(get "o.$p.ff.wall")
		r=$(ratio "$fw" "$bw")
		row 1 "overhead: $O_N ${O_SIZE} PNG ($o_mb MB) → x264 $p, 1 node on the coordinator's host (reads the frames in place) vs one ffmpeg, wall" "$(fmt "$fw") s" "$(fmt "$bw") s" "${r}×" "≤ 1.03×" "$(verdict "$r" "<=" 1.03)"
		fw=$(get "o.$p.farm.cpu") bw=$(get "o.$p.ff.cpu")
		row 1 "… same, CPU time (all farm processes and their ffmpeg/ffprobe)" "$(fmt "$fw") s" "$(fmt "$bw") s" "$(ratio "$fw" "$bw")×" "—" "—"
		if has "o.$p.stream.wall"; then
			fw=$(get "o.$p.stream.wall") bw=$(get "o.$p.ff.wall")
			r=$(ratio "$fw" "$bw")
			row 1 "… same, frames **streamed** through the ambassador (\`--frames-from stream\`, as a node on another machine gets them), wall" "$(fmt "$fw") s" "$(fmt "$bw") s" "${r}×" "≤ 1.03×" "$(verdict "$r" "<=" 1.03)"
			fw=$(get "o.$p.stream.cpu") bw=$(get "o.$p.ff.cpu")
			row 1 "… streamed, CPU time" "$(fmt "$fw") s" "$(fmt "$bw") s" "$(ratio "$fw" "$bw")×" "—" "—"
		fi
	done

	local how
	how=$(getnote s.how)
	if has s.ff.wall; then
		local ff1 f1 cpus
		ff1=$(get s.ff.wall) f1=$(get s.1.wall) cpus=$(getnote s.cpus)
		for n in $(getnote s.nodes); do
			local fw sp eff eff1 tgt v
			fw=$(get "s.$n.wall")
			sp=$(ratio "$ff1" "$fw")
			eff=$(calc "$sp * 100 / $n" 0)
			eff1=$(calc "$(ratio "$f1" "$fw" 4) * 100 / $n" 0)
			tgt="—" v="—"
			if [ "$n" = 4 ]; then tgt="≥ 95%" v=$(verdict "$eff" ">=" 95); fi
			row 2 "scaling (emulated machines): $(getnote s.what), x264 $S_PRESET, $n node(s) × $cpus CPU vs one ffmpeg × $cpus CPU" \
				"$(fmt "$fw") s" "$(fmt "$ff1") s" "speedup ${sp}×, efficiency ${eff}% (${eff1}% vs the 1-node farm)" "$tgt" "$v"
		done
		n=$(getnote s.nodes)
		n=${n##* }
		if has "s.${n}s.wall"; then
			local fw sp eff
			fw=$(get "s.${n}s.wall")
			sp=$(ratio "$ff1" "$fw")
			eff=$(calc "$sp * 100 / $n" 0)
			row 2 "… $n node(s), frames **streamed** (\`--frames-from stream\`: machines without the shared folder)" \
				"$(fmt "$fw") s" "$(fmt "$ff1") s" "speedup ${sp}×, efficiency ${eff}%" "(≥ 95%)" "$(verdict "$eff" ">=" 95)"
		fi
		if [ -n "$(getnote s.skip4)" ]; then row 2 "scaling, 4 nodes" "—" "—" "$(getnote s.skip4)" "≥ 95%" "n/a"; fi
	else
		row 2 "scaling" "—" "—" "${how:-not run}" "≥ 95%" "n/a"
	fi

	if has v.farm.wall; then
		local fw bw r
		fw=$(get v.farm.wall) bw=$(get v.ff.wall)
		r=$(ratio "$fw" "$bw")
		row 3 "poor threading: $V_N ${V_SIZE} frames, libvpx-vp9 defaults; 2 nodes vs one ffmpeg, same 2 cores" "$(fmt "$fw") s" "$(fmt "$bw") s" "${r}× (speedup $(ratio "$bw" "$fw")×)" "< 1× (farm wins)" "$(verdict "$r" "<" 1)"
	else
		row 3 "poor threading (VP9)" "—" "—" "$(getnote v.skip)" "farm wins" "n/a"
	fi

	local jobdesc="$(count "$C_FRAMES") frames in $C_SETS sets"
	for n in $C_NODES; do
		local cps p50 p99 h cpu own
		cps=$(get "c.$n.cps") p50=$(get "c.$n.p50") p99=$(get "c.$n.p99") h=$(get "c.$n.hwm")
		cpu=$(get "c.$n.cpu_ms") own=$(get "c.$n.own_ms")
		local what="window"
		if [ "$C_UNTIL_DONE" = 1 ]; then what="whole job"; fi
		row 4 "coordinator, $n simulated nodes, $jobdesc ($what): grant+complete cycles/s" "$(fmt "$cps" 1)" "—" \
			"$(fmt "$(get "c.$n.cycles")" 0) cycles in $(fmt "$(get "c.$n.secs")" 0) s; the coordinator used $(fmt "$(get "c.$n.own_s")" 1) CPU-s$(kids "$n")" "≥ 1000/s" "$(verdict "$cps" ">=" 1000)"
		row 4 "… grant latency p50 / p99 at saturation" "$(fmt "$p50" 1) / $(fmt "$p99" 1) ms" "—" "$(fmt "$(get "c.$n.grants")" 0) grants measured; every node asks again at once, so a grant waits about nodes ÷ throughput (Little's law)" "(see the offered-load rows)" "—"
		row 4 "… coordinator peak RSS (VmHWM)" "$(mb "$h") MiB" "—" "$(mb "$(get c.hwm_start)") MiB once the job was created" "≤ 100 MB" "$(verdict "$(calc "$h*1024/1e6")" "<=" 100)"
	done
	for n in $C_NODES; do
		has "c.$n.pace.cps" || continue
		local p99 h
		p99=$(get "c.$n.pace.p99") h=$(get "c.$n.pace.hwm")
		row 4 "coordinator, $n simulated nodes at an offered $C_RATE cycles/s (each starts one every $(calc "$n / $C_RATE" 2) s): cycles/s achieved" \
			"$(fmt "$(get "c.$n.pace.cps")" 1)" "$C_RATE offered" "$(fmt "$(get "c.$n.pace.cpu_ms")" 2) ms of coordinator CPU per cycle" "(keeps up)" "—"
		row 4 "… grant latency p50 / p99 at that load" "$(fmt "$(get "c.$n.pace.p50")" 1) / $(fmt "$p99" 1) ms" "—" "open loop: latency at a load, not at saturation" "p99 ≤ 50 ms" "$(verdict "$p99" "<=" 50)"
		row 4 "… coordinator peak RSS (VmHWM)" "$(mb "$h") MiB" "—" "" "≤ 100 MB" "$(verdict "$(calc "$h*1024/1e6")" "<=" 100)"
	done
	if has c.cost.cps; then
		row 4 "cost: 1000 frames in 100 sets run to completion by 10 nodes: cycles/s" "$(fmt "$(get c.cost.cps)" 1)" "—" \
			"$(fmt "$(get c.cost.cpu_ms)" 0) ms CPU per cycle ($(fmt "$(get c.cost.own_ms)" 1) ms in the coordinator, the rest in its child processes: the join); grant p50 / p99 $(fmt "$(get c.cost.p50)" 1) / $(fmt "$(get c.cost.p99)" 1) ms; each of the 10 nodes waits for its own cycle, so the rate is 10 ÷ a cycle's latency, not the coordinator's capacity" "(cost)" "—"
	fi
	if has c.rel.cps; then
		row 4 "diagnostic: grant+**release** cycles/s, 100 nodes (no part; 2 durable changes)" "$(fmt "$(get c.rel.cps)" 0)" "—" \
			"p50 / p99 grant $(fmt "$(get c.rel.p50)" 1) / $(fmt "$(get c.rel.p99)" 1) ms; $(fmt "$(get c.rel.cpu_ms)" 2) ms CPU per cycle" "(≥ 1000/s)" "$(verdict "$(get c.rel.cps)" ">=" 1000)"
	fi

	local dd da dc
	dd=$(get d.direct) da=$(get d.amb) dc=$(get d.cat)
	row 5 "frames streamed coordinator → node (loopback gRPC), set of $(getnote d.set)" "$(fmt "$dd" 0) MB/s" "$(fmt "$dc" 0) MB/s (cat)" "$(ratio "$dd" "$dc")×" "≥ 1000 MB/s" "$(verdict "$dd" ">=" 1000)"
	row 5 "… through the ambassador (coordinator → ambassador → node)" "$(fmt "$da" 0) MB/s" "$(fmt "$dc" 0) MB/s (cat)" "$(ratio "$da" "$dc")×" "≥ 1000 MB/s" "$(verdict "$da" ">=" 1000)"
	local jm jc r key what
	for key in j jm; do
		has "$key.ms" || continue
		what="into .mkv, ffmpeg's concat demuxer"
		if [ $key = jm ]; then what="into .mov (the parts' container), joined in Go"; fi
		jm=$(get $key.ms) jc=$(get $key.cpsync_ms)
		r=$(ratio "$jm" "$jc")
		row 5 "join of $D_SETS FFV1 parts, $(calc "$(get $key.bytes)/1e6" 0) MB, $what (coordinator's \"joined in\")" "$(fmt "$jm" 0) ms ($(fmt "$(get $key.mbps)" 0) MB/s)" \
			"$(fmt "$jc" 0) ms (cp + fsync; $(fmt "$(get $key.cp_ms)" 0) ms without fsync)" "${r}×" "≤ 1.5×" "$(verdict "$r" "<=" 1.5)"
	done

	local role name
	for role in c a n; do
		case $role in c) name=coordinator ;; a) name=ambassador ;; n) name=node ;; esac
		local big small r
		big=$(get "m.4k.$role") small=$(get "m.small.$role")
		r=$(ratio "$big" "$small")
		row 6 "peak RSS of the $name: $M_N 3840x2160 PNG (up to $(getnote m.big) MB each) vs $O_SIZE frames" "$(mb "$big") MiB" "$(mb "$small") MiB" "${r}×" "bounded: ≤ 1.25×" "$(verdict "$r" "<=" 1.25)"
	done
	bucket_rows
}

# Section 7: frames in a bucket, read by the nodes directly vs streamed
# through the coordinator.
bucket_rows() {
	has b.bytes || return 0
	local n w1="" r1=""
	if [ -n "$(getnote b.finals)" ]; then
		local small big rs rb r
		read -r small big <<<"$(getnote b.finals)"
		rs=$(get "b.final.$small.rss") rb=$(get "b.final.$big.rss")
		r=$(ratio "$rb" "$rs")
		row 7 "a final put into the bucket as the coordinator puts one into \`--storage\` or to \`--out\` (Bucket.Put, multipart): rate and peak RSS of the putting process, $big MiB vs $small MiB" \
			"$(fmt "$(get "b.final.$big.mbps")" 0) MB/s, $(mb "$rb") MiB" "$(fmt "$(get "b.final.$small.mbps")" 0) MB/s, $(mb "$rs") MiB" \
			"${r}× the memory for $((big / small))× the bytes" "bounded: ≤ 1.25×" "$(verdict "$r" "<=" 1.25)"
	fi
	for n in $(getnote b.nodes); do
		local rb rc
		rb=$(get "b.$n.rate.bucket") rc=$(get "b.$n.rate.coordinator")
		row 7 "frames in an S3 bucket read by $n node(s) at once, no encode (loadgen: sets acquired as nodes do, frames read to nowhere): **directly** from the bucket (pre-signed GETs, 4 at a time) vs **streamed by the coordinator** (it reads the bucket)" \
			"$(fmt "$rb" 0) MB/s ($(fmt "$(get "b.$n.rate.bucket.each")" 0) a node)" "$(fmt "$rc" 0) MB/s ($(fmt "$(get "b.$n.rate.coordinator.each")" 0) a node)" \
			"$(ratio "$rb" "$rc")×; frame bytes through the coordinator $(fmt "$(calc "$(get "b.$n.rate.bucket.streamed")/1e6" 1)" 1) vs $(fmt "$(calc "$(get "b.$n.rate.coordinator.streamed")/1e6" 1)" 1) MB" \
			"coordinator carries no frame bytes" "$(verdict "$(awk -F'\t' -v k="b.$n.rate.bucket.streamed" '$1==k && $2>m{m=$2} END{print m+0}' "$RES")" "==" 0)"
		if [ -z "$r1" ]; then r1=$rb; fi
	done
	local rn
	rn=$(get "b.$n.rate.bucket")
	if [ "$n" != "$(getnote b.nodes | awk '{print $1}')" ]; then
		local first sp eff
		first=$(getnote b.nodes | awk '{print $1}')
		sp=$(ratio "$rn" "$r1")
		eff=$(calc "$sp * 100 * $first / $n" 0)
		row 7 "… read directly, $n nodes vs $first: N nodes at N times one node's rate" "$(fmt "$rn" 0) MB/s" "$(fmt "$r1" 0) MB/s" "${sp}× (${eff}% of ${n}×)" "N× (≥ 95%)" "$(verdict "$eff" ">=" 95)"
	fi
	for n in $(getnote b.nodes); do
		local dw sw st dst v
		dw=$(get "b.$n.direct.wall") sw=$(get "b.$n.stream.wall")
		dst=$(get "b.$n.direct.streamed") st=$(get "b.$n.stream.streamed")
		# Met when not one frame byte went through the coordinator in any
		# direct run (the median could hide one).
		v=$(verdict "$(awk -F'\t' -v k="b.$n.direct.streamed" '$1==k && $2>m{m=$2} END{print m+0}' "$RES")" "==" 0)
		row 7 "frames in an S3 bucket (versitygw on loopback): $(getnote b.what) → x264 ultrafast, $n node(s) × $(getnote b.cpus) CPU; read **directly** from the bucket (pre-signed GETs) vs **through the coordinator** (\`--frames-from stream\`), submit → job done" \
			"$(fmt "$dw") s ($(fmt "$(get "b.$n.direct.mbps")" 0) MB/s)" "$(fmt "$sw") s ($(fmt "$(get "b.$n.stream.mbps")" 0) MB/s)" \
			"$(ratio "$dw" "$sw")×; frame bytes through the coordinator $(fmt "$(calc "$dst/1e6" 1)" 1) vs $(fmt "$(calc "$st/1e6" 1)" 1) MB; per set outside the encode $(fmt "$(get "b.$n.direct.set_ovh")" 0) vs $(fmt "$(get "b.$n.stream.set_ovh")" 0) ms" \
			"coordinator carries no frame bytes" "$v"
		if [ -z "$w1" ]; then w1=$dw; fi
	done
	local last=${n:-1} first
	first=$(getnote b.nodes)
	first=${first%% *}
	if [ "$last" != "$first" ]; then
		local sp eff
		sp=$(ratio "$(get "b.$first.direct.wall")" "$(get "b.$last.direct.wall")")
		eff=$(calc "$sp * 100 * $first / $last" 0)
		row 7 "… whole job, frames read directly: $last nodes vs $first" "$(fmt "$(get "b.$last.direct.wall")") s" "$(fmt "$(get "b.$first.direct.wall")") s" \
			"speedup ${sp}×, efficiency ${eff}%" "—" "—"
	fi
}

details() {
	local p
	echo
	echo "Details (medians):"
	echo
	for p in $O_PRESETS; do
		echo "- 1, $p: the farm's wall time includes coordinator start-up (scan) $(fmt "$(get "o.$p.farm.startup")") s," \
			"the join $(fmt "$(get "o.$p.farm.join_ms")" 0) ms, and $(fmt "$(get "o.$p.farm.tail")") s from job_done to the fetched file" \
			"(\`fetch --wait\` follows the job's events); $(runs "o.$p.farm.wall") run(s). Per set ($SETS sets), the node spent $(fmt "$(get "o.$p.set_ovh")" 0) ms" \
			"outside ffmpeg's encode (receiving frames, probing and uploading the part, the coordinator's check). CPU seconds by role: coordinator $(fmt "$(get "o.$p.cpu.c")" 1)" \
			"+ $(fmt "$(get "o.$p.cpu.ck")" 1) in its ffprobe/ffmpeg children, ambassador $(fmt "$(get "o.$p.cpu.a")" 1)," \
			"node $(fmt "$(get "o.$p.cpu.n")" 1) + $(fmt "$(get "o.$p.cpu.nk")" 1) in its ffmpeg/ffprobe children; plain ffmpeg $(fmt "$(get "o.$p.ff.cpu")" 1)."
	done
	echo "- 1: a node that sees the coordinator's frames folder with the same files (here: the same host) links them and encodes them in place (\`--frames-from auto\`, the default); the streamed rows are the same job with every frame streamed coordinator → ambassador → node, as on machines without a shared folder. Parts are uploaded through the ambassador in both."
	echo "- 2: $(getnote s.how); the nodes read the frames in place as in 1, except in the streamed row. Per set, a node spent $(fmt "$(get s.1.set_ovh)" 0) ms (1 node) to $(fmt "$(get s.4.set_ovh)" 0) ms (4 nodes) outside ffmpeg's encode." \
		"With 4 × 0.5 CPU the emulated machines take the whole 2-core box, so the coordinator and the ambassadors (not under a quota) compete with them."
	echo "- 3: plain ffmpeg used $(fmt "$(get v.ff.cpu)" 1) CPU-s in $(fmt "$(get v.ff.wall)" 1) s (VP9 with row-mt keeps about $(calc "$(get v.ff.cpu) / $(get v.ff.wall)" 1) of the 2 cores busy);" \
		"the farm $(fmt "$(get v.farm.cpu)" 1) CPU-s; $(calc "$V_N / $SETS" 0) frames a set, $(fmt "$(get v.set_ovh)" 0) ms per set outside the encode."
	echo "- 4: coordinator start-up on the $(count "$C_FRAMES")-frame folder: $(fmt "$(get c.startup)") s. Cycles are counted in the measured" \
		"window (after a warm-up) or, in the quick run, over the whole job. Each simulated node heartbeats like a real one; its part" \
		"is a real FFV1 part of the set's size, encoded once before the clock starts. The coordinator and its children are capped" \
		"at $(calc "$COORD_MEM/1073741824" 0) GiB of memory by the bench (cgroup) as a guard."
	local n
	for n in $C_NODES; do
		echo "  $n nodes: $(fmt "$(get "c.$n.cycles")" 0) cycles, $(fmt "$(get "c.$n.errors")" 0) failed calls (median of $(runs "c.$n.cps") run(s))."
	done
	echo "- 5: streaming is loadgen acquiring set 0, streaming it to nowhere, giving it back, $D_ROUNDS times; cat reads the same" \
		"files (warm in the page cache) to /dev/null. The join's parts are FFV1 parts of $J_SRC frames; its baseline is" \
		"\`cat parts > file\` then fsync (the join also fsyncs)."
	echo "- 6: x264 ultrafast for the 4K frames, streamed (read in place, a frame's size would cost the roles nothing); the $O_SIZE figures come from the streamed overhead runs."
	bucket_details
	if [ "$PROFILE" = 1 ]; then
		echo "- Profiles (\`go tool pprof -top\`) of the coordinator under loadgen and of a node and the coordinator during a render are in the run folder ($PROF); one run of each kind was profiled."
	fi
}

report() {
	BENCH_OUT=${BENCH_OUT:-}
	if [ -z "$BENCH_OUT" ]; then
		if [ -n "${BENCH_ONLY:-}" ]; then
			BENCH_OUT=$RUN/BENCHMARKS.md
		elif [ $QUICK = 1 ]; then
			BENCH_OUT=$BENCH_DIR/BENCHMARKS-quick.md
		else
			BENCH_OUT=$ROOT/BENCHMARKS.md
		fi
	fi
	local body=$RUN/report.md
	{
		echo "<!-- bench:begin (generated by scripts/bench.sh; edit outside these markers) -->"
		echo
		machine
		echo
		table
		details
		echo
		echo "<!-- bench:end -->"
	} >"$body"
	cat "$body"
	if [ -f "$BENCH_OUT" ] && grep -q '^<!-- bench:begin' "$BENCH_OUT" && grep -q '^<!-- bench:end' "$BENCH_OUT"; then
		awk -v body="$body" '
			/^<!-- bench:begin/ { while ((getline l < body) > 0) print l; skip=1; next }
			/^<!-- bench:end/ { skip=0; next }
			!skip { print }' "$BENCH_OUT" >"$BENCH_OUT.tmp"
		mv "$BENCH_OUT.tmp" "$BENCH_OUT"
	elif [ -f "$BENCH_OUT" ]; then
		{ echo; cat "$body"; } >>"$BENCH_OUT"
	else
		{ echo "# framefarm benchmarks"; echo; cat "$body"; } >"$BENCH_OUT"
	fi
}

# bucket_details: the notes of section 7.
bucket_details() {
	has b.bytes || return 0
	local n parts=""
	for n in $(getnote b.nodes); do
		parts="$parts $n node(s): coordinator $(fmt "$(get "b.$n.direct.cpu_c")" 1) vs $(fmt "$(get "b.$n.stream.cpu_c")" 1), versitygw $(fmt "$(get "b.$n.direct.cpu_s3")" 1) vs $(fmt "$(get "b.$n.stream.cpu_s3")" 1), nodes and ambassadors $(fmt "$(get "b.$n.direct.cpu_n")" 1) vs $(fmt "$(get "b.$n.stream.cpu_n")" 1);"
	done
	echo "- 7, read rates: one coordinator with \`--storage\` and the job queued, no encode; each stream is a simulated node on its own connection straight to the coordinator (no ambassador; row 5 shows that hop's cost) reading $(getnote b.rounds) sets one after the other; MB/s in all is the streams' bytes over the wall time, \"a node\" a stream's bytes over its own time. The coordinator used $(fmt "$(get b.rate.cpu_c)" 1) CPU-s over all the rate runs. versitygw's posix backend reads the frames from the page cache."
	echo "- 7, whole jobs: $(getnote b.how). Each run is a fresh standing farm whose coordinator has \`--storage\` in the same server, every node already asking for work; the clock runs from \`framefarm submit --frames s3://...\` (the coordinator lists the bucket; $(fmt "$(get "b.${n}.direct.submit")") s at $n nodes) to the coordinator's job_done. Direct, the parts go into the bucket through pre-signed PUTs (a failed PUT falls back to the coordinator; said below when it happened); through the coordinator (\`--frames-from stream\`), the nodes also upload their parts to it, as a node without bucket access does. MB/s is the frames' bytes over that wall time; \"per set outside the encode\" is the node's time on a set minus ffmpeg's (frames in, part checked and put, the coordinator's check). The frames were put in the bucket with \`loadgen put\` at $(fmt "$(get b.put_mbps)" 0) MB/s. CPU-s direct vs through the coordinator:$parts the nodes' bucket bytes (frames and parts) $(fmt "$(calc "$(get "b.$n.direct.bucket")/1e6" 1)" 1) vs $(fmt "$(calc "$(get "b.$n.stream.bucket")/1e6" 1)" 1) MB at $n nodes."
	local lost fb
	fb=$(awk -F'\t' '$1=="b.put_fallback"{s+=$2} END{print s+0}' "$RES")
	if [ "$fb" != 0 ]; then
		echo "  In $fb set(s) over all runs a node's PUT of its part into the bucket failed and the part went through the coordinator instead, as designed (one reason: $(getnote b.put_fallback_why))."
	fi
	lost=$(awk -F'\t' '$1=="b.lost"{s+=$2} END{print s+0}' "$RES")
	if [ "$lost" != 0 ]; then
		echo "  In $lost set(s) over all runs a node dropped its set as a lost lease after the coordinator had accepted its part (a heartbeat heard that the set was complete before the answer to the part came, and cancelled that call); the job was not affected."
	fi
}
