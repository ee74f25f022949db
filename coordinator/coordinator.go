// Package coordinator is the farm: it takes jobs (a folder of frames and
// encode settings each), keeps them in a queue by priority, splits each
// job's frames into sets whose state machine (coordinator/job) runs under
// leases and fencing tokens, grants sets across jobs to the least loaded
// waiting node, keeps the whole state in SQLite with group commit, streams
// frames to nodes, verifies and stores their parts, and joins each job's
// parts into its final video.
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
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/chunk"
	"github.com/framefarm/framefarm/internal/creds"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/frameseq"
	"github.com/framefarm/framefarm/internal/storage"
	"github.com/framefarm/framefarm/internal/text"
	farmpb "github.com/framefarm/framefarm/proto"
)

// Config is everything the coordinator is started with.
type Config struct {
	// JobSpec, with a FramesDir, is a job to submit at start (unless the farm
	// has it already).
	JobSpec
	Data             string
	Listen           string
	Lease            time.Duration
	HeartbeatTimeout time.Duration
	KeepParts        bool
	// Storage, when set, is a bucket URL (s3://bucket/prefix/?endpoint=...)
	// where nodes put their parts through pre-signed URLs, each valid for
	// PresignExpiry (default an hour), as are the URLs of frames in a
	// bucket.
	Storage       string
	PresignExpiry time.Duration
	// Token, when set, must come with every call (UNAUTHENTICATED otherwise).
	Token string
	TLS   creds.ServerTLS
	// Reflection lists the services to any gRPC client (grpcurl).
	Reflection bool
	// PollWindow is how long AcquireSet waits for work before answering
	// "ask again".
	PollWindow time.Duration
	// MaxConns bounds the connections served at once; 0 (and any value
	// above it) is the descriptor limit less a reserve for the store and
	// parts. MaxConnsPerPeer bounds one address's (0: no bound).
	MaxConns, MaxConnsPerPeer int
	Logger                    *slog.Logger
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
	// The colour of the video (see ffmpeg.Colour), resolved when the job
	// is created; empty in jobs made before colour settings, which keep
	// ffmpeg's untagged conversion (and their fingerprints) on resume.
	Color       string `json:"color,omitempty"`
	Range       string `json:"range,omitempty"`
	EXRTransfer string `json:"exr_transfer,omitempty"`
	Alpha       string `json:"alpha,omitempty"`
}

func (s jobSettings) rate() ffmpeg.Rate { return ffmpeg.Rate{Num: s.FPSNum, Den: s.FPSDen} }

func (s jobSettings) colour() ffmpeg.Colour {
	return ffmpeg.Colour{Space: s.Color, Range: s.Range, EXRTransfer: s.EXRTransfer, Alpha: s.Alpha}
}

// outWidth and outHeight are the dimensions of the encoded video.
func (s jobSettings) outWidth() int  { return s.Width + btoi(s.PadEven && s.Width%2 == 1) }
func (s jobSettings) outHeight() int { return s.Height + btoi(s.PadEven && s.Height%2 == 1) }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Coordinator is the farm: it serves many jobs, in a queue ordered by
// priority then submission, to every node.
type Coordinator struct {
	cfg   Config
	log   *slog.Logger
	store stateStore

	// copies are the copies of finals to --out URLs, and the sweeps of
	// parts from the --storage bucket, under way.
	copies sync.WaitGroup
	// buckets are the open buckets of frames and parts; parts is the
	// --storage bucket (nil without one), partsPrefix its keys' prefix.
	buckets     buckets
	parts       *storage.Bucket
	partsPrefix string

	mu sync.Mutex
	// jobs holds every job the farm knows; queue the same jobs in the order
	// sets are granted from them (see sortQueue).
	jobs  map[string]*jobRun
	queue []*jobRun
	// lastFSeq numbers events across the farm, in commit order.
	lastFSeq uint64
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
	fatal chan error
	nodes map[string]*nodeInfo
	// waiters are the nodes' requests for work waiting for a set (see
	// dispatch).
	waiters []*waiter
	// unswept holds deleted jobs whose parts and final tidyBucket sweeps
	// again at its first tick from the time given: the sweep at the delete
	// failed, or the delete stopped a put of the final that the server may
	// still store after the coordinator gave up on it.
	unswept map[string]time.Time
	// sweepingUploads are the uploads a delete is sweeping from the
	// bucket, each closed when its sweep ends (see uploadSwept).
	sweepingUploads map[string]chan struct{}
	// joinWant holds the jobs waiting for the joiner; joinReq wakes it.
	joinWant map[string]bool
	joinReq  chan struct{}

	ready   chan struct{}
	addr    string
	srvOpts []grpc.ServerOption
	// startID is the job of --frames.
	startID string
	// lock holds the data folder for this process (see lockData).
	lock *os.File
	// metrics are the coordinator's own (see metrics.go).
	metrics *metrics
	// lastOwnFault is shown by status (see noteOwnFault).
	lastOwnFault ownFault
}

