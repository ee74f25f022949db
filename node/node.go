// Package node is the render node's worker loop: it asks its ambassador for
// a set, receives the set's frames, encodes them with ffmpeg, checks its own
// output, uploads the part and heartbeats with its progress all along.
package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"github.com/framefarm/framefarm/internal/chunk"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/framebuf"
	"github.com/framefarm/framefarm/internal/link"
	"github.com/framefarm/framefarm/internal/mp4"
	"github.com/framefarm/framefarm/internal/reason"
	"github.com/framefarm/framefarm/internal/text"
	farmpb "github.com/framefarm/framefarm/proto"
)

// Config is how a node is started.
type Config struct {
	// Ambassador is the address of this machine's ambassador: the node's
	// only way out.
	Ambassador string
	Name       string
	// Work is where frames and parts are kept while a set renders; a temp
	// folder (removed on exit) when empty.
	Work string
	// Once makes Run return when the coordinator has no more work for it.
	Once bool
	// Slots is how many sets the node works on at once (default 2). With
	// two, one set's frames stream in and its part uploads while the other
	// encodes, and two encoders fill the cores where one threads poorly;
	// see DefaultSlots.
	Slots int
	// Threads is each encode's thread count; 0 shares the cores among the
	// slots (NumCPU/Slots, at least 1). See encoderThreads.
	Threads int
	// FramesFrom is where the node takes a set's frames from: FramesAuto
	// (the default when empty) or FramesStream.
	FramesFrom string
	Logger     *slog.Logger
	FFmpeg     ffmpeg.Runner
	// MinBackoff and MaxBackoff bound the wait after a failed call.
	MinBackoff, MaxBackoff time.Duration
}

// Node renders sets until stopped.
type Node struct {
	cfg     Config
	log     *slog.Logger
	conn    *grpc.ClientConn
	client  farmpb.NodeServiceClient
	load    *loadMeter
	metrics *metrics
	// bucket reads frames from and puts parts into buckets through
	// pre-signed URLs.
	bucket *http.Client
	// ownFaults counts the sets in a row that failed for this machine's
	// own reason (see ownFault).
	ownFaults atomic.Int32
}

// New prepares a node; it does not connect until Run.
func New(cfg Config) (*Node, error) {
	if cfg.Ambassador == "" {
		return nil, errors.New("the node needs its ambassador's address (--ambassador)")
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Slots <= 0 {
		cfg.Slots = DefaultSlots
	}
	if cfg.Threads <= 0 {
		cfg.Threads = encoderThreads(runtime.NumCPU(), cfg.Slots)
	}
	switch cfg.FramesFrom {
	case "":
		cfg.FramesFrom = FramesAuto
	case FramesAuto, FramesStream:
	default:
		return nil, fmt.Errorf("--frames-from %q: use auto (read the coordinator's folder when this machine sees it, or the bucket, else stream) or stream", cfg.FramesFrom)
	}
	conn, err := grpc.NewClient(cfg.Ambassador, append(TransportOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The ambassador is on this machine and may start after the node:
		// reconnect within a quarter of a second of it listening (gRPC's
		// default backoff starts at 1s and grows to 2 minutes). A refused
		// connection on loopback costs nothing.
		grpc.WithConnectParams(link.Params(200*time.Millisecond, 2*time.Second)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))...)
	if err != nil {
		return nil, fmt.Errorf("ambassador address %q: %w", cfg.Ambassador, err)
	}
	return &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), conn: conn, bucket: newBucketClient(),
		client: farmpb.NewNodeServiceClient(conn), load: newLoadMeter(), metrics: newMetrics()}, nil
}

// TransportOptions tune the node's connection to its ambassador for the
// frame streams (exported so that the benchmark's stand-in node receives
// the way a node does). gRPC's defaults suit small calls: a dynamic window
// that starts at 64 KiB stalls a bulk stream on every round trip, and a
// 32 KiB read buffer costs a read syscall every two HTTP/2 frames. The
// window bounds what may arrive before the node reads it, per set and for
// the connection, whatever the frame size.
func TransportOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(4 << 20),
		grpc.WithInitialConnWindowSize(8 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		experimental.WithBufferPool(&framebuf.Pool{}),
	}
}

// encoderThreads shares cores among slots encoders. Encoders that together
// have about one thread per core do the same work in less CPU time than
// each with a thread per core, which only contend: measured here (2 cores,
// 8 parts of 75 720p frames, x264 veryfast, two at a time), 20.2 CPU-s
// with ffmpeg's default threads, 19.1 with one thread each, against 21.5
// for one ffmpeg over all 600 frames. Av1an advises the same (workers
// times threads about the cores).
func encoderThreads(cores, slots int) int { return max(1, cores/max(slots, 1)) }

