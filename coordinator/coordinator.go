// Package coordinator is the farm's brain: it scans the frames folder and
// splits it into sets, runs each set's A/B/C state machine with leases and
// fencing tokens, keeps that state in SQLite, streams frames to nodes,
// verifies and stores their parts, and joins the parts into the final video.
package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/framefarm/framefarm/internal/creds"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/frameseq"
	farmpb "github.com/framefarm/framefarm/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Config is everything the coordinator is started with.
type Config struct {
	FramesDir string
	// Out, when set, receives a copy of the final video; its extension picks
	// the container.
	Out              string
	Data             string
	Listen           string
	Sets             int
	Lease            time.Duration
	HeartbeatTimeout time.Duration
	Codec            string
	FPS              string
	CRF              int // -1: encoder default
	Preset           string
	PixFmt           string
	KeepParts        bool
	// NoFastStart: see jobSettings.NoFastStart.
	NoFastStart bool
	// Audio, when set, is an audio file muxed into the final video.
	Audio string
	// Pattern picks one naming pattern when the folder holds several.
	Pattern string
	// Gaps is what to do with missing frame numbers: "" or "refuse", "hold"
	// (repeat the previous frame, so timing stays true) or "skip".
	Gaps string
	// Scale ("WxH") scales every frame to one size, for folders of mixed sizes.
	Scale string
	// Token, when set, must come with every call (UNAUTHENTICATED otherwise).
	Token string
	TLS   creds.ServerTLS
	// Reflection lists the services to any gRPC client (grpcurl).
	Reflection bool
	// PollWindow is how long AcquireSet waits for work before answering
	// "ask again".
	PollWindow time.Duration
	Logger     *slog.Logger
	// Now is the clock of every lease decision.
	Now    func() time.Time
	FFmpeg ffmpeg.Runner
}

// jobSettings are persisted with the job: a restarted coordinator must not
// mix parts encoded with other settings.
type jobSettings struct {
	Codec    string `json:"codec"`
	FPSNum   int64  `json:"fps_num"`
	FPSDen   int64  `json:"fps_den"`
	CRF      int    `json:"crf"`
	Preset   string `json:"preset"`
	PixFmt   string `json:"pix_fmt"`
	PadEven  bool   `json:"pad_even"`
	ScaleW   int    `json:"scale_w,omitempty"`
	ScaleH   int    `json:"scale_h,omitempty"`
	Width    int    `json:"width"`
	Height   int    `json:"height"`
	FrameExt string `json:"frame_ext"`
	PartExt  string `json:"part_ext"`
	FinalExt string `json:"final_ext"`
	// NoFastStart leaves an MP4/MOV final's index after its media data. It
	// is a negative so that jobs recorded before it (whose fingerprints did
	// not hold it) keep their fingerprints and resume.
	NoFastStart bool `json:"no_faststart,omitempty"`
	// FilterThreads is fixed when the job is created and kept on resume
	// (it is not in the fingerprint): see EncodeSettings.filter_threads.
	FilterThreads int `json:"filter_threads,omitempty"`
	// Audio is the absolute path of the audio file muxed into the final
	// (see addAudio); empty, and so absent from old jobs' fingerprints,
	// without --audio.
	Audio string `json:"audio,omitempty"`
}

func (s jobSettings) rate() ffmpeg.Rate { return ffmpeg.Rate{Num: s.FPSNum, Den: s.FPSDen} }

// outWidth and outHeight are the dimensions of the encoded video.
func (s jobSettings) outWidth() int  { return s.Width + btoi(s.PadEven && s.Width%2 == 1) }
func (s jobSettings) outHeight() int { return s.Height + btoi(s.PadEven && s.Height%2 == 1) }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Coordinator serves one job.
type Coordinator struct {
	cfg   Config
	log   *slog.Logger
	store *store
	rec   jobRecord
	// frames are the job's frames in order; sets index into them.
	frames  []frameRecord
	jobDir  string
	partDir string

	mu  sync.Mutex
	job *Job
	// changed is closed (and replaced) on every committed batch, waking
	// long polls and event watchers.
	changed chan struct{}
	// open collects the changes applied since the last write began, last is
	// the newest batch not yet durable (nil when all are), broken the error
	// of a failed commit, after which nothing changes (see batch).
	open   *batch
	last   *batch
	broken error
	// commitMu is held by the one writer of batches.
	commitMu sync.Mutex
	// fatal receives the failed commit that stops Run.
	fatal   chan error
	nodes   map[string]*nodeInfo
	joinReq chan struct{}

	ready   chan struct{}
	addr    string
	srvOpts []grpc.ServerOption
}