// jobRun is one job of the farm: its record, frames and state machine, and
// its folder under the data folder.
type jobRun struct {
	rec jobRecord
	// frames are the job's frames in order; sets index into them.
	frames  []frameRecord
	job     *job.Job
	dir     string
	partDir string
	// legacyFP, set on a job being prepared with default colour settings,
	// is the fingerprint the same job had before colour settings.
	legacyFP string
	// outCopy and stored are how the copies of the final to an --out URL
	// and into the --storage bucket stand (under c.mu), for status; their
	// outcomes are also events.
	outCopy, stored string
	// copying are the copies of the final under way (under c.mu; see
	// startCopies), for a reset or delete to stop.
	copying []runningCopy
}

type nodeInfo struct {
	lastSeen  time.Time
	cpuLoad   float64
	freeCores float64
	setsDone  int
	breaker   *farmpb.BreakerInfo
	// problem is what the node last said keeps it from asking for work,
	// until it asks again; rtt its link's round trip, as its ambassador
	// measured it.
	problem string
	rtt     time.Duration
	slots   int
}

// JobSpec is what a job is submitted with: its frames and settings.
type JobSpec struct {
	FramesDir string
	// Out, when set, receives a copy of the final video; its extension picks
	// the container.
	Out string
	// Container picks the final's container (mp4, mkv, ...) when Out does
	// not: a job submitted from a browser has no path to copy to.
	Container string
	Name      string
	Priority  int
	Sets      int
	Codec     string
	FPS       string
	CRF       int // -1: encoder default
	Preset    string
	PixFmt    string
	// NoFastStart: see jobSettings.NoFastStart.
	NoFastStart bool
	// Pattern picks one naming pattern when the folder holds several.
	Pattern string
	// Gaps is what to do with missing frame numbers: "" or "refuse", "hold"
	// (repeat the previous frame, so timing stays true) or "skip".
	Gaps string
	// Scale ("WxH") scales every frame to one size, for folders of mixed sizes.
	Scale string
	// Audio, when set, is an audio file muxed into the final video.
	Audio string
	// Color ("auto" or ""; bt709, bt601, bt2020), Range ("" for the
	// default; tv, pc), EXRTransfer ("" for srgb; bt709, linear) and Alpha
	// ("" for drop; keep): see ffmpeg.ResolveColour.
	Color, Range, EXRTransfer, Alpha string
}