// DefaultSlots is the node's default number of sets at once. One set at a
// time leaves the cores idle while frames arrive, while ffmpeg starts and
// drains its pipeline at the end of the set, and while the part uploads;
// a second set fills those gaps (the same reason chunked encoders such as
// Av1an run several workers per machine).
const DefaultSlots = 2

// Run asks for sets and renders them, Slots at a time, until ctx is
// cancelled (the sets in progress are given back at once) or, with Once,
// until there is no more work.
func (n *Node) Run(ctx context.Context) error {
	defer n.conn.Close()
	work := n.cfg.Work
	if work == "" {
		dir, err := os.MkdirTemp("", "framefarm-node-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		work = dir
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("work folder %s: %w", work, err)
	}
	var wg sync.WaitGroup
	for slot := range n.cfg.Slots {
		wg.Go(func() { n.work(ctx, work, n.log.With("slot", slot)) })
	}
	wg.Wait()
	return nil
}

// work is one slot's loop: ask for a set, render it, repeat.
func (n *Node) work(ctx context.Context, work string, log *slog.Logger) {
	bo := backoff{min: n.cfg.MinBackoff, max: n.cfg.MaxBackoff}
	// failed backs off after sets that failed here, so that a node whose
	// ffmpeg cannot work does not spin through the job's sets.
	failed := backoff{min: n.cfg.MinBackoff, max: n.cfg.MaxBackoff}
	absent := 0  // waits in a row for the ambassador
	refused := 0 // failed calls in a row
	for ctx.Err() == nil {
		// Waiting for the connection, rather than backing off after calls
		// refused, asks at once when the ambassador comes up: a node
		// started a few seconds before it would otherwise sleep seconds.
		if err := n.awaitAmbassador(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			if absent++; absent == 1 || absent%15 == 0 {
				log.Warn("waiting for the ambassador", "err", err, "waits", absent)
			}
			continue
		}
		absent = 0
		if n.problem(work) != "" {
			n.waitHealthy(ctx, work, nil, log)
			continue
		}
		load, free := n.load.sample()
		resp, err := n.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: n.cfg.Name, Once: n.cfg.Once, CpuLoad: load, FreeCores: free, Slots: uint32(n.cfg.Slots)})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			d := waitAfter(err, &bo)
			// The ambassador paces the calls while the coordinator is away
			// (a call waits for it up to 2s): say so once, then now and
			// then, not on every call of a long outage.
			if refused++; refused == 1 || refused%20 == 0 {
				log.Warn("asking for work failed; backing off", "err", err, "wait", d.Round(time.Millisecond), "failed", refused)
			} else {
				log.Debug("asking for work failed; backing off", "err", err, "wait", d.Round(time.Millisecond), "failed", refused)
			}
			sleep(ctx, d)
			continue
		}
		if refused > 0 {
			log.Info("asking for work goes through again", "failed", refused)
			refused = 0
		}
		bo.reset()
		switch r := resp.Result.(type) {
		case *farmpb.AcquireSetResponse_Assignment:
			if n.render(ctx, work, r.Assignment, log) {
				sleep(ctx, failed.next())
			} else {
				failed.reset()
			}
		case *farmpb.AcquireSetResponse_RetryAfterMs:
			sleep(ctx, jitter(time.Duration(r.RetryAfterMs)*time.Millisecond))
		case *farmpb.AcquireSetResponse_Done:
			if n.cfg.Once {
				log.Info("no more work; exiting", "reason", r.Done)
				return
			}
			log.Info("no more work for now", "reason", r.Done)
			sleep(ctx, jitter(n.cfg.MaxBackoff))
		}
	}
}

var errLeaseLost = errors.New("lease lost")

