// Command loadgen drives a real framefarm coordinator over real gRPC with
// simulated render nodes, for the benchmarks (scripts/bench.sh). It never
// runs ffmpeg while it measures.
//
//	loadgen cycles --coordinator ADDR --nodes 1000 --duration 20s --pid PID
//	loadgen stream --coordinator ADDR --rounds 5 [--parallel N] [--from bucket]
//	loadgen put --from DIR --to 's3://BUCKET/PREFIX/?endpoint=...'
//
// cycles: every simulated node loops AcquireSet → Heartbeat → UploadPart,
// like a real node without the encode. The coordinator checks each part's
// index (codec, frame count, size, pixel format, timing), so the parts must
// be real: before the clock starts, loadgen encodes one tiny valid part per
// distinct set size with the job's settings (ffmpeg's own EncodeArgs, the
// node's command line) and uploads those same bytes for every set of that
// size. It prints grant+complete cycles per second, grant latency (p50,
// p99, max) and the coordinator's peak RSS (VmHWM of --pid).
//
// stream: acquires a set, streams its frames to nowhere, gives the set
// back, and reports MB/s. Point it at an ambassador to measure that hop too.
// With --from bucket it reads the set's frames from their pre-signed URLs
// instead (a job whose frames are in a bucket, on a coordinator with
// --storage): the two paths a node has to such frames.
//
// put: uploads a folder's files (not its sub-folders or dot files) under a
// bucket prefix, as a user's tools would put frames there before
// `framefarm submit --frames s3://...`; credentials from the cloud's
// standard environment, as the coordinator takes them.
//
// The last line of output is "RESULT key=value ..." for scripts.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/framefarm/framefarm/ambassador"
	"github.com/framefarm/framefarm/internal/creds"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/storage"
	"github.com/framefarm/framefarm/node"
	farmpb "github.com/framefarm/framefarm/proto"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen cycles|stream|put [flags] (loadgen MODE --help)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "cycles":
		err = runCycles(ctx, os.Args[2:])
	case "stream":
		err = runStream(ctx, os.Args[2:])
	case "put":
		err = runPut(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q: use cycles, stream or put", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// ---- shared ----

// Client transport tuning, for experiments (stream --window, --read-buffer).
var extraDial []grpc.DialOption

func dial(addr string, n int) ([]*grpc.ClientConn, error) {
	opts, err := creds.DialOptions(creds.Token(""), creds.ClientTLS{})
	if err != nil {
		return nil, err
	}
	opts = append(opts, extraDial...)
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)))
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		if conns[i], err = grpc.NewClient(addr, opts...); err != nil {
			return nil, err
		}
	}
	return conns, nil
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		c.Close()
	}
}