// New opens the farm's data folder and resumes every job it holds. With
// cfg.FramesDir it also submits that folder as a job, unless the farm has
// it already (same frames and settings), which it then resumes. Every error
// here is the user's to fix, and says how.
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
	if cfg.Lease <= 0 || cfg.HeartbeatTimeout <= 0 {
		return nil, errors.New("--lease and --heartbeat-timeout must be positive durations (e.g. 10m, 30s)")
	}
	tlsOpts, err := creds.ServerOptions(cfg.TLS)
	if err != nil {
		return nil, err
	}
	if cfg.Data, err = filepath.Abs(cfg.Data); err != nil {
		return nil, err
	}
	c := &Coordinator{
		cfg: cfg, log: cfg.Logger, jobs: map[string]*jobRun{},
		changed: make(chan struct{}), nodes: map[string]*nodeInfo{}, open: newBatch(), fatal: make(chan error, 1),
		joinWant: map[string]bool{}, joinReq: make(chan struct{}, 1), ready: make(chan struct{}), srvOpts: tlsOpts,
	}
	c.metrics = newMetrics(c)
	if err := c.openStorage(ctx); err != nil {
		return nil, err
	}
	var prepared *jobRun
	var created []job.Event
	if cfg.FramesDir != "" {
		// Checked before the data folder is touched: a refused job keeps
		// nothing.
		if prepared, created, err = c.prepareJob(ctx, cfg.JobSpec); err != nil {
			return nil, err
		}
	}
	if c.lock, err = lockData(c.cfg.Data); err != nil {
		return nil, err
	}
	if c.store, err = openStore(c.cfg.Data); err != nil {
		c.close()
		return nil, err
	}
	runs, lastFSeq, err := c.store.loadJobs(ctx)
	if err != nil {
		c.close()
		return nil, err
	}
	c.lastFSeq = lastFSeq
	now := cfg.Now()
	for _, jr := range runs {
		c.place(jr)
		if jr.job.State == job.JobFailed && jr.job.AllCompleted() {
			// Only the join failed (a full disk, say): every part is here, so join again.
			jr.job.State, jr.job.Reason = job.JobJoining, ""
		}
		for _, s := range jr.job.Sets {
			// A restarted coordinator gives every lease a fresh window: its
			// node may still be working and will heartbeat again.
			s.LastBeat, s.LastProgress = now, now
		}
		c.addJob(jr)
		if err := os.MkdirAll(jr.partDir, 0o755); err != nil {
			c.close()
			return nil, fmt.Errorf("creating %s: %w", jr.partDir, err)
		}
		// What an earlier run left half-written, or moved in without
		// recording it.
		removeTemps(jr.partDir)
		removeTemps(jr.dir)
		c.removeStaleParts(jr)
		c.log.Info("resuming job", "job", jr.rec.ID, "name", jr.rec.Name, "state", jr.job.State, "sets", len(jr.job.Sets))
	}
	if prepared != nil {
		jr := c.findJob(prepared.rec.FramesDir, prepared.rec.Fingerprint)
		if jr == nil && prepared.legacyFP != "" {
			jr = c.findJob(prepared.rec.FramesDir, prepared.legacyFP)
		}
		if jr != nil {
			// The same frames and settings: resume, with this start's --out.
			jr.rec.OutPath = prepared.rec.OutPath
			c.startID = jr.rec.ID
		} else {
			if err := c.create(ctx, prepared, created); err != nil {
				c.close()
				return nil, err
			}
			c.startID = prepared.rec.ID
		}
	}
	return c, nil
}

// place gives jr its folders under the data folder.
func (c *Coordinator) place(jr *jobRun) {
	jr.dir = filepath.Join(c.cfg.Data, "jobs", jr.rec.ID)
	jr.partDir = filepath.Join(jr.dir, "parts")
}