// render does one set. Whatever happens, the set ends uploaded, given back,
// or taken away by the coordinator: never silently held. It reports whether
// the set failed here (ffmpeg, the disk, a refused part).
func (n *Node) render(ctx context.Context, work string, a *farmpb.Assignment, log *slog.Logger) (failed bool) {
	log = log.With("job", a.JobId, "set", a.SetIndex, "token", a.Token)
	log.Info("set granted", "frames", len(a.Frames))
	setCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var done atomic.Int64
	hbStop := make(chan struct{})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		n.heartbeat(setCtx, hbStop, a, &done, cancel, log)
	}()
	start := time.Now()
	frames, err := n.renderSet(setCtx, work, a, &done, log)
	close(hbStop)
	<-hbDone
	switch {
	case err == nil:
		n.ownFaults.Store(0)
		log.Info("part uploaded", "took", time.Since(start).Round(time.Millisecond), "frames", frames)
		n.metrics.sets.WithLabelValues(setUploaded).Inc()
		n.metrics.frames.Add(float64(len(a.Frames)))
	case errors.Is(context.Cause(setCtx), errLeaseLost):
		log.Warn("lease lost; dropping the set", "err", context.Cause(setCtx))
		n.metrics.sets.WithLabelValues(setLost).Inc()
	case reason.IsLeaseLost(err):
		log.Warn("lease lost; dropping the set", "err", err)
		n.metrics.sets.WithLabelValues(setLost).Inc()
	case reason.IsPartRefused(err):
		// The coordinator refused the part, gave the set back and recorded why.
		log.Error("part refused by the coordinator", "err", err)
		n.metrics.sets.WithLabelValues(setRefused).Inc()
		return true
	case ctx.Err() != nil:
		log.Info("stopping; giving the set back")
		n.release(a, "", log)
		n.metrics.sets.WithLabelValues(setGivenBack).Inc()
	case isTransient(err):
		// Only a cancelled retry ends here: the link failed, not the set.
		log.Warn("the coordinator cannot be reached; giving the set back", "err", err)
		n.release(a, "", log)
		n.metrics.sets.WithLabelValues(setGivenBack).Inc()
	case n.problem(work) != "" || (ownFault(err) && n.ownFaults.Add(1) <= maxOwnFaults):
		// This machine's fault, not the set's: given back without a
		// failure, and no more work asked for until it is fixed.
		log.Error("set failed for this machine's own reason; giving it back, not as a failure of the set", "err", err)
		n.release(a, "", log)
		n.metrics.sets.WithLabelValues(setGivenBack).Inc()
		n.waitHealthy(ctx, work, err, log)
	default:
		log.Error("set failed", "err", err)
		n.release(a, errorText(err), log)
		n.metrics.sets.WithLabelValues(setFailed).Inc()
		return true
	}
	return false
}

func (n *Node) release(a *farmpb.Assignment, reason string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := n.client.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: n.cfg.Name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token, Error: reason})
	if err != nil {
		log.Warn("giving the set back failed; its lease will expire", "err", err)
	}
}