type nodeInfo struct {
	lastSeen  time.Time
	cpuLoad   float64
	freeCores float64
	setsDone  int
	breaker   *farmpb.BreakerInfo
}

// New scans the frames folder, checks the settings, and creates the job or
// resumes the one that the data folder holds for the same frames and
// settings. Every error here is the user's to fix, and says how.
func New(ctx context.Context, cfg Config) (*Coordinator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PollWindow <= 0 {
		cfg.PollWindow = 20 * time.Second
	}
	if cfg.Sets < 1 {
		return nil, fmt.Errorf("--sets %d: a job needs at least 1 set", cfg.Sets)
	}
	if cfg.Lease <= 0 || cfg.HeartbeatTimeout <= 0 {
		return nil, errors.New("--lease and --heartbeat-timeout must be positive durations (e.g. 10m, 30s)")
	}
	settings, err := checkSettings(cfg)
	if err != nil {
		return nil, err
	}
	if settings.Audio, err = checkAudio(ctx, cfg.FFmpeg, cfg.Audio, settings.FinalExt); err != nil {
		return nil, err
	}
	if cfg.FramesDir == "" {
		return nil, errors.New("--frames is required: the folder of numbered images to encode")
	}
	dir, err := filepath.Abs(cfg.FramesDir)
	if err != nil {
		return nil, err
	}
	if cfg.Gaps != "" && cfg.Gaps != "refuse" && cfg.Gaps != "hold" && cfg.Gaps != "skip" {
		return nil, fmt.Errorf("--gaps %q: use refuse (the default), hold (repeat the previous frame) or skip (close the gaps up)", cfg.Gaps)
	}
	if cfg.Scale != "" {
		if _, err := fmt.Sscanf(cfg.Scale, "%dx%d", &settings.ScaleW, &settings.ScaleH); err != nil ||
			settings.ScaleW < 2 || settings.ScaleH < 2 || settings.ScaleW > 16384 || settings.ScaleH > 16384 ||
			fmt.Sprintf("%dx%d", settings.ScaleW, settings.ScaleH) != cfg.Scale {
			return nil, fmt.Errorf("--scale %q: give the size as WIDTHxHEIGHT, e.g. 1920x1080", cfg.Scale)
		}
	}
	seq, err := frameseq.Scan(dir, frameseq.Options{Pattern: cfg.Pattern,
		AllowGaps: cfg.Gaps == "hold" || cfg.Gaps == "skip", AllowMixedDimensions: cfg.Scale != ""})
	if err != nil {
		return nil, err
	}
	if cfg.Gaps == "hold" {
		if held := seq.Last() - seq.First() + 1; held > maxHeldFrames {
			return nil, fmt.Errorf("--gaps hold: the numbering runs from %d to %d, %d frames once the gaps are held (at most %d): check the folder for a stray frame number, or use --gaps skip",
				seq.First(), seq.Last(), held, maxHeldFrames)
		}
	}
	frames := sequenceFrames(seq, cfg.Gaps == "hold")
	if err := checkUTF8(dir, cfg.Out, frames); err != nil {
		return nil, err
	}
	if n := len(seq.Gaps()); n > 0 {
		cfg.Logger.Warn("frame numbers are missing", "gaps", n, "policy", cfg.Gaps, "frames", len(frames))
	}
	settings.FrameExt = seq.Pattern.Ext
	settings.Width, settings.Height = seq.Width, seq.Height
	if settings.ScaleW > 0 {
		settings.Width, settings.Height = settings.ScaleW, settings.ScaleH
	}
	if settings.Width == 0 || settings.Height == 0 {
		p, err := cfg.FFmpeg.ProbeVideo(ctx, filepath.Join(dir, frames[0].Name), false)
		if err != nil {
			return nil, fmt.Errorf("reading frame %d (%s): %w", frames[0].Number, frames[0].Name, err)
		}
		settings.Width, settings.Height = p.Width, p.Height
	}
	if isSubsampled(settings.PixFmt) && (settings.Width%2 == 1 || settings.Height%2 == 1) {
		settings.PadEven = true
		cfg.Logger.Warn("frames have an odd dimension; padding to even, as 4:2:0 and 4:2:2 need",
			"width", settings.Width, "height", settings.Height, "pix_fmt", settings.PixFmt)
	}
	if err := checkOutputs(cfg, settings, frames); err != nil {
		return nil, err
	}
	tlsOpts, err := creds.ServerOptions(cfg.TLS)
	if err != nil {
		return nil, err
	}
	c := &Coordinator{
		cfg: cfg, log: cfg.Logger, frames: frames,
		changed: make(chan struct{}), nodes: map[string]*nodeInfo{}, open: newBatch(), fatal: make(chan error, 1),
		joinReq: make(chan struct{}, 1), ready: make(chan struct{}), srvOpts: tlsOpts,
	}
	if c.cfg.Data, err = filepath.Abs(cfg.Data); err != nil {
		return nil, err
	}
	c.store, err = openStore(c.cfg.Data)
	if err != nil {
		return nil, err
	}
	out := ""
	if cfg.Out != "" {
		if out, err = filepath.Abs(cfg.Out); err != nil {
			return nil, err
		}
	}
	fp := fingerprint(settings, frames, cfg.Sets)
	id, err := c.store.findJob(ctx, dir, fp)
	if err != nil {
		c.store.Close()
		return nil, err
	}
	if id != "" {
		rec, stored, job, err := c.store.loadJob(ctx, id)
		if err != nil {
			c.store.Close()
			return nil, err
		}
		c.rec, c.frames, c.job = rec, stored, job
		c.rec.OutPath = out
		if job.State == JobFailed && job.allCompleted() {
			// Only the join failed (a full disk, say): every part is here, so join again.
			job.State, job.Reason = JobJoining, ""
		}
		now := cfg.Now()
		for _, s := range job.Sets {
			// A restarted coordinator gives every lease a fresh window: its
			// node may still be working and will heartbeat again.
			s.LastBeat, s.LastProgress = now, now
		}
		c.log.Info("resuming job", "job", id, "state", job.State, "sets", len(job.Sets))
	} else {
		settings.FilterThreads = ffmpeg.AutoFilterThreads(runtime.NumCPU())
		c.rec = jobRecord{ID: newID(), Created: cfg.Now(), FramesDir: dir, OutPath: out, Settings: settings, Fingerprint: fp}
		c.job = &Job{ID: c.rec.ID, State: JobRunning, Sets: Partition(len(frames), cfg.Sets), NodeFailures: map[string]int{}}
		ev := []Event{{At: cfg.Now(), Kind: "job_created", Set: -1,
			Detail: fmt.Sprintf("%d frames (%s, %d to %d) in %d sets, %s at %s fps, %dx%d%s", len(frames), seq.Pattern,
				frames[0].Number, frames[len(frames)-1].Number, len(c.job.Sets), settings.Codec, settings.rate(),
				settings.outWidth(), settings.outHeight(), notes(settings, seq, cfg.Gaps))}}
		if err := c.store.createJob(ctx, c.rec, frames, c.job, ev); err != nil {
			c.store.Close()
			return nil, err
		}
		c.log.Info("job created", "job", c.rec.ID, "frames", len(frames), "sets", len(c.job.Sets), "pattern", seq.Pattern.String(),
			"detail", ev[0].Detail)
	}
	// Before any grant or heartbeat, so that a pause before the first sweep
	// is noticed whichever call comes first after it.
	c.job.WatchForPauses(c.cfg.HeartbeatTimeout)
	c.jobDir = filepath.Join(c.cfg.Data, "jobs", c.rec.ID)
	c.partDir = filepath.Join(c.jobDir, "parts")
	if err := os.MkdirAll(c.partDir, 0o755); err != nil {
		c.store.Close()
		return nil, fmt.Errorf("creating %s: %w", c.partDir, err)
	}
	removeTemps(c.partDir)
	removeTemps(c.jobDir)
	return c, nil
}