// procStatus reads fields (VmHWM, VmRSS...) of /proc/PID/status, in kB.
func procStatus(pid int, keys ...string) map[string]int64 {
	out := map[string]int64{}
	if pid <= 0 {
		return out
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(keys, k) {
			continue
		}
		f := strings.Fields(v)
		if len(f) > 0 {
			out[k], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return out
}

// cpuSeconds is the user+system time of pid (not of its children).
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// cgroupSeconds reads a cgroup's CPU usage: v1 cpuacct.usage (ns) or the
// usage_usec line of v2 cpu.stat. 0 when there is no file.
func cgroupSeconds(path string) float64 {
	if path == "" {
		return 0
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(b))
	if v, ok := strings.CutPrefix(s, "usage_usec "); ok {
		v, _, _ = strings.Cut(v, "\n")
		us, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return us / 1e6
	}
	ns, _ := strconv.ParseFloat(s, 64)
	return ns / 1e9
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }

// ---- fake parts ----

type part struct {
	data []byte
	sum  []byte
}

// encodePart makes a valid part of n frames with the job's settings: tiny
// frames of the job's size, encoded with the node's own command line.
//
// With cache set, the part is kept there, keyed by settings, size and source.
func encodePart(ctx context.Context, s *farmpb.EncodeSettings, n int, work, source, cache string) (part, error) {
	var cached string
	if cache != "" {
		key := sha256.Sum256([]byte(fmt.Sprintf("%s|%d/%d|%d|%s|%s|%dx%d|%t|%dx%d|%s|%d|%s|%s|%s", s.Codec, s.FpsNum, s.FpsDen, s.Crf, s.Preset, s.PixFmt,
			s.Width, s.Height, s.PadEven, s.ScaleWidth, s.ScaleHeight, s.PartExt, n, source, s.Color, s.ColorRange)))
		cached = filepath.Join(cache, fmt.Sprintf("part-%d-%x.%s", n, key[:8], s.PartExt))
		if data, err := os.ReadFile(cached); err == nil {
			sum := sha256.Sum256(data)
			return part{data: data, sum: sum[:]}, nil
		}
	}
	dir, err := os.MkdirTemp(work, fmt.Sprintf("part-%d-", n))
	if err != nil {
		return part{}, err
	}
	defer os.RemoveAll(dir)
	w, h := s.Width, s.Height
	if s.ScaleWidth > 0 {
		w, h = s.ScaleWidth, s.ScaleHeight
	}
	gen := exec.CommandContext(ctx, "ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi",
		"-i", fmt.Sprintf("%s=s=%dx%d:r=%d/%d", source, w, h, s.FpsNum, s.FpsDen),
		"-frames:v", strconv.Itoa(n), "-start_number", "0", filepath.Join(dir, "%06d.png"))
	if out, err := gen.CombinedOutput(); err != nil {
		return part{}, fmt.Errorf("making %d frames: %v: %s", n, err, out)
	}
	out := filepath.Join(dir, "part."+s.PartExt)
	st := ffmpeg.Settings{Codec: s.Codec, Rate: ffmpeg.Rate{Num: s.FpsNum, Den: s.FpsDen}, CRF: int(s.Crf),
		Preset: s.Preset, PixFmt: s.PixFmt, PadEven: s.PadEven,
		Colour: ffmpeg.Colour{Space: s.Color, Range: s.ColorRange, EXRTransfer: s.ExrTransfer, Alpha: s.Alpha}}
	args, err := ffmpeg.EncodeArgs(ffmpeg.SequencePattern(dir, "png"), st, out)
	if err != nil {
		return part{}, err
	}
	if err := (ffmpeg.Runner{}).Run(ctx, args, nil); err != nil {
		return part{}, fmt.Errorf("encoding a %d-frame part: %w", n, err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return part{}, err
	}
	if cached != "" {
		if err := os.MkdirAll(cache, 0o755); err == nil && os.WriteFile(cached+".tmp", data, 0o644) == nil {
			_ = os.Rename(cached+".tmp", cached)
		}
	}
	sum := sha256.Sum256(data)
	return part{data: data, sum: sum[:]}, nil
}

func upload(ctx context.Context, cl farmpb.NodeServiceClient, node string, a *farmpb.Assignment, p part) error {
	stream, err := cl.UploadPart(ctx)
	if err != nil {
		return err
	}
	send := func(m *farmpb.UploadPartRequest) error {
		if err := stream.Send(m); err != nil {
			if _, rerr := stream.CloseAndRecv(); rerr != nil {
				return rerr
			}
			return err
		}
		return nil
	}
	if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Header{Header: &farmpb.PartHeader{
		Node: node, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token,
		Size: int64(len(p.data)), Frames: uint32(len(a.Frames)), EncodeMs: 1}}}); err != nil {
		return err
	}
	for off := 0; off < len(p.data); off += 1 << 20 {
		end := min(off+1<<20, len(p.data))
		if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Chunk{Chunk: p.data[off:end]}}); err != nil {
			return err
		}
	}
	if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Trailer{Trailer: &farmpb.PartTrailer{Sha256: p.sum}}}); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// ---- cycles ----

// sample is one timed call: when it ended and how long it took.
type sample struct {
	at time.Time
	d  time.Duration
}