func (n *Node) heartbeat(ctx context.Context, stop <-chan struct{}, a *farmpb.Assignment, done *atomic.Int64, cancel context.CancelCauseFunc, log *slog.Logger) {
	every := time.Duration(a.HeartbeatIntervalMs) * time.Millisecond
	if every <= 0 {
		every = 5 * time.Second
	}
	// A heartbeat that gets no answer within two intervals is given up:
	// waiting longer would only delay the next one. (The ambassador does
	// not count it against its breaker: a coordinator slow to answer is
	// not a dead one.)
	timeout := min(max(2*every, time.Second), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	failures := 0
	// The first beat goes at once: the coordinator learns the node's load
	// and its ambassador's breaker state even for short sets.
	for first := true; ; first = false {
		if !first {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		load, free := n.load.sample()
		hctx, hcancel := context.WithTimeout(ctx, timeout)
		_, err := n.client.Heartbeat(hctx, &farmpb.HeartbeatRequest{Node: n.cfg.Name, JobId: a.JobId, SetIndex: a.SetIndex,
			Token: a.Token, FramesDone: uint32(done.Load()), CpuLoad: load, FreeCores: free})
		hcancel()
		switch {
		case err == nil:
			if failures > 0 {
				log.Info("heartbeats go through again", "failed", failures)
				failures = 0
			}
		case status.Code(err) == codes.Canceled:
		case reason.IsLeaseLost(err):
			cancel(fmt.Errorf("%w: %v", errLeaseLost, err))
			return
		default:
			// The lease outlives a few lost beats; say so once, then
			// now and then, not on every beat of a long outage.
			if failures++; failures == 1 || failures%20 == 0 {
				log.Warn("heartbeat failed", "err", err, "failed", failures)
			}
		}
	}
}

// renderSet renders the set and uploads its part. It says where the frames
// came from: "bucket" (read through pre-signed URLs, see fetchFrames),
// "shared" (read from the coordinator's folder, see linkShared)
// or "streamed".
func (n *Node) renderSet(ctx context.Context, work string, a *farmpb.Assignment, done *atomic.Int64, log *slog.Logger) (string, error) {
	s := a.Settings
	if s == nil || len(a.Frames) == 0 {
		return "", errors.New("assignment without settings or frames")
	}
	dir := filepath.Join(work, fmt.Sprintf("%s-set%05d-t%d", a.JobId, a.SetIndex, a.Token))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	from := "streamed"
	// The part goes into the bucket when the coordinator gave a URL for it,
	// unless this node streams by choice or just failed to read the bucket.
	tryPut := n.cfg.FramesFrom == FramesAuto && a.PartUrl != ""
	if n.cfg.FramesFrom == FramesAuto && len(a.FrameUrls) > 0 {
		if err := n.fetchFrames(ctx, dir, a, log); err != nil {
			log.Warn("reading the frames from the bucket failed; streaming them through the coordinator", "err", err)
			tryPut = false
		} else {
			from = "bucket"
		}
	} else if n.cfg.FramesFrom == FramesAuto {
		if err := linkShared(dir, a); err != nil {
			log.Debug("streaming the frames: the coordinator's folder is not shared here", "why", err)
		} else {
			from = "shared"
		}
	}
	stream := func() error {
		from = "streamed"
		return n.retry(ctx, log, "receiving frames", func() error { return n.receiveFrames(ctx, dir, a) })
	}
	if from == "streamed" {
		if err := stream(); err != nil {
			return from, err
		}
	}
	part, encodeMS, err := n.encode(ctx, dir, a, done)
	if from == "shared" {
		if changed := sharedUnchanged(a); changed != nil {
			// A frame changed while ffmpeg read it (which may also be why
			// the encode failed). Streamed, the set goes through the
			// coordinator's own check of every frame, which stops the job:
			// two versions of the frames must not end up in one video.
			log.Warn("a frame changed during the encode; streaming the set instead", "err", changed)
			removeSequence(dir, a, len(a.Frames))
			if err := stream(); err != nil {
				return from, err
			}
			part, encodeMS, err = n.encode(ctx, dir, a, done)
		}
	}
	if err != nil {
		return from, err
	}
	inBucket := false // the part is there: announce it, do not put it again
	return from, n.retry(ctx, log, "uploading the part", func() error {
		if tryPut {
			tryPut = false
			if err := n.putPart(ctx, part, a.PartUrl, a.PartHeaders, log); err != nil {
				// Once the bucket failed this set, the coordinator takes
				// the part: an expired URL or a bucket out of reach stays so.
				log.Warn("putting the part into the bucket failed; uploading it through the coordinator", "err", err)
			} else {
				inBucket = true
			}
		}
		if inBucket {
			err := n.upload(ctx, part, a, encodeMS, true)
			switch reason.Of(err) {
			case reason.PartNotInBucket, reason.CoordinatorFault:
				// The part is not there as put (half-written, changed, or
				// the coordinator restarted with another --storage), or the
				// coordinator could not read it: this node holds the part,
				// so it goes through the coordinator. A link failure, by
				// contrast, is retried as an announcement: the part is put.
				inBucket = false
				log.Warn("the coordinator could not take the part from the bucket; uploading it through the coordinator", "err", err)
				if reason.Of(err) == reason.CoordinatorFault {
					return err // after the retry's wait
				}
			default:
				return err // the coordinator's answer: retried or not as any upload's
			}
		}
		return n.upload(ctx, part, a, encodeMS, false)
	})
}

// encode runs ffmpeg on the set's frame sequence in dir and checks the part
// it wrote; it returns the part's path and how long ffmpeg took.
func (n *Node) encode(ctx context.Context, dir string, a *farmpb.Assignment, done *atomic.Int64) (string, uint64, error) {
	s := a.Settings
	part := filepath.Join(dir, "part."+s.PartExt)
	settings := ffmpeg.Settings{Codec: s.Codec, Rate: ffmpeg.Rate{Num: s.FpsNum, Den: s.FpsDen}, CRF: int(s.Crf),
		Preset: s.Preset, PixFmt: s.PixFmt, PadEven: s.PadEven, ScaleW: int(s.ScaleWidth), ScaleH: int(s.ScaleHeight),
		Threads: n.cfg.Threads, FilterThreads: int(s.FilterThreads), FrameExt: s.FrameExt,
		Colour: ffmpeg.Colour{Space: s.Color, Range: s.ColorRange, EXRTransfer: s.ExrTransfer, Alpha: s.Alpha}}
	pattern := ffmpeg.SequencePattern(dir, s.FrameExt)
	var err error
	if settings.ScaleW > 0 {
		if pattern, err = n.normalize(ctx, dir, a, settings); err != nil {
			return "", 0, err
		}
	}
	args, err := ffmpeg.EncodeArgs(pattern, settings, part)
	if err != nil {
		return "", 0, err
	}
	// Stop at the first frame that does not decode, with ffmpeg's own
	// message: without -xerror ffmpeg drops the frame and exits 0, and all
	// the node could say is that a frame is missing.
	args = append([]string{"-xerror"}, args...)
	start := time.Now()
	if err := n.cfg.FFmpeg.Run(ctx, args, func(f int64) { done.Store(f) }); err != nil {
		if ctx.Err() == nil {
			n.metrics.ffmpegFailures.Inc()
		}
		return "", 0, fmt.Errorf("encoding frames %d-%d: %s", a.Frames[0].Number, a.Frames[len(a.Frames)-1].Number, originalNames(err.Error(), dir, a))
	}
	took := time.Since(start)
	encodeMS := uint64(took.Milliseconds())
	// Read from the part's index in Go: an ffprobe here would cost a
	// process start (~150 ms of CPU) per set.
	p, err := mp4.ReadFile(part)
	if err != nil {
		return "", 0, fmt.Errorf("checking the encoded part: %w", err)
	}
	if p.Samples != int64(len(a.Frames)) {
		n.metrics.ffmpegFailures.Inc()
		return "", 0, fmt.Errorf("ffmpeg wrote %d frames for a set of %d", p.Samples, len(a.Frames))
	}
	n.metrics.encodeSeconds.Observe(took.Seconds())
	done.Store(int64(len(a.Frames)))
	return part, encodeMS, nil
}

// retry repeats fn while the failure is the link's, not the request's, with
// exponential jittered backoff, until ctx ends. There is no point in giving
// up sooner: the work is done and only the coordinator can say whether the
// lease still holds. If the coordinator is back under the same lease (a
// restart, a link that came back) the retry succeeds; if the lease moved on
// meanwhile, the coordinator refuses it (FAILED_PRECONDITION) and the node
// drops the set; if the node stops, the set is given back.
func (n *Node) retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	bo := backoff{min: n.cfg.MinBackoff, max: n.cfg.MaxBackoff}
	for attempt := 1; ; attempt++ {
		// An ambassador that restarts is asked again as soon as it is back;
		// one that stays away fails the call below, as before.
		_ = n.awaitAmbassador(ctx)
		err := fn()
		if !isTransient(err) || ctx.Err() != nil {
			return err
		}
		d := waitAfter(err, &bo)
		log.Warn(what+" failed; retrying", "err", err, "attempt", attempt, "wait", d.Round(time.Millisecond))
		sleep(ctx, d)
	}
}

// isTransient reports whether err is a failure of the link to the
// coordinator rather than an answer about the request.
func isTransient(err error) bool { return reason.IsLinkFailure(err) }

// waitAfter is how long to wait after a failed call: when the ambassador
// says when to retry, that (plus up to a fifth, so that slots and nodes do
// not ask together), else the next exponential, jittered backoff step. The
// ambassador knows best: its breaker is open until then (calls before would
// fail fast), or it has just waited for the coordinator and asks for the
// call again at once. The node's own backoff, grown over a cold start,
// would keep it idle seconds after the coordinator is back. The hint is
// floored at half the minimum backoff, so that no answer makes a busy loop.
func waitAfter(err error, bo *backoff) time.Duration {
	hint, ok := retryHint(err)
	if !ok {
		return bo.next()
	}
	hint = max(hint, bo.min/2)
	return hint + jitter(min(hint/5, time.Second))
}

// retryHint is the RetryInfo delay an error carries, if any.
func retryHint(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// ambassadorWait bounds one wait for the connection to the ambassador.
const ambassadorWait = 2 * time.Second

// awaitAmbassador waits up to ambassadorWait for the connection to the
// ambassador to be up. It returns ctx's error if ctx ends first, and an
// error that says what to check if the ambassador is not there.
func (n *Node) awaitAmbassador(ctx context.Context) error {
	if link.AwaitReady(ctx, n.conn, ambassadorWait) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("no connection to the ambassador at %s after %s (%s): start `framefarm ambassador --listen %s` on this machine, or give the node its address with --ambassador",
		n.cfg.Ambassador, ambassadorWait, n.conn.GetState(), n.cfg.Ambassador)
}

// receiveFrames writes the set's frames as a contiguous sequence
// 000000.ext, 000001.ext, ...: that sidesteps image2's start-number and gap
// traps whatever the original numbering.
func (n *Node) receiveFrames(ctx context.Context, dir string, a *farmpb.Assignment) error {
	ext := a.Settings.FrameExt
	req := &farmpb.StreamFramesRequest{Node: n.cfg.Name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token}
	return ReceiveFrames(ctx, n.client, req, a.Frames, func(pos int) (io.WriteCloser, error) {
		return os.Create(filepath.Join(dir, ffmpeg.SequenceName(pos, ext)))
	})
}

// upload sends the part to the coordinator; with inBucket only its header
// and checksum, the part being in the --storage bucket already.
func (n *Node) upload(ctx context.Context, path string, a *farmpb.Assignment, encodeMS uint64, inBucket bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	stream, err := n.client.UploadPart(ctx)
	if err != nil {
		return err
	}
	send := func(m *farmpb.UploadPartRequest) error {
		if err := stream.Send(m); err != nil {
			// The real reason comes with CloseAndRecv.
			if _, rerr := stream.CloseAndRecv(); rerr != nil {
				return rerr
			}
			return err
		}
		return nil
	}
	if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Header{Header: &farmpb.PartHeader{
		Node: n.cfg.Name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token,
		Size: st.Size(), Frames: uint32(len(a.Frames)), EncodeMs: encodeMS, InBucket: inBucket}}}); err != nil {
		return err
	}
	h := sha256.New()
	if inBucket {
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
	}
	buf := make([]byte, chunk.Size)
	for !inBucket {
		k, rerr := io.ReadFull(f, buf)
		if k > 0 {
			h.Write(buf[:k])
			if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Chunk{Chunk: buf[:k]}}); err != nil {
				return err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Trailer{Trailer: &farmpb.PartTrailer{Sha256: h.Sum(nil)}}}); err != nil {
		return err
	}
	if _, err = stream.CloseAndRecv(); err != nil {
		return err
	}
	if !inBucket {
		n.metrics.uploadBytes.Add(float64(st.Size()))
	}
	return nil
}

