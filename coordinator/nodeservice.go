package coordinator

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/chunk"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/framebuf"
	"github.com/framefarm/framefarm/internal/mp4"
	"github.com/framefarm/framefarm/internal/text"
	farmpb "github.com/framefarm/framefarm/proto"
)

type nodeService struct {
	farmpb.UnimplementedNodeServiceServer
	c *Coordinator
	// chunks holds the buffers frames are read into, chunk.Size each.
	chunks framebuf.Pool
}

func newNodeService(c *Coordinator) *nodeService {
	return &nodeService{c: c, chunks: framebuf.Pool{Size: chunk.Size}}
}

func checkNode(node string) error {
	if node == "" || len(node) > 200 {
		return fmt.Errorf("%w: a node name of 1 to 200 characters is required", ErrInvalid)
	}
	return nil
}

// errIdle: the farm has no work left for a node that asked with once.
var errIdle = errors.New("the farm has no work left for this node")

// grant gives node a set of the first job in the queue that has one for it.
// When none has, it says why: ErrNoWork while some job may still have work
// for the node, errIdle (with every job's reason) when none will.
func (c *Coordinator) grant(x changes, node string) (*jobRun, *job.Set, error) {
	now := c.cfg.Now()
	for _, jr := range c.queue {
		if s, ev, err := jr.job.Grant(node, now); err == nil {
			// The grant's answer crosses the node's link behind whatever
			// frames and parts its other slots move on it, so its first
			// heartbeat may come a heartbeat timeout late; from then on
			// the measured round trip is the allowance (Beat).
			s.Slack = min(c.cfg.HeartbeatTimeout, maxRTTAllowance)
			x.add(jr, []*job.Set{s}, ev)
			return jr, s, nil
		}
	}
	if err := c.idle(node); err != nil {
		return nil, nil, err
	}
	return nil, nil, job.ErrNoWork
}

// idle returns errIdle, with the reasons, when no job has or may have work
// for node: every job is finished or joining, or excludes it.
func (c *Coordinator) idle(node string) error {
	var why []string
	for _, jr := range c.queue {
		j := jr.job
		if (j.State == job.JobRunning || j.State == job.JobQueued) && !j.Excluded(node) {
			// A set of a running job may still come back to the queue.
			return nil
		}
		if len(why) == 5 {
			continue
		}
		switch {
		case j.Excluded(node):
			why = append(why, fmt.Sprintf("job %s: %v: node %s failed %d of its sets (once it is fixed: framefarm forgive %s)", jr.rec.ID, job.ErrNodeExcluded, node, j.NodeFailures[node], node))
		case j.State == job.JobFailed:
			why = append(why, fmt.Sprintf("job %s: %v: %s", jr.rec.ID, job.ErrJobFailed, j.Reason))
		default:
			why = append(why, fmt.Sprintf("job %s: %s", jr.rec.ID, j.State))
		}
	}
	if len(why) == 0 {
		why = append(why, "no jobs")
	}
	return fmt.Errorf("%w (%s)", errIdle, strings.Join(why, "; "))
}