func checkSettings(cfg Config) (jobSettings, error) {
	codec, err := ffmpeg.LookupCodec(cfg.Codec)
	if err != nil {
		return jobSettings{}, fmt.Errorf("--codec: %w", err)
	}
	rate, err := ffmpeg.ParseRate(cfg.FPS)
	if err != nil {
		return jobSettings{}, err
	}
	finalExt := codec.Finals[0]
	if cfg.Out != "" {
		finalExt = strings.TrimPrefix(strings.ToLower(filepath.Ext(cfg.Out)), ".")
		if finalExt == "" {
			return jobSettings{}, fmt.Errorf("--out %s has no extension: end it in .%s to pick the container", cfg.Out, strings.Join(codec.Finals, ", ."))
		}
	}
	if err := codec.CheckSettings(finalExt, cfg.CRF, cfg.Preset); err != nil {
		return jobSettings{}, err
	}
	pix := cfg.PixFmt
	if pix == "" {
		pix = codec.DefaultPixFmt
	}
	return jobSettings{Codec: codec.Name, FPSNum: rate.Num, FPSDen: rate.Den, CRF: cfg.CRF, Preset: cfg.Preset,
		PixFmt: pix, PartExt: codec.PartExt, FinalExt: finalExt, NoFastStart: cfg.NoFastStart}, nil
}

func isSubsampled(pix string) bool {
	return strings.Contains(pix, "420") || strings.Contains(pix, "422") || strings.Contains(pix, "411") || strings.HasPrefix(pix, "nv")
}