// backoff is exponential with full jitter.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// errorText keeps ffmpeg's own words but bounds their size.
func errorText(err error) string {
	// The text goes in a protobuf string, which must be UTF-8: ffmpeg may
	// print other bytes, and the cut must fall between runes.
	return strings.TrimSpace(text.Truncate(err.Error(), 2000))
}

// originalNames rewrites the work folder's frame names in an ffmpeg message
// (".../000012.png") as the user's ("shot_0112.png (frame 112)"), so a bad
// frame is named as the user knows it.
func originalNames(msg, dir string, a *farmpb.Assignment) string {
	ext := regexp.QuoteMeta("." + a.Settings.FrameExt)
	re := regexp.MustCompile(`(?:` + regexp.QuoteMeta(dir+string(filepath.Separator)) + `)?(\d{6})` + ext)
	return re.ReplaceAllStringFunc(msg, func(m string) string {
		i, err := strconv.Atoi(re.FindStringSubmatch(m)[1])
		if err != nil || i >= len(a.Frames) {
			return m
		}
		return fmt.Sprintf("%s (frame %d)", a.Frames[i].Name, a.Frames[i].Number)
	})
}

// normalize scales every frame of the set on its own (see
// ffmpeg.NormalizeArgs), a few at a time, and returns the new sequence.
func (n *Node) normalize(ctx context.Context, dir string, a *farmpb.Assignment, s ffmpeg.Settings) (string, error) {
	out := filepath.Join(dir, "scaled")
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errs := make(chan error, len(a.Frames))
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := range next {
				in := filepath.Join(dir, ffmpeg.SequenceName(i, a.Settings.FrameExt))
				args := ffmpeg.NormalizeArgs(in, s, filepath.Join(out, ffmpeg.SequenceName(i, "png")))
				if err := n.cfg.FFmpeg.Run(ctx, args, nil); err != nil {
					errs <- fmt.Errorf("scaling %s (frame %d) to %dx%d: %s", a.Frames[i].Name, a.Frames[i].Number, s.ScaleW, s.ScaleH, originalNames(err.Error(), dir, a))
					cancel()
				}
			}
		})
	}
	for i := range a.Frames {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return "", err
	}
	return ffmpeg.SequencePattern(out, "png"), ctx.Err()
}