// AcquireSet is a node's long poll for work: it waits among the waiting
// nodes until dispatch offers it a set (or, asked with once, says the farm
// has no work left for it), or the poll window ends.
func (n *nodeService) AcquireSet(ctx context.Context, req *farmpb.AcquireSetRequest) (*farmpb.AcquireSetResponse, error) {
	c := n.c
	asked := c.cfg.Now()
	if err := checkNode(req.Node); err != nil {
		return nil, err
	}
	// Asking for work says the node is healthy again, whatever it said before.
	if err := c.touchNode(req.Node, nodeReport{load: req.CpuLoad, free: req.FreeCores, hasLoad: true, healthy: true, slots: int(req.Slots)}); err != nil {
		return nil, err
	}
	w := &waiter{node: req.Node, once: req.Once, free: req.FreeCores, load: req.CpuLoad, got: make(chan offer, 1)}
	err := c.change(ctx, func(x changes) error {
		w.since = c.cfg.Now()
		c.waiters = append(c.waiters, w)
		return nil // the change's dispatch serves it if it can
	})
	timer := time.NewTimer(c.cfg.PollWindow)
	defer timer.Stop()
	var o offer
	offered := false
	if err == nil {
		select {
		case o = <-w.got:
			offered = true
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	if !offered {
		// Out of the queue of waiting nodes; an offer made meanwhile, under
		// the lock, is in got.
		c.mu.Lock()
		c.waiters = slices.DeleteFunc(c.waiters, func(q *waiter) bool { return q == w })
		select {
		case o = <-w.got:
			offered = true
		default:
		}
		c.mu.Unlock()
	}
	switch {
	case !offered && err != nil:
		return nil, err
	case !offered && ctx.Err() != nil:
		return nil, ctx.Err()
	case !offered:
		return &farmpb.AcquireSetResponse{Result: &farmpb.AcquireSetResponse_RetryAfterMs{RetryAfterMs: 500}}, nil
	}
	// A grant is answered once durable.
	if err := c.await(ctx, o.batch); err != nil {
		return nil, err
	}
	switch {
	case o.done != nil:
		return &farmpb.AcquireSetResponse{Result: &farmpb.AcquireSetResponse_Done{Done: o.done.Error()}}, nil
	case ctx.Err() != nil:
		// The node stopped asking (it is shutting down, or its call
		// timed out) as the set was granted: the grant would never reach
		// it, so give the set back now rather than after a lease timeout.
		c.ungrant(o.job, o.set.Index, o.set.Token, req.Node)
		return nil, ctx.Err()
	}
	c.metrics.grantSeconds.Observe(c.cfg.Now().Sub(asked).Seconds())
	return &farmpb.AcquireSetResponse{Result: &farmpb.AcquireSetResponse_Assignment{Assignment: c.assignment(o.job, &o.set)}}, nil
}

// waiter is a node's request for work waiting for a set.
type waiter struct {
	node       string
	once       bool
	free, load float64
	since      time.Time
	// got receives the one offer the waiter gets.
	got chan offer
}

// offer answers a waiter: a set of a job (granted in batch), or done.
type offer struct {
	job   *jobRun
	set   job.Set
	done  error
	batch *batch
}

// dispatch serves the waiting nodes after a change, under the lock: while
// sets are available, the waiter with the most free cores (then the least
// loaded, then the longest waiting) gets the first set the queue has for
// it, as the seeds' load-aware proxy did. A node that asked with once and
// for which the farm has no work left is told so.
func (c *Coordinator) dispatch(x changes) {
	if len(c.waiters) == 0 {
		return
	}
	avail := c.anyAvailable()
	if avail {
		slices.SortStableFunc(c.waiters, func(a, b *waiter) int {
			if d := cmp.Compare(b.free, a.free); d != 0 {
				return d
			}
			if d := cmp.Compare(a.load, b.load); d != 0 {
				return d
			}
			return a.since.Compare(b.since)
		})
	}
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		var o offer
		switch {
		case avail:
			jr, s, err := c.grant(x, w.node)
			switch {
			case err == nil:
				o = offer{job: jr, set: *s}
				avail = c.anyAvailable()
			case errors.Is(err, errIdle) && w.once:
				o.done = err
			}
		case w.once:
			if err := c.idle(w.node); err != nil {
				o.done = err
			}
		}
		if o.job == nil && o.done == nil {
			kept = append(kept, w)
			continue
		}
		o.batch = c.last
		w.got <- o
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// anyAvailable reports whether some job that grants sets has an A set.
func (c *Coordinator) anyAvailable() bool {
	for _, jr := range c.queue {
		if (jr.job.State == job.JobQueued || jr.job.State == job.JobRunning) && jr.job.HasAvailable() {
			return true
		}
	}
	return false
}

func (c *Coordinator) assignment(jr *jobRun, s *job.Set) *farmpb.Assignment {
	a := &farmpb.Assignment{
		JobId: jr.rec.ID, SetIndex: uint32(s.Index), Token: s.Token,
		// Often enough for both rules: a lease is kept by heartbeats within
		// the heartbeat timeout and by progress within --lease, and a node
		// learns it lost its set at its next beat.
		HeartbeatIntervalMs: uint32(max(min(c.cfg.HeartbeatTimeout, c.cfg.Lease)/4, 50*time.Millisecond).Milliseconds()),
		Settings:            jr.encodeSettings(),
		FramesDir:           jr.rec.FramesDir,
	}
	frames := jr.frames[s.First : s.First+s.Count]
	for _, f := range frames {
		a.Frames = append(a.Frames, &farmpb.FrameInfo{Number: f.Number, Name: f.Name, Size: f.Size, MtimeNs: f.ModTime.UnixNano(), Inode: f.Ino, Etag: f.ETag})
	}
	// Signing is local for S3 and Azure keys, a call for GCS through IAM:
	// bounded, so a slow signer cannot hold a granted set from its node.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.FrameUrls = c.frameURLs(sctx, jr.rec.FramesDir, frames)
	a.PartUrl, a.PartHeaders = c.partURL(sctx, jr, s.Index, s.Token)
	return a
}

// nodeReport is what a call says of its node: its load (requests for work
// and heartbeats of a set) and its ambassador's breaker.
type nodeReport struct {
	load, free float64
	hasLoad    bool
	breaker    *farmpb.BreakerInfo
	// problem, when not "", is why the node asks for no work; healthy
	// clears it. rtt is the link's round trip (0: not measured).
	problem string
	healthy bool
	rtt     time.Duration
	// slots is how many sets the node works on at once (0: not said).
	slots int
}

// The node registry's bounds: token holders must not grow the
// coordinator's memory or its status answer (4 MiB at most) without end.
const (
	// maxNodes is how many nodes the farm tracks at once; a status answer
	// listing them all stays well under its 4 MiB.
	maxNodes = 5000
	// nodeForget is how long a node that no job knows may stay silent
	// before it is forgotten to make room for a new one.
	nodeForget = 10 * time.Minute
)

// maxRTTAllowance bounds the round trip a node's ambassador may claim for
// its link, which its leases are allowed on top of the heartbeat timeout.
const maxRTTAllowance = 30 * time.Second

// errTooManyNodes: the registry is full of nodes seen recently.
var errTooManyNodes = errors.New("too many nodes")

// touchNode notes that node is alive, with what its call says of it: idle
// nodes stay visible through their requests for work.
func (c *Coordinator) touchNode(name string, r nodeReport) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	ni := c.nodes[name]
	if ni == nil {
		if len(c.nodes) >= maxNodes {
			c.forgetNodes(now)
		}
		if len(c.nodes) >= maxNodes {
			return fmt.Errorf("%w: the farm tracks %d nodes seen in the last %s; node %q must wait for one to go quiet", errTooManyNodes, maxNodes, nodeForget, name)
		}
		ni = &nodeInfo{}
		c.nodes[name] = ni
		c.log.Info("node joined", "node", name)
	}
	ni.lastSeen = now
	switch {
	case r.problem != "":
		if ni.problem != r.problem {
			c.log.Warn("node reports a problem of its own; it asks for no work until it is fixed", "node", name, "problem", r.problem)
		}
		ni.problem = r.problem
	case r.healthy && ni.problem != "":
		c.log.Info("node asks for work again", "node", name, "was", ni.problem)
		ni.problem = ""
	}
	if r.rtt > 0 {
		ni.rtt = r.rtt
	}
	if r.hasLoad {
		ni.cpuLoad, ni.freeCores = r.load, r.free
	}
	if r.slots > 0 {
		ni.slots = r.slots
	}
	if b := r.breaker; b != nil {
		// The state is one of three words; anything else is kept as
		// "unknown", not stored and logged as it came.
		if b.State != "closed" && b.State != "open" && b.State != "half-open" {
			b = proto.CloneOf(b)
			b.State = "unknown"
		}
		if ni.breaker.GetState() != b.State {
			c.log.Info("node's circuit breaker", "node", name, "state", b.State,
				"consecutive_failures", b.ConsecutiveFailures)
		}
		ni.breaker = b
	}
	return nil
}

// forgetNodes drops the nodes silent for nodeForget that no job counts a
// failure of. Call it under c.mu.
func (c *Coordinator) forgetNodes(now time.Time) {
	for name, ni := range c.nodes {
		if now.Sub(ni.lastSeen) < nodeForget {
			continue
		}
		known := false
		for _, jr := range c.queue {
			if jr.job.NodeFailures[name] > 0 {
				known = true
				break
			}
		}
		if !known {
			delete(c.nodes, name)
		}
	}
}

// isReport reports whether a heartbeat holds no lease: an ambassador telling
// its breaker's state in its node's name (the breaker opened, or closed
// again), when the node has no set or its own calls cannot get through.
func isReport(hb *farmpb.HeartbeatRequest) bool { return hb.JobId == "" && hb.Token == 0 }

// ungrant gives back a set whose grant could not be delivered.
func (c *Coordinator) ungrant(jr *jobRun, index int, token uint64, node string) {
	_ = c.change(context.Background(), func(x changes) error {
		ev, err := jr.job.Release(index, token, "", c.cfg.Now())
		for i := range ev {
			ev[i].Detail = "the grant did not reach " + node + " (its request ended first)"
		}
		x.add(jr, []*job.Set{jr.job.Sets[index]}, ev)
		return err
	})
}

// leaseJob returns the job a lease names. Call it under c.mu. A node takes
// NotFound (a job deleted under it) as a lost lease, as it takes a stale
// token.
func (c *Coordinator) leaseJob(id string) (*jobRun, error) {
	if id == "" {
		// As clients may say it: the farm's only job.
		return c.lookup(id)
	}
	jr := c.jobs[id]
	if jr == nil {
		return nil, fmt.Errorf("%w: the farm has no job %q", job.ErrNotFound, text.Truncate(id, 100))
	}
	return jr, nil
}

func (n *nodeService) Heartbeat(ctx context.Context, req *farmpb.HeartbeatRequest) (*farmpb.HeartbeatResponse, error) {
	c := n.c
	if err := checkNode(req.Node); err != nil {
		return nil, err
	}
	rtt := min(time.Duration(req.LinkRttMs)*time.Millisecond, maxRTTAllowance)
	if err := c.touchNode(req.Node, nodeReport{load: req.CpuLoad, free: req.FreeCores, hasLoad: !isReport(req), breaker: req.Breaker,
		problem: problemText(req.Problem), rtt: rtt}); err != nil {
		return nil, err
	}
	if isReport(req) {
		return &farmpb.HeartbeatResponse{}, nil
	}
	c.mu.Lock()
	jr, err := c.leaseJob(req.JobId)
	if err == nil {
		// A beat of the lease a set just completed under is kept (see Beat).
		err = jr.job.Beat(int(req.SetIndex), req.Token, int(req.FramesDone), rtt, c.cfg.Now())
	}
	var b *batch
	if err != nil {
		// A refusal may come from a change not yet durable (the lease
		// expired a moment ago); a lease that holds was granted durably.
		b = c.pending()
	}
	c.mu.Unlock()
	if werr := c.await(ctx, b); werr != nil {
		return nil, werr
	}
	if err != nil {
		return nil, err
	}
	return &farmpb.HeartbeatResponse{}, nil
}

func (n *nodeService) ReleaseSet(ctx context.Context, req *farmpb.ReleaseSetRequest) (*farmpb.ReleaseSetResponse, error) {
	c := n.c
	if err := checkNode(req.Node); err != nil {
		return nil, err
	}
	err := c.change(ctx, func(x changes) error {
		jr, err := c.leaseJob(req.JobId)
		if err != nil {
			return err
		}
		j := jr.job
		if err := j.CheckLease(int(req.SetIndex), req.Token); err != nil {
			return err
		}
		if holder := j.Sets[req.SetIndex].Node; holder != req.Node {
			return fmt.Errorf("%w: set %d is held by %s, not %s", job.ErrStaleToken, req.SetIndex, holder, req.Node)
		}
		ev, err := j.Release(int(req.SetIndex), req.Token, text.Truncate(req.Error, 4000), c.cfg.Now())
		x.add(jr, []*job.Set{j.Sets[req.SetIndex]}, ev)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &farmpb.ReleaseSetResponse{}, nil
}

// leasedSet returns the job and a copy of the set after checking the
// caller's lease.
func (c *Coordinator) leasedSet(jobID string, index uint32, token uint64) (*jobRun, job.Set, error) {
	c.mu.Lock()
	jr, err := c.leaseJob(jobID)
	if err == nil {
		err = jr.job.CheckLease(int(index), token)
	}
	if err != nil {
		// As in Heartbeat: the refusal may depend on a change in flight.
		b := c.pending()
		c.mu.Unlock()
		if werr := c.await(context.Background(), b); werr != nil {
			return nil, job.Set{}, werr
		}
		return nil, job.Set{}, err
	}
	defer c.mu.Unlock()
	return jr, *jr.job.Sets[index], nil
}

func (n *nodeService) StreamFrames(req *farmpb.StreamFramesRequest, stream farmpb.NodeService_StreamFramesServer) error {
	c := n.c
	jr, s, err := c.leasedSet(req.JobId, req.SetIndex, req.Token)
	if err != nil {
		return err
	}
	for i, f := range jr.frames[s.First : s.First+s.Count] {
		err := c.streamFrame(stream, jr.rec.FramesDir, uint32(i), f, &n.chunks)
		if errors.Is(err, ErrFrameChanged) {
			// No node can render this set any more: stop the job now rather
			// than mix two versions of the frames or fail it on three nodes.
			c.log.Error("frame changed; failing the job", "job", jr.rec.ID, "set", s.Index, "err", err)
			_ = c.change(stream.Context(), func(x changes) error {
				x.add(jr, nil, jr.job.Finish(err, "", c.cfg.Now()))
				return nil
			})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// streamFrame reads the frame into pooled buffers and sends each as it was
// read: the chunk goes out through chunk.Codec without a copy, and its
// buffer comes back to the pool once gRPC has written it.
func (c *Coordinator) streamFrame(stream farmpb.NodeService_StreamFramesServer, dir string, pos uint32, f frameRecord, pool *framebuf.Pool) error {
	fh, err := c.openJobFrame(stream.Context(), dir, f)
	if err != nil {
		return err
	}
	defer fh.Close()
	var sent int64
	for {
		buf := pool.Get(chunk.Size)
		k, err := io.ReadFull(fh, *buf)
		if k > 0 {
			sent += int64(k)
			*buf = (*buf)[:k]
			if err := stream.SendMsg(&chunk.Out{Pos: pos, Last: sent == f.Size, Data: mem.NewBuffer(buf, pool)}); err != nil {
				return err
			}
			c.metrics.frameStreamBytes.Add(float64(k))
		} else {
			pool.Put(buf)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: reading frame %d (%s): %w", errOwnFault, f.Number, f.Name, err)
		}
		if sent > f.Size {
			break
		}
	}
	if sent != f.Size {
		return fmt.Errorf("%w: frame %d (%s) changed while it was read (%d bytes, was %d): restore it, or start a new job on the folder as it is now", ErrFrameChanged, f.Number, f.Name, sent, f.Size)
	}
	if sent == 0 {
		return stream.Send(&farmpb.FrameChunk{Position: pos, Last: true})
	}
	return nil
}

func (n *nodeService) UploadPart(stream farmpb.NodeService_UploadPartServer) error {
	c := n.c
	ctx := stream.Context()
	first, err := stream.Recv()
	if err == io.EOF {
		return fmt.Errorf("%w: an upload starts with its header; the stream ended before it", ErrInvalid)
	}
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return fmt.Errorf("%w: an upload starts with its header", ErrInvalid)
	}
	// The name is kept with the part and logged: bounded like every node's.
	if err := checkNode(h.Node); err != nil {
		return err
	}
	jr, s, err := c.leasedSet(h.JobId, h.SetIndex, h.Token)
	if err != nil {
		return err
	}
	log := c.log.With("job", jr.rec.ID, "set", s.Index, "node", h.Node, "token", h.Token)
	f, sum, size, err := c.receivePart(stream, jr, h, s)
	if f != nil {
		defer func() {
			f.Close()
			os.Remove(f.Name())
		}()
	}
	if err == nil {
		if !h.InBucket {
			c.metrics.partUploadBytes.Add(float64(size))
		}
		// From the file still open: no second open of what was just written.
		err = verifyPart(jr.rec.Settings, f, size, s)
	}
	if errors.Is(err, errPartNotInBucket) {
		log.Warn("the part in the bucket is not what the node announced; it uploads the part to the coordinator instead", "err", err)
	}
	if errors.Is(err, errOwnFault) {
		log.Error("the part could not be stored: the coordinator's own failure, not the node's; it will upload again", "err", err)
	}
	if errors.Is(err, ErrBadPart) {
		// The node sent a bad part (wrong checksum or size, truncated, not
		// the set's frames or the job's codec): the set goes back with the
		// reason, which counts as a failure of the set on that node. A
		// transfer cut short by the link is not the node's fault and
		// changes nothing: the node uploads again under the same lease.
		log.Warn("part refused", "err", err)
		_ = c.change(context.WithoutCancel(ctx), func(x changes) error {
			ev, rerr := jr.job.Release(s.Index, h.Token, text.Truncate("upload refused: "+err.Error(), 4000), c.cfg.Now())
			x.add(jr, []*job.Set{jr.job.Sets[s.Index]}, ev)
			return rerr
		})
	}
	if err != nil {
		return err
	}
	// Named by set and token, and put in place before the change: no file
	// system call under the lock. A link, not a rename, so that of two
	// uploads under one lease (a retry racing the first try) only one holds
	// the name, and only its owner removes it if the change refuses.
	name := fmt.Sprintf("set-%05d-t%d.%s", s.Index, h.Token, jr.rec.Settings.PartExt)
	path := filepath.Join(jr.partDir, name)
	if err := os.Link(f.Name(), path); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: set %d: another upload under token %d came first", job.ErrStaleToken, s.Index, h.Token)
	} else if err != nil {
		return fmt.Errorf("%w: storing part of set %d: %w", errOwnFault, s.Index, err)
	}
	err = c.change(ctx, func(x changes) error {
		// One fsync of the folder for every part of the batch.
		x.syncBeforeCommit(jr.partDir)
		ev, err := jr.job.Complete(s.Index, h.Token, job.PartInfo{Name: name, Size: size, SHA256: sum, EncodeMS: h.EncodeMs, Node: h.Node}, c.cfg.Now())
		x.add(jr, []*job.Set{jr.job.Sets[s.Index]}, ev)
		return err
	})
	if err != nil {
		// The lease moved while the part came in: it is not this set's.
		os.Remove(path)
		return err
	}
	c.metrics.partAccepted(s.Count, h.EncodeMs, size)
	c.mu.Lock()
	if ni := c.nodes[h.Node]; ni != nil {
		ni.setsDone++
	}
	c.mu.Unlock()
	return stream.SendAndClose(&farmpb.UploadPartResponse{})
}

// maxPartBytes bounds an upload: a lossy part is far smaller than its raw
// frames, and a lossless one is not much larger than them.
func maxPartBytes(st jobSettings, s job.Set) int64 {
	raw := int64(st.outWidth()) * int64(st.outHeight()) * 8 * int64(s.Count)
	return raw + 16<<20
}

// receivePart writes the upload (or the part the node put in the --storage
// bucket) to a temp file, hashing it on the way, and returns that file open
// (nil when none was made); the caller closes it.
func (c *Coordinator) receivePart(stream farmpb.NodeService_UploadPartServer, jr *jobRun, h *farmpb.PartHeader, s job.Set) (*os.File, string, int64, error) {
	limit := maxPartBytes(jr.rec.Settings, s)
	if h.Size <= 0 || h.Size > limit {
		return nil, "", 0, fmt.Errorf("%w: set %d: a part of %d bytes is out of bounds (1 to %d)", ErrBadPart, s.Index, h.Size, limit)
	}
	// The part, then the video joined from the parts: refused now, while
	// the node can wait and upload again, rather than failed half-way.
	if free, err := freeBytes(jr.dir); err == nil && uint64(h.Size)+reserveBytes > free {
		return nil, "", 0, fmt.Errorf("%w: storing part of set %d: %w: %s free in --data %s, the part needs %s and the coordinator keeps %s: free space there; the node uploads again",
			errOwnFault, s.Index, syscall.ENOSPC, text.Size(int64(free)), filepath.Dir(filepath.Dir(jr.dir)), text.Size(h.Size), text.Size(reserveBytes))
	}
	// Not in the parts folder, which the renames of accepted parts and its
	// fsync once per batch keep busy.
	f, err := os.CreateTemp(jr.dir, fmt.Sprintf(".tmp-set-%05d-t%d-*", s.Index, h.Token))
	if err != nil {
		return nil, "", 0, fmt.Errorf("%w: storing part of set %d: %w", errOwnFault, s.Index, err)
	}
	hash := sha256.New()
	var size int64
	var trailer *farmpb.PartTrailer
	if h.InBucket {
		m, err := stream.Recv()
		if err == io.EOF || (err == nil && m.GetTrailer() == nil) {
			return f, "", 0, fmt.Errorf("%w: set %d: a part put in the bucket is announced by its header and trailer only", ErrBadPart, s.Index)
		}
		if err != nil {
			return f, "", 0, err
		}
		trailer = m.GetTrailer()
		// An S3 PUT stores the whole object or nothing, and the key is this
		// lease's: what is there is checked below like any upload, so a
		// part cut short or from another try is refused, never taken.
		if size, err = c.fetchPart(stream.Context(), c.partKey(jr, s.Index, h.Token), h.Size, io.MultiWriter(f, hash)); err != nil {
			return f, "", 0, err
		}
	}
	for trailer == nil {
		m, err := stream.Recv()
		if err == io.EOF {
			return f, "", 0, fmt.Errorf("%w: set %d: upload ended without its trailer after %d bytes", ErrBadPart, s.Index, size)
		}
		if err != nil {
			return f, "", 0, err
		}
		switch {
		case m.GetTrailer() != nil:
			trailer = m.GetTrailer()
		case len(m.GetChunk()) > 0:
			chunk := m.GetChunk()
			size += int64(len(chunk))
			if size > h.Size {
				return f, "", 0, fmt.Errorf("%w: set %d: upload is larger than the %d bytes announced", ErrBadPart, s.Index, h.Size)
			}
			hash.Write(chunk)
			if _, err := f.Write(chunk); err != nil {
				return f, "", 0, fmt.Errorf("%w: storing part of set %d: %w", errOwnFault, s.Index, err)
			}
		default:
			// Every message must move the upload on (at least one byte, or
			// the end), so that the size bound also bounds the stream.
			return f, "", 0, fmt.Errorf("%w: set %d: after its header an upload sends non-empty chunks, then its trailer; got an empty message or a second header", ErrBadPart, s.Index)
		}
	}
	sum := hex.EncodeToString(hash.Sum(nil))
	// A part streamed here that is not as announced is the node's; one in
	// the bucket may be the bucket's or the PUT's (half-written, changed):
	// the node, which holds the part, uploads it instead.
	bad, got, data := ErrBadPart, "received", "received data"
	if h.InBucket {
		bad, got, data = errPartNotInBucket, "the bucket holds", "the bucket's"
	}
	if size != h.Size {
		return f, "", 0, fmt.Errorf("%w: set %d: %s %d bytes, %d announced", bad, s.Index, got, size, h.Size)
	}
	if said := hex.EncodeToString(trailer.Sha256); said != sum {
		return f, "", 0, fmt.Errorf("%w: set %d: SHA-256 mismatch: node says %s, %s is %s", bad, s.Index, said, data, sum)
	}
	if err := f.Sync(); err != nil {
		return f, "", 0, fmt.Errorf("%w: storing part of set %d: %w", errOwnFault, s.Index, err)
	}
	return f, sum, size, nil
}

// verifyPart checks the part's codec parameters, frame count and timing
// from its MP4/MOV index, read in Go: spawning ffprobe for every part cost
// ~150-300 ms of CPU, most of the coordinator's work per set. Every frame
// must last exactly one frame period in the fps time base, which is what
// lets the join lay the parts end to end without rounding.
func verifyPart(st jobSettings, r io.ReaderAt, size int64, s job.Set) error {
	codec, _ := ffmpeg.LookupCodec(st.Codec)
	p, err := mp4.Read(r, size)
	if err != nil {
		return fmt.Errorf("%w: set %d: the part is not a readable video: %v", ErrBadPart, s.Index, err)
	}
	rate := st.rate()
	switch {
	case p.Samples != int64(s.Count):
		return fmt.Errorf("%w: set %d: part has %d frames, the set has %d", ErrBadPart, s.Index, p.Samples, s.Count)
	case p.Codec != codec.Probed:
		return fmt.Errorf("%w: set %d: part is %s, the job encodes %s", ErrBadPart, s.Index, p.Codec, codec.Probed)
	case p.Width != st.outWidth() || p.Height != st.outHeight():
		return fmt.Errorf("%w: set %d: part is %dx%d, the job is %dx%d", ErrBadPart, s.Index, p.Width, p.Height, st.outWidth(), st.outHeight())
	// "" where the container does not say it (FFV1, AV1 4:4:4).
	case p.PixFmt != "" && p.PixFmt != ffmpeg.ProbedPixFmt(codec.Probed, st.PixFmt, st.Range):
		return fmt.Errorf("%w: set %d: part pixel format is %s, the job uses %s", ErrBadPart, s.Index, p.PixFmt, ffmpeg.ProbedPixFmt(codec.Probed, st.PixFmt, st.Range))
	// ffmpeg's own time scale for the rate, or the numerator that parts of
	// earlier versions were given: the join rescales those exactly.
	case int64(p.Timescale) != rate.TrackTimescale() && int64(p.Timescale) != rate.Num,
		len(p.Deltas) != 1 || int64(p.Deltas[0])*rate.Num != int64(p.Timescale)*rate.Den:
		return fmt.Errorf("%w: set %d: part frames are not timed at %s fps in a 1/%d time base (time scale %d, frame durations %v)",
			ErrBadPart, s.Index, rate, rate.TrackTimescale(), p.Timescale, p.Deltas)
	}
	return nil
}