func runCycles(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cycles", flag.ExitOnError)
	addr := fs.String("coordinator", "127.0.0.1:5555", "coordinator `ADDR`")
	nodes := fs.Int("nodes", 100, "simulated nodes, each on its own connection unless --conns")
	conns := fs.Int("conns", 0, "gRPC connections shared by the nodes (0: one per node)")
	duration := fs.Duration("duration", 20*time.Second, "how long to measure (after --warmup)")
	warmup := fs.Duration("warmup", 2*time.Second, "run this long before measuring")
	untilDone := fs.Bool("until-done", false, "run until the job is done (no time limit), then report its join")
	heartbeats := fs.Int("heartbeats", -1, "heartbeats per set: a real node sends one at once, then one per interval until its part is in (-1)")
	pid := fs.Int("pid", 0, "coordinator `PID`, for its peak RSS (VmHWM) and CPU time")
	work := fs.String("work", os.TempDir(), "`DIR` for encoding the fake parts")
	limit := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	release := fs.Bool("release", false, "give each set back (ReleaseSet) instead of uploading a part: grant+release cycles, no part")
	source := fs.String("part-source", "testsrc2", "ffmpeg lavfi `SOURCE` of the fake parts' frames (testsrc2, mandelbrot...)")
	cache := fs.String("part-cache", "", "keep the fake parts in `DIR` and reuse them across runs")
	usageFile := fs.String("cgroup-usage", "", "the coordinator's cgroup CPU usage `FILE` (v1 cpuacct.usage or v2 cpu.stat), read at the window's start and end")
	offered := fs.Float64("rate", 0, "offered load: cycles per second from all the nodes together, each node starting one every nodes/rate seconds (a farm's nodes spend that time encoding); 0: every node starts its next cycle at once (saturation)")
	_ = fs.Parse(args)
	// Each simulated node reaches the coordinator as a real node does,
	// through its ambassador's connection.
	extraDial = append(ambassador.TransportOptions(), extraDial...)
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()

	nc := *conns
	if nc <= 0 || nc > *nodes {
		nc = *nodes
	}
	cs, err := dial(*addr, nc)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	farm := farmpb.NewFarmServiceClient(cs[0])
	st, err := waitJob(ctx, farm)
	if err != nil {
		return err
	}
	// One part per distinct set size, made before the clock starts.
	parts := map[int]part{}
	sizes := map[int]bool{}
	for _, s := range st.Sets {
		if s.State == "A" {
			sizes[int(s.FrameCount)] = true
		}
	}
	t0 := time.Now()
	for n := range sizes {
		p, err := encodePart(ctx, st.Settings, n, *work, *source, *cache)
		if err != nil {
			return err
		}
		parts[n] = p
	}
	fmt.Printf("loadgen: job %s, %d frames in %d sets, %s %dx%d; %d fake part size(s) encoded in %s\n",
		st.JobId, st.TotalFrames, len(st.Sets), st.Settings.Codec, st.Settings.Width, st.Settings.Height,
		len(parts), time.Since(t0).Round(time.Millisecond))

	var (
		mu       sync.Mutex
		grantS   []sample // every AcquireSet that returned a set
		cycleS   []sample // every grant+complete cycle
		errCount atomic.Int64
		lastErr  atomic.Value
		retries  atomic.Int64
		hbErrors atomic.Int64
	)
	runCtx := ctx
	if !*untilDone {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeout(ctx, *warmup+*duration)
		defer c2()
	}
	start := time.Now()
	var cpu0, cg0 float64
	var cpuMu sync.Mutex
	windowAt := start
	if !*untilDone {
		windowAt = start.Add(*warmup)
	}
	cpuTimer := time.AfterFunc(time.Until(windowAt), func() {
		cpuMu.Lock()
		cpu0, cg0 = cpuSeconds(*pid), cgroupSeconds(*usageFile)
		cpuMu.Unlock()
	})
	defer cpuTimer.Stop()
	// With an offered rate, node i starts its cycles on its own schedule,
	// every period from a start spread evenly over one period: latency is
	// then measured at that load (open loop), not at saturation, where by
	// Little's law it is only nodes/throughput. A cycle that overruns its
	// slot starts the next at once.
	var period time.Duration
	if *offered > 0 {
		period = time.Duration(float64(*nodes) / *offered * float64(time.Second))
	}
	var wg sync.WaitGroup
	for i := range *nodes {
		cl := farmpb.NewNodeServiceClient(cs[i%nc])
		name := fmt.Sprintf("sim-%05d", i)
		wg.Go(func() {
			var lg, lc []sample
			defer func() { mu.Lock(); grantS, cycleS = append(grantS, lg...), append(cycleS, lc...); mu.Unlock() }()
			next := start.Add(period * time.Duration(i) / time.Duration(*nodes))
			for runCtx.Err() == nil {
				if period > 0 {
					if wait := time.Until(next); wait > 0 {
						select {
						case <-runCtx.Done():
							return
						case <-time.After(wait):
						}
					}
					next = next.Add(period)
					if now := time.Now(); next.Before(now) {
						next = now
					}
				}
				c0 := time.Now()
				resp, err := cl.AcquireSet(runCtx, &farmpb.AcquireSetRequest{Node: name, Once: true})
				grant := time.Since(c0)
				if err != nil {
					if runCtx.Err() == nil {
						errCount.Add(1)
						lastErr.Store(err.Error())
						time.Sleep(100 * time.Millisecond)
					}
					continue
				}
				switch r := resp.Result.(type) {
				case *farmpb.AcquireSetResponse_Done:
					return
				case *farmpb.AcquireSetResponse_RetryAfterMs:
					retries.Add(1)
					select {
					case <-runCtx.Done():
					case <-time.After(time.Duration(r.RetryAfterMs) * time.Millisecond):
					}
					continue
				case *farmpb.AcquireSetResponse_Assignment:
					a := r.Assignment
					lg = append(lg, sample{at: time.Now(), d: grant})
					p, ok := parts[len(a.Frames)]
					if !ok {
						errCount.Add(1)
						lastErr.Store(fmt.Sprintf("no fake part for a set of %d frames", len(a.Frames)))
						return
					}
					// Like a real node: a heartbeat at once, then one every
					// interval until the part is uploaded.
					hbStop := make(chan struct{})
					hbDone := make(chan struct{})
					go func() {
						defer close(hbDone)
						every := time.Duration(a.HeartbeatIntervalMs) * time.Millisecond
						if every <= 0 {
							every = 5 * time.Second
						}
						t := time.NewTicker(every)
						defer t.Stop()
						for beats := 0; beats < *heartbeats || *heartbeats < 0; beats++ {
							if beats > 0 {
								select {
								case <-hbStop:
									return
								case <-t.C:
								}
							}
							// A beat that crosses the part's acceptance is refused
							// as stale; a real node ignores that too.
							if _, err := cl.Heartbeat(runCtx, &farmpb.HeartbeatRequest{Node: name, JobId: a.JobId,
								SetIndex: a.SetIndex, Token: a.Token, FramesDone: uint32(len(a.Frames))}); err != nil && runCtx.Err() == nil {
								hbErrors.Add(1)
							}
						}
					}()
					// At the end of the window, uploads in flight are cut:
					// the coordinator drops them, and the run ends.
					var err error
					if *release {
						_, err = cl.ReleaseSet(runCtx, &farmpb.ReleaseSetRequest{Node: name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token})
					} else {
						err = upload(runCtx, cl, name, a, p)
					}
					close(hbStop)
					<-hbDone
					if err != nil {
						if runCtx.Err() == nil {
							errCount.Add(1)
							lastErr.Store("upload: " + err.Error())
						}
						continue
					}
					lc = append(lc, sample{at: time.Now(), d: time.Since(c0)})
				}
			}
		})
	}
	wg.Wait()
	end := time.Now()
	cpuMu.Lock()
	cpu1, cg1 := cpuSeconds(*pid), cgroupSeconds(*usageFile)
	cpuMu.Unlock()
	mem := procStatus(*pid, "VmHWM", "VmRSS")

	// Measure completions inside [start+warmup, end].
	from := start.Add(*warmup)
	if *untilDone {
		from = start
	}
	var grants, cycles []time.Duration
	for _, s := range grantS {
		if s.at.After(from) {
			grants = append(grants, s.d)
		}
	}
	for _, s := range cycleS {
		if s.at.After(from) {
			cycles = append(cycles, s.d)
		}
	}
	slices.Sort(grants)
	slices.Sort(cycles)
	secs := end.Sub(from).Seconds()
	rate := float64(len(cycles)) / secs
	fmt.Printf("loadgen: %d nodes, %d cycles in %.2fs: %.1f cycles/s; %d grants: p50 %s ms, p99 %s ms, max %s ms; cycle p50 %s ms, p99 %s ms; %d errors, %d retry-after\n",
		*nodes, len(cycles), secs, rate, len(grants), ms(pct(grants, 0.5)), ms(pct(grants, 0.99)), ms(pct(grants, 1)),
		ms(pct(cycles, 0.5)), ms(pct(cycles, 0.99)), errCount.Load(), retries.Load())
	if *usageFile != "" && len(cycles) > 0 {
		fmt.Printf("loadgen: coordinator CPU in the window: %.2fs itself, %.2fs with its children: %.1f ms per cycle\n",
			cpu1-cpu0, cg1-cg0, (cg1-cg0)*1000/float64(len(cycles)))
	}
	if e, ok := lastErr.Load().(string); ok {
		fmt.Printf("loadgen: last error: %s\n", e)
	}
	res := fmt.Sprintf("RESULT mode=cycles offered_per_s=%.0f release=%t nodes=%d conns=%d grants=%d cycles=%d seconds=%.2f cycles_per_s=%.1f grant_p50_ms=%s grant_p99_ms=%s grant_max_ms=%s cycle_p50_ms=%s cycle_p99_ms=%s errors=%d hb_errors=%d coord_hwm_kb=%d coord_rss_kb=%d coord_cpu_s=%.2f coord_cgroup_cpu_s=%.2f",
		*offered, *release, *nodes, nc, len(grants), len(cycles), secs, rate, ms(pct(grants, 0.5)), ms(pct(grants, 0.99)), ms(pct(grants, 1)),
		ms(pct(cycles, 0.5)), ms(pct(cycles, 0.99)), errCount.Load(), hbErrors.Load(), mem["VmHWM"], mem["VmRSS"], cpu1-cpu0, cg1-cg0)
	if *untilDone {
		state, detail, err := waitJoin(ctx, farm)
		if err != nil {
			return err
		}
		fmt.Printf("loadgen: job %s: %s\n", state, detail)
		joinMS := -1.0
		if m := regexp.MustCompile(`joined in ([0-9.]+[a-zµ]+)`).FindStringSubmatch(detail); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				joinMS = float64(d) / 1e6
			}
		}
		res += fmt.Sprintf(" job_state=%s join_ms=%.0f", state, joinMS)
		mem = procStatus(*pid, "VmHWM")
		res += fmt.Sprintf(" coord_hwm_after_join_kb=%d", mem["VmHWM"])
	}
	fmt.Println(res)
	if *untilDone && errCount.Load() > 0 {
		return fmt.Errorf("%d calls failed", errCount.Load())
	}
	return nil
}