// prepareJob checks a job's settings and scans its frames, and returns the
// job ready to be created, with its job_created event. It writes nothing.
func (c *Coordinator) prepareJob(ctx context.Context, spec JobSpec) (*jobRun, []job.Event, error) {
	if spec.Sets < 1 {
		return nil, nil, fmt.Errorf("--sets %d: a job needs at least 1 set", spec.Sets)
	}
	settings, err := checkSettings(spec)
	if err != nil {
		return nil, nil, err
	}
	if settings.Audio, err = checkAudio(ctx, c.cfg.FFmpeg, spec.Audio, settings.FinalExt); err != nil {
		return nil, nil, err
	}
	if spec.FramesDir == "" {
		return nil, nil, errors.New("--frames is required: the folder of numbered images to encode")
	}
	dir, err := framesLocation(spec.FramesDir)
	if err != nil {
		return nil, nil, err
	}
	if spec.Gaps != "" && spec.Gaps != "refuse" && spec.Gaps != "hold" && spec.Gaps != "skip" {
		return nil, nil, fmt.Errorf("--gaps %q: use refuse (the default), hold (repeat the previous frame) or skip (close the gaps up)", spec.Gaps)
	}
	if spec.Scale != "" {
		if _, err := fmt.Sscanf(spec.Scale, "%dx%d", &settings.ScaleW, &settings.ScaleH); err != nil ||
			settings.ScaleW < 2 || settings.ScaleH < 2 || settings.ScaleW > 16384 || settings.ScaleH > 16384 ||
			fmt.Sprintf("%dx%d", settings.ScaleW, settings.ScaleH) != spec.Scale {
			return nil, nil, fmt.Errorf("--scale %q: give the size as WIDTHxHEIGHT, e.g. 1920x1080", spec.Scale)
		}
	}
	opts := frameseq.Options{Pattern: spec.Pattern,
		AllowGaps: spec.Gaps == "hold" || spec.Gaps == "skip", AllowMixedDimensions: spec.Scale != ""}
	seq, err := c.scanFrames(ctx, dir, opts)
	if err != nil {
		return nil, nil, err
	}
	if spec.Gaps == "hold" {
		if held := seq.Last() - seq.First() + 1; held > maxHeldFrames {
			return nil, nil, fmt.Errorf("--gaps hold: the numbering runs from %d to %d, %d frames once the gaps are held (at most %d): check the folder for a stray frame number, or use --gaps skip",
				seq.First(), seq.Last(), held, maxHeldFrames)
		}
	}
	frames := sequenceFrames(seq, spec.Gaps == "hold")
	if err := checkUTF8(dir, spec.Out, frames); err != nil {
		return nil, nil, err
	}
	if !utf8.ValidString(spec.Name) || len(spec.Name) > 200 {
		return nil, nil, fmt.Errorf("--name: a job name is at most 200 characters of valid UTF-8")
	}
	if n := len(seq.Gaps()); n > 0 {
		c.log.Warn("frame numbers are missing", "gaps", n, "policy", spec.Gaps, "frames", len(frames))
	}
	settings.FrameExt = seq.Pattern.Ext
	settings.Width, settings.Height = seq.Width, seq.Height
	if settings.ScaleW > 0 {
		settings.Width, settings.Height = settings.ScaleW, settings.ScaleH
	}
	if settings.Width == 0 || settings.Height == 0 {
		err := c.withFrameFile(ctx, dir, frames[0], func(path string) error {
			p, err := c.cfg.FFmpeg.ProbeVideo(ctx, path, false)
			if err != nil {
				return err
			}
			settings.Width, settings.Height = p.Width, p.Height
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("reading frame %d (%s): %w", frames[0].Number, frames[0].Name, err)
		}
	}
	codec, _ := ffmpeg.LookupCodec(settings.Codec)
	col, err := ffmpeg.ResolveColour(codec, settings.PixFmt, settings.FinalExt, settings.Height, spec.Color, spec.Range, spec.EXRTransfer, spec.Alpha)
	if err != nil {
		return nil, nil, err
	}
	settings.Color, settings.Range, settings.EXRTransfer, settings.Alpha = col.Space, col.Range, col.EXRTransfer, col.Alpha
	if isSubsampled(settings.PixFmt) && (settings.Width%2 == 1 || settings.Height%2 == 1) {
		settings.PadEven = true
		c.log.Warn("frames have an odd dimension; padding to even, as 4:2:0 and 4:2:2 need",
			"width", settings.Width, "height", settings.Height, "pix_fmt", settings.PixFmt)
	}
	// An --out URL was checked with the settings; its bucket is reached
	// only after the join, with retries, so an unreachable server never
	// refuses a job.
	out, localOut := spec.Out, ""
	if out != "" && !storage.IsURL(out) {
		if out, err = filepath.Abs(spec.Out); err != nil {
			return nil, nil, err
		}
		localOut = out
	}
	if err := checkOutputs(localOut, c.cfg.Data, settings, frames); err != nil {
		return nil, nil, err
	}
	fp := fingerprint(settings, frames, spec.Sets)
	var legacyFP string
	if defaultColour(spec) {
		// A job made before colour settings from the same command line
		// resumes, with its own untagged colour.
		legacy := settings
		legacy.Color, legacy.Range, legacy.EXRTransfer, legacy.Alpha = "", "", "", ""
		legacyFP = fingerprint(legacy, frames, spec.Sets)
	}
	if ffmpeg.IsEXR(settings.FrameExt) {
		c.log.Info(exrNote(settings), "exr_transfer", settings.EXRTransfer, "color", settings.Color, "range", settings.Range)
	}
	settings.FilterThreads = ffmpeg.AutoFilterThreads(runtime.NumCPU())
	now := c.cfg.Now()
	name := spec.Name
	if name == "" {
		name = jobName(dir)
	}
	jr := &jobRun{
		rec:      jobRecord{ID: newID(), Name: name, Created: now, FramesDir: dir, OutPath: out, Settings: settings, Fingerprint: fp},
		frames:   frames,
		legacyFP: legacyFP,
	}
	jr.job = &job.Job{ID: jr.rec.ID, State: job.JobQueued, Priority: spec.Priority, Sets: job.Partition(len(frames), spec.Sets), NodeFailures: map[string]int{}}
	c.place(jr)
	if err := c.checkAssignments(jr); err != nil {
		return nil, nil, err
	}
	ev := []job.Event{{At: now, Kind: job.EvJobCreated, Set: -1,
		Detail: fmt.Sprintf("%d frames (%s, %d to %d) in %d sets, %s at %s fps, %dx%d, colour %s%s", len(frames), seq.Pattern,
			frames[0].Number, frames[len(frames)-1].Number, len(jr.job.Sets), settings.Codec, settings.rate(),
			settings.outWidth(), settings.outHeight(), settings.colour(), notes(settings, seq, spec.Gaps))}}
	return jr, ev, nil
}

func checkSettings(cfg JobSpec) (jobSettings, error) {
	codec, err := ffmpeg.LookupCodec(cfg.Codec)
	if err != nil {
		return jobSettings{}, fmt.Errorf("--codec: %w", err)
	}
	rate, err := ffmpeg.ParseRate(cfg.FPS)
	if err != nil {
		return jobSettings{}, err
	}
	finalExt := codec.Finals[0]
	if cfg.Container != "" {
		finalExt = strings.TrimPrefix(strings.ToLower(cfg.Container), ".")
	}
	if storage.IsURL(cfg.Out) {
		loc, err := storage.Parse(cfg.Out)
		if err != nil {
			return jobSettings{}, fmt.Errorf("--out: %w", err)
		}
		finalExt = strings.TrimPrefix(strings.ToLower(path.Ext(loc.Key)), ".")
		if finalExt == "" {
			return jobSettings{}, fmt.Errorf("--out %s has no extension: end its key in .%s to pick the container", loc, strings.Join(codec.Finals, ", ."))
		}
	} else if cfg.Out != "" {
		finalExt = strings.TrimPrefix(strings.ToLower(filepath.Ext(cfg.Out)), ".")
		if finalExt == "" {
			return jobSettings{}, fmt.Errorf("--out %s has no extension: end it in .%s to pick the container", cfg.Out, strings.Join(codec.Finals, ", ."))
		}
	}
	if err := codec.CheckSettings(finalExt, cfg.CRF, cfg.Preset); err != nil {
		return jobSettings{}, err
	}
	pix := cfg.PixFmt
	switch {
	case pix == "" && cfg.Alpha == "keep" && codec.Name == "prores_ks":
		pix = "yuva444p10le"
	case pix == "":
		pix = codec.DefaultPixFmt
	}
	return jobSettings{Codec: codec.Name, FPSNum: rate.Num, FPSDen: rate.Den, CRF: cfg.CRF, Preset: cfg.Preset,
		PixFmt: pix, PartExt: codec.PartExt, FinalExt: finalExt, NoFastStart: cfg.NoFastStart}, nil
}

// defaultColour says whether spec leaves every colour setting at its default.
func defaultColour(spec JobSpec) bool {
	return (spec.Color == "" || spec.Color == "auto") && spec.Range == "" && (spec.EXRTransfer == "" || spec.EXRTransfer == "srgb") &&
		(spec.Alpha == "" || spec.Alpha == "drop")
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
		if f.ETag != "" {
			// Only for frames in a bucket: folders' fingerprints stay as
			// they were, and their jobs resume.
			fmt.Fprintf(h, "etag=%s\n", f.ETag)
		}
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

// JobID is the id of the job the coordinator was started with (--frames),
// "" without one.
func (c *Coordinator) JobID() string { return c.startID }

// Addr is the address the gRPC server listens on, once Ready is closed.
func (c *Coordinator) Addr() string { <-c.ready; return c.addr }

// Ready is closed once the coordinator listens.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// streamWorkers is how many goroutines serve calls, reused from one call
// to the next: about the calls in flight at a thousand cycles a second.
const streamWorkers = 128

// Run serves until ctx is cancelled, then stops gracefully.
func (c *Coordinator) Run(ctx context.Context) error {
	defer c.close()
	lis, err := net.Listen("tcp", c.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.cfg.Listen, err)
	}
	c.addr = lis.Addr().String()
	fdLimit, room := descriptorLimit()
	lim := connLimits{total: room, perPeer: c.cfg.MaxConnsPerPeer}
	if c.cfg.MaxConns > 0 && (room == 0 || c.cfg.MaxConns < room) {
		lim.total = c.cfg.MaxConns
	}
	lis = newLimitListener(lis, lim, c.log, c.cfg.Now)
	check := creds.NewChecker(c.cfg.Token)
	srv := grpc.NewServer(append([]grpc.ServerOption{
		// The token is checked before a call's request is read (Tap), and
		// again by the interceptors, which also cover in-process calls.
		grpc.InTapHandle(check.Tap),
		// The metrics see every call with the status it ends with.
		grpc.ChainUnaryInterceptor(c.metrics.grpc.UnaryServerInterceptor(), check.Unary, sizeUnary, func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			return resp, c.answer(err)
		}),
		grpc.ChainStreamInterceptor(c.metrics.grpc.StreamServerInterceptor(), check.Stream, sizeStream, func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return c.answer(h(srv, ss))
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.MaxRecvMsgSize(maxRecvMsg),
		grpc.ConnectionTimeout(handshakeTimeout),
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
		grpc.ForceServerCodecV2(chunk.NewCodec()),
		// Uploads: a fixed window instead of the dynamic one, which starts
		// at 64 KiB and stalls a bulk stream on every round trip.
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(2 << 20),
		grpc.MaxConcurrentStreams(maxStreams),
		// Every call on a fresh goroutine grew its stack from 8 KiB on the
		// way down gRPC's and our handlers: 8% of the coordinator's CPU
		// under a thousand nodes. Workers keep their grown stacks; a call
		// finding them all busy still gets a goroutine of its own.
		grpc.NumStreamWorkers(streamWorkers),
	}, c.srvOpts...)...)
	farmpb.RegisterNodeServiceServer(srv, newNodeService(c))
	farmpb.RegisterFarmServiceServer(srv, &farmService{c: c})
	// The standard health service, for probes that carry no token (see
	// creds.Checker): SERVING, for the server ("") and each of its
	// services, until the coordinator stops.
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	if c.cfg.Reflection {
		reflection.Register(srv)
	}
	for name := range srv.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	c.metrics.grpc.InitializeMetrics(srv)
	close(c.ready)
	c.log.Info("coordinator listening", "addr", c.addr, "jobs", c.jobCount(), "data", c.cfg.Data,
		"descriptors", fdLimit, "max_conns", lim.total, "max_conns_per_peer", lim.perPeer)

	var wg sync.WaitGroup
	bg, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(3)
	go func() { defer wg.Done(); c.sweep(bg) }()
	go func() { defer wg.Done(); c.joiner(bg) }()
	go func() { defer wg.Done(); c.tidyBucket(bg) }()
	c.mu.Lock()
	for _, jr := range c.queue {
		if jr.job.State == job.JobJoining {
			c.requestJoin(jr.rec.ID)
		}
	}
	c.mu.Unlock()
	c.resumeCopies(bg)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	select {
	case err = <-serveErr:
	case err = <-c.fatal:
		hs.Shutdown()
		srv.Stop()
	case <-ctx.Done():
		hs.Shutdown()
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
	c.copies.Wait()
	return err
}

// requestJoin queues a job for the joiner. Call it under c.mu.
func (c *Coordinator) requestJoin(id string) {
	c.joinWant[id] = true
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
		_ = c.change(ctx, c.expireLeases)
	}
}

// expireLeases is the sweep's change: see Job.Expire.
func (c *Coordinator) expireLeases(x changes) error {
	now := c.cfg.Now()
	for _, jr := range c.queue {
		j := jr.job
		if j.State.Finished() {
			continue
		}
		ev := j.Expire(now, c.cfg.HeartbeatTimeout, c.cfg.Lease)
		c.metrics.leaseExpired(j, ev, now, c.cfg.HeartbeatTimeout)
		var dirty []*job.Set
		for _, e := range ev {
			dirty = append(dirty, j.Sets[e.Set])
		}
		x.add(jr, dirty, ev)
	}
	return nil
}

// maxAssignment bounds a set's assignment: nodes and ambassadors take
// messages of up to 4 MiB, and the rest of the message (settings, folder)
// needs a little of that.
const maxAssignment = 4<<20 - 64<<10

// checkAssignments refuses a job with a set whose assignment (the list of
// its frames) would not fit in one message: no node could ever take it,
// and the set would be granted and expire forever.
func (c *Coordinator) checkAssignments(jr *jobRun) error {
	var total int
	largest, at := 0, 0
	for _, s := range jr.job.Sets {
		n := proto.Size(c.assignment(jr, s))
		total += n
		if n > largest {
			largest, at = n, s.Index
		}
	}
	if largest <= maxAssignment {
		return nil
	}
	need := (total+maxAssignment-1)/maxAssignment + 1
	return fmt.Errorf("--sets %d: set %d would list its %d frames in a message of %s, more than the %s a node takes: split the job into at least %d sets (--sets %d)",
		len(jr.job.Sets), at, jr.job.Sets[at].Count, text.Size(int64(largest)), text.Size(maxAssignment), need, need)
}