// fingerprint identifies a job by its frames and settings, so a restarted
// coordinator resumes the same job and never mixes parts of another.
func fingerprint(s jobSettings, frames []frameRecord, sets int) string {
	h := sha256.New()
	b, _ := json.Marshal(s)
	h.Write(b)
	fmt.Fprintf(h, "sets=%d\n", sets)
	for _, f := range frames {
		fmt.Fprintf(h, "%d\x00%s\x00%d\x00%d\n", f.Number, f.Name, f.Size, f.ModTime.UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// removeTemps deletes what an earlier run left half-written.
func removeTemps(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// JobID is the id of the coordinator's job.
func (c *Coordinator) JobID() string { return c.rec.ID }

// Addr is the address the gRPC server listens on, once Ready is closed.
func (c *Coordinator) Addr() string { <-c.ready; return c.addr }

// Ready is closed once the coordinator listens.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// streamWorkers is how many goroutines serve calls, reused from one call
// to the next: about the calls in flight at a thousand cycles a second.
const streamWorkers = 128

// Run serves until ctx is cancelled, then stops gracefully.
func (c *Coordinator) Run(ctx context.Context) error {
	defer c.store.Close()
	lis, err := net.Listen("tcp", c.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.cfg.Listen, err)
	}
	c.addr = lis.Addr().String()
	check := creds.NewChecker(c.cfg.Token)
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(check.Unary, func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			return resp, toStatus(err)
		}),
		grpc.ChainStreamInterceptor(check.Stream, func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return toStatus(h(srv, ss))
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxRecvMsgSize(4 << 20),
		// Write buffers are shared: one goes back to a pool at each flush,
		// so a thousand idle nodes do not each hold one. But a connection
		// holds it from its first write to its flush, and gRPC's writer
		// yields before flushing less than 1000 bytes, so under a thousand
		// nodes many small writes hold a buffer each at once: early in a
		// 1000-node run a heap profile showed 22 MB of 64 KiB buffers. At
		// 1000 nodes and 1000 cycles/s, 256 KiB buffers peaked at 160-250
		// MB RSS, 64 KiB at 115-131 MiB, 32 KiB (gRPC's default) at 108-122.
		// Frames stream out as fast with 32 KiB as with 64 (852-958 against
		// 720-1062 MB/s, runs taken in turns); 16 KiB was slower (661-836).
		grpc.WriteBufferSize(32 << 10),
		grpc.SharedWriteBuffer(true),
		grpc.ForceServerCodecV2(newChunkCodec()),
		// Uploads: a fixed window instead of the dynamic one, which starts
		// at 64 KiB and stalls a bulk stream on every round trip.
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(2 << 20),
		// A node needs a handful of calls at once; a client opening many
		// more is not one of ours.
		grpc.MaxConcurrentStreams(64),
		// Every call on a fresh goroutine grew its stack from 8 KiB on the
		// way down gRPC's and our handlers: 8% of the coordinator's CPU
		// under a thousand nodes. Workers keep their grown stacks; a call
		// finding them all busy still gets a goroutine of its own.
		grpc.NumStreamWorkers(streamWorkers),
	}, c.srvOpts...)...)
	farmpb.RegisterNodeServiceServer(srv, newNodeService(c))
	farmpb.RegisterFarmServiceServer(srv, &farmService{c: c})
	if c.cfg.Reflection {
		reflection.Register(srv)
	}
	close(c.ready)
	c.log.Info("coordinator listening", "addr", c.addr, "job", c.rec.ID, "data", c.cfg.Data)

	var wg sync.WaitGroup
	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); c.sweep(bg) }()
	go func() { defer wg.Done(); c.joiner(bg) }()
	c.mu.Lock()
	if c.job.State == JobJoining {
		c.requestJoin()
	}
	c.mu.Unlock()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	select {
	case err = <-serveErr:
	case err = <-c.fatal:
		srv.Stop()
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
	}
	cancel()
	wg.Wait()
	return err
}

func (c *Coordinator) requestJoin() {
	select {
	case c.joinReq <- struct{}{}:
	default:
	}
}

// sweep returns expired leases to A.
func (c *Coordinator) sweep(ctx context.Context) {
	every := min(c.cfg.HeartbeatTimeout, c.cfg.Lease) / 4
	every = max(min(every, 5*time.Second), 50*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_ = c.change(ctx, func(j *Job) ([]*Set, []Event, error) {
			ev := j.Expire(c.cfg.Now(), c.cfg.HeartbeatTimeout, c.cfg.Lease)
			var dirty []*Set
			for _, e := range ev {
				dirty = append(dirty, j.Sets[e.Set])
			}
			return dirty, ev, nil
		})
	}
}