func waitJob(ctx context.Context, farm farmpb.FarmServiceClient) (*farmpb.JobStatus, error) {
	for {
		st, err := farm.GetJob(ctx, &farmpb.GetJobRequest{})
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("coordinator not answering: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitJoin waits for the job to end and returns its last event's detail.
func waitJoin(ctx context.Context, farm farmpb.FarmServiceClient) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for {
		st, err := farm.GetJob(ctx, &farmpb.GetJobRequest{})
		if err != nil {
			return "", "", err
		}
		if st.State == "done" || st.State == "failed" {
			after := uint64(0)
			if st.LastEventSeq > 5 {
				after = st.LastEventSeq - 5
			}
			ev, err := farm.WatchEvents(ctx, &farmpb.WatchEventsRequest{AfterSeq: after})
			if err != nil {
				return st.State, st.Reason, nil
			}
			detail := st.Reason
			for {
				e, err := ev.Recv()
				if err != nil {
					break
				}
				if e.Kind == "job_done" || e.Kind == "job_failed" {
					detail = e.Detail
				}
				if e.Seq >= st.LastEventSeq {
					break
				}
			}
			return st.State, detail, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- stream ----

func runStream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	addr := fs.String("coordinator", "127.0.0.1:5555", "coordinator (or ambassador) `ADDR`")
	rounds := fs.Int("rounds", 5, "sets to stream, one after the other, per stream")
	parallel := fs.Int("parallel", 1, "streams at once, each its own node and connection")
	window := fs.Int("window", 0, "HTTP/2 stream and connection flow-control window in `BYTES` (0: gRPC's default, dynamic)")
	readBuf := fs.Int("read-buffer", 0, "gRPC read buffer in `BYTES` (0: default 32 KiB)")
	from := fs.String("from", "coordinator", "where the frames come `FROM`: coordinator (streamed over gRPC) or bucket (GETs of the set's pre-signed URLs, as a node with --frames-from auto reads them; the job's frames must be in a bucket)")
	_ = fs.Parse(args)
	if *from != "coordinator" && *from != "bucket" {
		return fmt.Errorf("--from %q: use coordinator or bucket", *from)
	}
	// The node's own bucket client settings: 4 frames at once, each on a
	// kept-alive connection.
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: bucketParallel, ResponseHeaderTimeout: 30 * time.Second}}
	if *window > 0 {
		extraDial = append(extraDial, grpc.WithInitialWindowSize(int32(*window)), grpc.WithInitialConnWindowSize(int32(*window)))
	}
	if *readBuf > 0 {
		extraDial = append(extraDial, grpc.WithReadBufferSize(*readBuf))
	}

	// A node's own transport, so the rate is what a node would get.
	extraDial = append(node.TransportOptions(), extraDial...)
	cs, err := dial(*addr, *parallel)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	var total atomic.Int64
	var busy atomic.Int64 // sum of the streams' own times, ns
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *parallel {
		cl := farmpb.NewNodeServiceClient(cs[i])
		name := fmt.Sprintf("streamer-%d", i)
		wg.Go(func() {
			for r := 0; r < *rounds; r++ {
				n, d, err := streamOnce(ctx, cl, name, *from == "bucket", httpc)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				total.Add(n)
				busy.Add(int64(d))
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return firstErr
	}
	mb := float64(total.Load()) / 1e6
	// busy is summed over the streams: the per-stream rate is bytes/busy.
	perStream := mb / (float64(busy.Load()) / 1e9)
	agg := mb / wall.Seconds()
	fmt.Printf("loadgen: read %.1f MB from the %s in %d sets over %d stream(s): %.0f MB/s per stream, %.0f MB/s in all\n",
		mb, *from, *rounds**parallel, *parallel, perStream, agg)
	fmt.Printf("RESULT mode=stream from=%s parallel=%d bytes=%d mb_per_s=%.1f aggregate_mb_per_s=%.1f\n", *from, *parallel, total.Load(), perStream, agg)
	return nil
}

// counter is a frame file that keeps only the count of its bytes.
type counter struct{ n *int64 }

func (c *counter) Write(p []byte) (int, error) { *c.n += int64(len(p)); return len(p), nil }
func (c *counter) Close() error                { return nil }

// streamOnce acquires a set, streams its frames to nowhere (or, fromBucket,
// reads them from their pre-signed URLs) and gives it back.
func streamOnce(ctx context.Context, cl farmpb.NodeServiceClient, name string, fromBucket bool, httpc *http.Client) (int64, time.Duration, error) {
	resp, err := cl.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: name})
	if err != nil {
		return 0, 0, err
	}
	a := resp.GetAssignment()
	if a == nil {
		return 0, 0, fmt.Errorf("no set to stream: %v", resp.Result)
	}
	defer cl.ReleaseSet(context.WithoutCancel(ctx), &farmpb.ReleaseSetRequest{Node: name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token})
	var want int64
	for _, f := range a.Frames {
		want += f.Size
	}
	t0 := time.Now()
	var n int64
	if fromBucket {
		n, err = getFrames(ctx, httpc, a)
	} else {
		// The node's own receive path, with its files replaced by a counter.
		err = node.ReceiveFrames(ctx, cl, &farmpb.StreamFramesRequest{Node: name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token},
			a.Frames, func(int) (io.WriteCloser, error) { return &counter{n: &n}, nil })
	}
	if err != nil {
		return n, 0, err
	}
	d := time.Since(t0)
	if n != want {
		return n, d, fmt.Errorf("set %d: streamed %d bytes, its frames have %d", a.SetIndex, n, want)
	}
	return n, d, nil
}

// bucketParallel is the node's: how many frames of a set it reads from the
// bucket at once.
const bucketParallel = 4

// getFrames reads a set's frames from their pre-signed URLs to nowhere,
// bucketParallel at once as a node does, and returns the bytes read.
func getFrames(ctx context.Context, httpc *http.Client, a *farmpb.Assignment) (int64, error) {
	if len(a.FrameUrls) != len(a.Frames) {
		return 0, fmt.Errorf("set %d: %d frame URLs for %d frames (is the job's --frames a bucket, and the coordinator's --storage set?)",
			a.SetIndex, len(a.FrameUrls), len(a.Frames))
	}
	var total atomic.Int64
	errs := make([]error, len(a.Frames))
	sem := make(chan struct{}, bucketParallel)
	var wg sync.WaitGroup
	for i, f := range a.Frames {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = func() error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.FrameUrls[i], nil)
				if err != nil {
					return err
				}
				resp, err := httpc.Do(req)
				if err != nil {
					return fmt.Errorf("frame %s: %w", f.Name, err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("frame %s: the bucket answered %s", f.Name, resp.Status)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				total.Add(n)
				if err == nil && n != f.Size {
					err = fmt.Errorf("frame %s: read %d bytes, the job recorded %d", f.Name, n, f.Size)
				}
				return err
			}()
		})
	}
	wg.Wait()
	return total.Load(), errors.Join(errs...)
}

// ---- put ----

func runPut(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("put", flag.ExitOnError)
	from := fs.String("from", "", "the `DIR` whose files to upload")
	to := fs.String("to", "", "the bucket folder `URL` to put them under (s3://BUCKET/PREFIX/?endpoint=...)")
	parallel := fs.Int("parallel", 4, "uploads at once")
	_ = fs.Parse(args)
	if *from == "" || *to == "" {
		return fmt.Errorf("put needs --from DIR and --to URL")
	}
	bucketURL, prefix, err := storage.ParsePrefix(*to)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(*from)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	b, err := storage.OpenBucket(ctx, bucketURL)
	if err != nil {
		return err
	}
	defer b.Close()
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var total atomic.Int64
	errs := make([]error, len(names))
	sem := make(chan struct{}, max(*parallel, 1))
	var wg sync.WaitGroup
	for i, name := range names {
		sem <- struct{}{}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			f, err := os.Open(filepath.Join(*from, name))
			if err == nil {
				c := &countingReader{r: f}
				err = b.Put(ctx, prefix+name, c)
				f.Close()
				total.Add(c.n)
			}
			if err != nil {
				errs[i] = err
				cancel() // one failure is enough to say; the rest would repeat it
			}
		})
	}
	wg.Wait()
	// The first failure, not the cancellations it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	// The putter's peak memory: what a put of any size costs the
	// coordinator, whose copies of finals go through the same Bucket.Put.
	rss := procStatus(os.Getpid(), "VmHWM")["VmHWM"]
	fmt.Printf("loadgen: put %d files (%.1f MB) into %s in %.2f s, peak RSS %d kB\n", len(names), float64(total.Load())/1e6, b, secs, rss)
	fmt.Printf("RESULT mode=put files=%d bytes=%d seconds=%.3f peak_rss_kb=%d\n", len(names), total.Load(), secs, rss)
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
