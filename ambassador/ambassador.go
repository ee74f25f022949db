// Package ambassador is the render node's sidecar: its only way out to the
// coordinator.
//
// It runs beside the node on the same machine, serves the node-facing
// farmpb.NodeService on loopback, and forwards every call to the coordinator
// through one circuit breaker (github.com/sony/gobreaker/v2). It owns
// everything about reaching the coordinator: deadlines, retries of idempotent
// calls, keepalives, and (later) the farm's credentials, so that the node only
// renders.
//
// Failure classification: transport failures (Unavailable, DeadlineExceeded,
// ResourceExhausted, and errors that carry no gRPC status) count against the
// breaker; answers about the request (InvalidArgument, NotFound,
// FailedPrecondition, AlreadyExists, Unauthenticated, ...) are successes of the
// link and are passed through to the node unchanged; a call the node itself
// cancelled is excluded, and so is a heartbeat that timed out. While the
// breaker is open, calls fail fast with Unavailable and a message that says
// when to try again.
//
// Start order: a call made while the connection to the coordinator is down
// (not started yet, restarting) waits for it up to LinkWait before it fails
// and counts; the connection is tried again every 100-400ms; and a breaker
// found open when the connection comes up is replaced with a closed one, so
// that nodes started before the coordinator get work as soon as it listens.
package ambassador

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/framefarm/framefarm/internal/framebuf"
	farmpb "github.com/framefarm/framefarm/proto"
)

// Defaults for Config fields left zero.
const (
	DefaultListen         = "127.0.0.1:5556"
	DefaultCallTimeout    = 10 * time.Second
	DefaultAcquireTimeout = 60 * time.Second

	// DefaultLinkWait is how long a call waits for the connection to the
	// coordinator to come up before it fails and counts against the
	// breaker: long enough to ride out a coordinator that starts a moment
	// after its nodes, short next to a real outage.
	DefaultLinkWait = 2 * time.Second

	DefaultBreakerMaxRequests = 1
	DefaultBreakerOpenTimeout = 5 * time.Second
	DefaultBreakerTripAfter   = 5
)

const (
	// maxMsgSize bounds every message on both sides (frames and parts travel
	// in chunks of 64 KiB to 1 MiB).
	maxMsgSize = 4 << 20
	// bulkWindow is the HTTP/2 flow-control window of each stream, both
	// ways (the connection's is twice that). gRPC's default is dynamic and
	// starts at 64 KiB, which stalls a bulk stream on every round trip;
	// fixed, it also bounds what each hop buffers, whatever the frame size.
	bulkWindow = 4 << 20
	// bulkBuffer is the socket read and write buffer on both sides: with
	// gRPC's 32 KiB, a stream of 1 MiB messages costs a syscall every two
	// HTTP/2 frames.
	bulkBuffer = 256 << 10
	// shutdownGrace is how long Run waits for in-flight calls on shutdown
	// before it stops the server hard.
	shutdownGrace = 5 * time.Second
	// idempotentRetries is how many more times Heartbeat and ReleaseSet are
	// tried after an Unavailable answer.
	idempotentRetries = 2
	retryBackoffMin   = 100 * time.Millisecond
	retryBackoffSpan  = 300 * time.Millisecond
	// reportTimeout bounds one breaker report or probe: both are answered by
	// the coordinator from memory.
	reportTimeout = 2 * time.Second
	// reportRetryTicks is how many ReportIntervals a failed report waits
	// before it is tried again (a state change sends one at once).
	reportRetryTicks = 5
	// maxReportedNodes bounds the node names a report is sent for.
	maxReportedNodes = 8
)

// DefaultReportInterval is how often the ambassador looks at its breaker to
// report a change to the coordinator, or to probe it when half-open.
const DefaultReportInterval = time.Second

// BreakerConfig configures the circuit breaker between the node and the
// coordinator. Zero fields take the defaults noted beside them.
type BreakerConfig struct {
	// MaxRequests is how many probe calls are let through while half-open;
	// that many consecutive successes close the breaker. Default 1.
	MaxRequests uint32
	// Interval is the cyclic period after which the closed breaker clears its
	// counts; 0 (the default) never clears them while closed.
	Interval time.Duration
	// OpenTimeout is how long the breaker stays open before it lets a probe
	// through (half-open). Default 5s.
	OpenTimeout time.Duration
	// TripAfter is the number of consecutive failures that opens the
	// breaker. Default 5.
	TripAfter uint32
}

// Config configures an Ambassador.
type Config struct {
	// Coordinator is the coordinator's gRPC address (host:port). Required.
	Coordinator string
	// Listen is the node-facing address. Default "127.0.0.1:5556"; a port of
	// 0 picks a free one (see Addr and Ready).
	Listen string
	// Logger receives one Debug line per forwarded call and an Info line per
	// breaker state change. Nil discards logs.
	Logger *slog.Logger
	// CallTimeout is the deadline of the unary calls Heartbeat and
	// ReleaseSet, retries included. Default 10s.
	CallTimeout time.Duration
	// AcquireTimeout is the deadline of the AcquireSet long poll. Default 60s
	// (the coordinator's poll window is about 20s).
	AcquireTimeout time.Duration
	// Breaker configures the circuit breaker.
	Breaker BreakerConfig
	// DialOptions are added to the coordinator client's options (tests, and
	// later TLS and per-RPC credentials). Insecure transport credentials are
	// the default; a later grpc.WithTransportCredentials overrides them.
	DialOptions []grpc.DialOption
	// ReportInterval is how often the breaker is looked at to tell the
	// coordinator about a state change (so that status shows a node's breaker
	// open while it is) and to probe the coordinator with a cheap call once
	// the breaker is half-open. Default DefaultReportInterval; negative
	// disables reports and proactive probes.
	ReportInterval time.Duration
	// LinkWait is how long a call waits for the connection to the
	// coordinator to be up (it may not be listening yet, or be restarting)
	// before it fails with Unavailable and counts against the breaker.
	// Default DefaultLinkWait; negative fails at once.
	LinkWait time.Duration
	// Now is the clock of the breaker's open time and of the retry hints
	// given to the node. Nil is time.Now.
	Now func() time.Time
}

// BreakerSnapshot is the breaker's state and counts at one moment.
type BreakerSnapshot struct {
	// State is "closed", "open" or "half-open".
	State string
	// Counts of the breaker's current generation (they are reset when the
	// state changes, and every Interval while closed if Interval > 0).
	Requests             uint32
	TotalSuccesses       uint32
	TotalFailures        uint32
	TotalExclusions      uint32
	ConsecutiveSuccesses uint32
	ConsecutiveFailures  uint32
	// Opens is how many times the breaker opened since New (a failed probe
	// opens it again), LastOpened when it last did.
	Opens      uint32
	LastOpened time.Time
}

// Info returns the snapshot as the wire message sent with heartbeats.
func (s BreakerSnapshot) Info() *farmpb.BreakerInfo {
	return &farmpb.BreakerInfo{
		State:               s.State,
		Requests:            s.Requests,
		TotalFailures:       s.TotalFailures,
		ConsecutiveFailures: s.ConsecutiveFailures,
		Opens:               s.Opens,
		LastOpenedUnixMs:    unixMs(s.LastOpened),
	}
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Ambassador serves farmpb.NodeService to the node and forwards each call to
// the coordinator through a circuit breaker. Create it with New and start it
// with Run.
type Ambassador struct {
	farmpb.UnimplementedNodeServiceServer

	cfg    Config
	log    *slog.Logger
	conn   *grpc.ClientConn
	client farmpb.NodeServiceClient
	codec  rawCodec
	pool   *framebuf.Pool

	// cb is the current breaker: the link watch replaces it with a fresh
	// one when the connection comes up while it is not closed (see
	// freshBreaker).
	cb atomic.Pointer[gobreaker.CircuitBreaker[struct{}]]
	// linkUp wakes the report loop when the connection comes up.
	linkUp chan struct{}

	// openUntil is when the breaker, opened last, lets a probe through
	// (unix nanoseconds); written by the breaker's OnStateChange.
	openUntil atomic.Int64
	// opens counts the breaker's opens; written by OnStateChange.
	opens atomic.Uint32
	// stateChanged wakes the report loop on a breaker state change.
	stateChanged chan struct{}

	// names are the node names seen in calls, most recent last: breaker
	// reports are sent in their name.
	namesMu sync.Mutex
	names   []string

	started   atomic.Bool
	addr      atomic.Value // string
	ready     chan struct{}
	readyOnce sync.Once
}

// New checks cfg, fills in its defaults and prepares the coordinator client.
// No connection is made before the first forwarded call.
func New(cfg Config) (*Ambassador, error) {
	if cfg.Coordinator == "" {
		return nil, errors.New("ambassador: no coordinator address: set Config.Coordinator to the coordinator's host:port")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.AcquireTimeout <= 0 {
		cfg.AcquireTimeout = DefaultAcquireTimeout
	}
	if cfg.Breaker.MaxRequests == 0 {
		cfg.Breaker.MaxRequests = DefaultBreakerMaxRequests
	}
	if cfg.Breaker.OpenTimeout <= 0 {
		cfg.Breaker.OpenTimeout = DefaultBreakerOpenTimeout
	}
	if cfg.Breaker.TripAfter == 0 {
		cfg.Breaker.TripAfter = DefaultBreakerTripAfter
	}
	if cfg.Breaker.Interval < 0 {
		cfg.Breaker.Interval = 0
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = DefaultReportInterval
	}
	if cfg.LinkWait == 0 {
		cfg.LinkWait = DefaultLinkWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Ambassador{
		cfg:          cfg,
		log:          log,
		ready:        make(chan struct{}),
		stateChanged: make(chan struct{}, 1),
		linkUp:       make(chan struct{}, 1),
		codec:        newRawCodec(),
		pool:         &framebuf.Pool{},
	}
	a.addr.Store("")

	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A coordinator that stopped answering (paused, or the link is cut
		// without a reset) is noticed within 15s even between calls. The
		// coordinator permits pings every 5s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                10 * time.Second,
			Timeout:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(linkConnectParams()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMsgSize),
			grpc.MaxCallSendMsgSize(maxMsgSize),
		),
		experimental.WithBufferPool(a.pool),
	}
	opts = append(append(opts, TransportOptions()...), cfg.DialOptions...)
	conn, err := grpc.NewClient(cfg.Coordinator, opts...)
	if err != nil {
		return nil, fmt.Errorf("ambassador: coordinator address %q: %w", cfg.Coordinator, err)
	}
	a.conn = conn
	a.client = farmpb.NewNodeServiceClient(conn)

	a.cb.Store(a.newBreaker())
	return a, nil
}

// linkConnectParams make the connection to the coordinator come up within
// about half a second of the coordinator listening, however long it was
// away: gRPC's default backoff starts at 1s and grows to 2 minutes, which
// left a node idle for seconds after a cold start. A connection refused
// costs the coordinator's host next to nothing, so trying every 400ms
// during an outage is cheap.
func linkConnectParams() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 400 * time.Millisecond},
		MinConnectTimeout: 5 * time.Second,
	}
}

// newBreaker makes a closed breaker. Its state changes are acted on only
// while it is the current one: calls in flight on a breaker that was
// replaced must not report or log for it.
func (a *Ambassador) newBreaker() *gobreaker.CircuitBreaker[struct{}] {
	cfg := a.cfg
	trip := cfg.Breaker.TripAfter
	var cb *gobreaker.CircuitBreaker[struct{}]
	cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "coordinator",
		MaxRequests: cfg.Breaker.MaxRequests,
		Interval:    cfg.Breaker.Interval,
		Timeout:     cfg.Breaker.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= trip
		},
		IsSuccessful: isSuccessful,
		IsExcluded:   isExcluded,
		// Called with the breaker's lock held: it must not call the breaker.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if a.cb.Load() != cb {
				return
			}
			if to == gobreaker.StateOpen {
				a.openUntil.Store(cfg.Now().Add(cfg.Breaker.OpenTimeout).UnixNano())
				a.opens.Add(1)
			}
			select {
			case a.stateChanged <- struct{}{}:
			default:
			}
			a.log.Info("circuit breaker state changed",
				slog.String("coordinator", cfg.Coordinator),
				slog.String("from", from.String()),
				slog.String("to", to.String()))
		},
	})
	return cb
}

// TransportOptions tune the ambassador's connection to the coordinator
// (exported so that the benchmark's simulated nodes reach the coordinator
// as a node's ambassador does). Frames stream through in 1 MiB messages:
// see bulkWindow and bulkBuffer. A fixed window also spares the
// coordinator gRPC's bandwidth-estimation pings, one per received message
// with the dynamic window.
func TransportOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(bulkWindow),
		grpc.WithInitialConnWindowSize(2 * bulkWindow),
		grpc.WithReadBufferSize(bulkBuffer),
		grpc.WithWriteBufferSize(bulkBuffer),
	}
}

// Run listens on Config.Listen, serves farmpb.NodeService to the node and
// forwards its calls to the coordinator until ctx is done. It then stops
// gracefully (in-flight calls get 5s before the server is stopped hard),
// closes the coordinator connection and returns nil. It returns an error if
// it cannot listen or serving fails. Run may be called once.
func (a *Ambassador) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("ambassador: Run called more than once")
	}
	defer a.conn.Close()

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ambassador: listen for the node on %s: %w", a.cfg.Listen, err)
	}
	srv := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
		grpc.InitialWindowSize(bulkWindow),
		grpc.InitialConnWindowSize(2*bulkWindow),
		grpc.ReadBufferSize(bulkBuffer),
		grpc.WriteBufferSize(bulkBuffer),
		experimental.BufferPool(a.pool),
		grpc.ForceServerCodecV2(a.codec),
	)
	farmpb.RegisterNodeServiceServer(srv, a)

	a.addr.Store(lis.Addr().String())
	a.readyOnce.Do(func() { close(a.ready) })
	a.log.Info("ambassador listening",
		slog.String("addr", lis.Addr().String()),
		slog.String("coordinator", a.cfg.Coordinator))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	reportCtx, stopReports := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Go(func() { a.reportLoop(reportCtx) })
	loops.Go(func() { a.watchLink(reportCtx) })
	defer func() { stopReports(); loops.Wait() }()

	select {
	case err := <-errc:
		srv.Stop()
		return fmt.Errorf("ambassador: serving the node on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}

	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	grace := time.NewTimer(shutdownGrace)
	select {
	case <-stopped:
		grace.Stop()
	case <-grace.C:
		a.log.Warn("ambassador: in-flight calls did not finish in time, stopping hard",
			slog.Duration("grace", shutdownGrace))
		srv.Stop()
		<-stopped
	}
	<-errc // Serve returns nil once stopped.
	a.log.Info("ambassador stopped")
	return nil
}

// Addr returns the address the ambassador listens on, or "" before it
// listens (see Ready).
func (a *Ambassador) Addr() string {
	return a.addr.Load().(string)
}

// Ready is closed once Run listens; Addr is then set. If Run fails to listen
// it returns an error and Ready stays open.
func (a *Ambassador) Ready() <-chan struct{} {
	return a.ready
}

// BreakerState returns the circuit breaker's current state and counts.
func (a *Ambassador) BreakerState() BreakerSnapshot {
	cb := a.cb.Load()
	state := cb.State() // moves open to half-open when due, so counts match
	c := cb.Counts()
	snap := BreakerSnapshot{
		State:                state.String(),
		Requests:             c.Requests,
		TotalSuccesses:       c.TotalSuccesses,
		TotalFailures:        c.TotalFailures,
		TotalExclusions:      c.TotalExclusions,
		ConsecutiveSuccesses: c.ConsecutiveSuccesses,
		ConsecutiveFailures:  c.ConsecutiveFailures,
		Opens:                a.opens.Load(),
	}
	if until := a.openUntil.Load(); until != 0 {
		snap.LastOpened = time.Unix(0, until).Add(-a.cfg.Breaker.OpenTimeout)
	}
	return snap
}

// AcquireSet forwards the node's long poll for work, with AcquireTimeout as
// its deadline. It is not retried.
func (a *Ambassador) AcquireSet(ctx context.Context, req *farmpb.AcquireSetRequest) (*farmpb.AcquireSetResponse, error) {
	start := time.Now()
	a.noteNode(req.GetNode())
	var resp *farmpb.AcquireSetResponse
	err := a.probeFirst(ctx, req.GetNode())
	if err == nil {
		err = a.execute(ctx, func() error {
			cctx, cancel := context.WithTimeout(ctx, a.cfg.AcquireTimeout)
			defer cancel()
			var err error
			resp, err = a.client.AcquireSet(cctx, req)
			return err
		})
	}
	as := resp.GetAssignment()
	a.logCall(ctx, "AcquireSet", start, err, 1,
		req.GetNode(), as.GetJobId(), int64(as.GetSetIndex()), as.GetToken(), as != nil)
	if err != nil {
		return nil, a.nodeError(err)
	}
	return resp, nil
}

// Heartbeat adds the breaker's state and counts to the node's heartbeat and
// forwards it. It is idempotent, so it is retried on Unavailable.
func (a *Ambassador) Heartbeat(ctx context.Context, req *farmpb.HeartbeatRequest) (*farmpb.HeartbeatResponse, error) {
	start := time.Now()
	a.noteNode(req.GetNode())
	var resp *farmpb.HeartbeatResponse
	attempts, err := a.retryIdempotent(ctx, func(cctx context.Context) error {
		req.Breaker = a.BreakerState().Info()
		var err error
		resp, err = a.client.Heartbeat(cctx, req)
		if status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			return &heartbeatTimeout{err: err}
		}
		return err
	})
	a.logCall(ctx, "Heartbeat", start, err, attempts,
		req.GetNode(), req.GetJobId(), int64(req.GetSetIndex()), req.GetToken(), true)
	if err != nil {
		return nil, a.nodeError(err)
	}
	return resp, nil
}

// ReleaseSet forwards the node giving a set back. It is idempotent, so it is
// retried on Unavailable.
func (a *Ambassador) ReleaseSet(ctx context.Context, req *farmpb.ReleaseSetRequest) (*farmpb.ReleaseSetResponse, error) {
	start := time.Now()
	a.noteNode(req.GetNode())
	var resp *farmpb.ReleaseSetResponse
	attempts, err := a.retryIdempotent(ctx, func(cctx context.Context) error {
		var err error
		resp, err = a.client.ReleaseSet(cctx, req)
		return err
	})
	a.logCall(ctx, "ReleaseSet", start, err, attempts,
		req.GetNode(), req.GetJobId(), int64(req.GetSetIndex()), req.GetToken(), true)
	if err != nil {
		return nil, a.nodeError(err)
	}
	return resp, nil
}

// StreamFrames opens the coordinator's frame stream and copies it to the node
// one message at a time. The breaker covers the whole forwarding. The call has
// the node's deadline, if any, and is not retried.
func (a *Ambassador) StreamFrames(req *farmpb.StreamFramesRequest, node grpc.ServerStreamingServer[farmpb.FrameChunk]) error {
	ctx := node.Context()
	start := time.Now()
	a.noteNode(req.GetNode())
	err := a.probeFirst(ctx, req.GetNode())
	if err == nil {
		err = a.forwardFrames(ctx, req, node)
	}
	a.logCall(ctx, "StreamFrames", start, err, 1,
		req.GetNode(), req.GetJobId(), int64(req.GetSetIndex()), req.GetToken(), true)
	if err != nil {
		return a.nodeError(err)
	}
	return nil
}

func (a *Ambassador) forwardFrames(ctx context.Context, req *farmpb.StreamFramesRequest, node grpc.ServerStreamingServer[farmpb.FrameChunk]) error {
	return a.execute(ctx, func() error {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel() // ends the coordinator stream if we stop early
		up, err := a.client.StreamFrames(cctx, req, grpc.ForceCodecV2(a.codec))
		if err != nil {
			return err
		}
		for {
			var chunk rawMsg
			err := up.RecvMsg(&chunk)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := sendRaw(node, &chunk); err != nil {
				return &nodeSideError{err: err}
			}
		}
	})
}

// rawMsg is a message the ambassador forwards as it arrived, in wire form:
// decoding every frame chunk and encoding it again cost two copies of each
// byte and a fresh 1 MiB allocation per chunk, which made this hop slower
// than the coordinator's own stream.
type rawMsg struct{ data mem.BufferSlice }

// sendRaw sends m on s, and releases m's buffers if gRPC did not take them.
func sendRaw(s interface{ SendMsg(any) error }, m *rawMsg) error {
	err := s.SendMsg(m)
	m.data.Free()
	return err
}

// rawCodec is the protobuf codec, except that a rawMsg is kept as received
// and sent as it is.
type rawCodec struct{ encoding.CodecV2 }

func newRawCodec() rawCodec { return rawCodec{encoding.GetCodecV2(protocodec.Name)} }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	// gRPC frees what Marshal returns once it is written: the reference
	// passes to it.
	data := m.data
	m.data = nil
	return data, nil
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	// gRPC frees data when Unmarshal returns: keep a reference.
	data.Ref()
	m.data = data
	return nil
}

// UploadPart opens the coordinator's upload stream, copies every message of
// the node's upload to it one at a time, and returns the coordinator's
// answer. The breaker covers the whole forwarding. The call has the node's
// deadline, if any, and is not retried.
func (a *Ambassador) UploadPart(node grpc.ClientStreamingServer[farmpb.UploadPartRequest, farmpb.UploadPartResponse]) error {
	ctx := node.Context()
	start := time.Now()
	var header *farmpb.PartHeader
	var resp *farmpb.UploadPartResponse
	// The first message (the header) names the node; it is read before the
	// coordinator is called, so that a half-open breaker can probe first.
	first, err := node.Recv()
	if err != nil {
		if err == io.EOF {
			return status.Error(codes.InvalidArgument, "ambassador: an upload starts with its header")
		}
		return err
	}
	header = first.GetHeader()
	a.noteNode(header.GetNode())
	err = a.probeFirst(ctx, header.GetNode())
	if err == nil {
		err = a.execute(ctx, func() error {
			cctx, cancel := context.WithCancel(ctx)
			defer cancel() // ends the coordinator stream if we stop early
			up, err := a.client.UploadPart(cctx, grpc.ForceCodecV2(a.codec))
			if err != nil {
				return err
			}
			// The header was decoded; the chunks after it go through as
			// they came (see rawMsg).
			err = up.Send(first)
			for err == nil {
				var msg rawMsg
				if rerr := node.RecvMsg(&msg); rerr == io.EOF {
					break
				} else if rerr != nil {
					return &nodeSideError{err: rerr}
				}
				err = sendRaw(up, &msg)
			}
			if err != nil && err != io.EOF {
				return err
			}
			// The stream ended, or the coordinator ended it (io.EOF on
			// send): either way its status says how.
			resp, err = up.CloseAndRecv()
			return err
		})
	}
	a.logCall(ctx, "UploadPart", start, err, 1,
		header.GetNode(), header.GetJobId(), int64(header.GetSetIndex()), header.GetToken(), header != nil)
	if err != nil {
		return a.nodeError(err)
	}
	if err := node.SendAndClose(resp); err != nil {
		return err
	}
	return nil
}

// execute runs fn through the breaker. ctx is the node's context: if the node
// cancelled its call, the failure is excluded from the breaker's counts.
// The returned error is raw (breaker errors and nodeSideError included); pass
// it through nodeError before returning it to the node.
func (a *Ambassador) execute(ctx context.Context, fn func() error) error {
	_, err := a.cb.Load().Execute(func() (struct{}, error) {
		err := a.awaitLink(ctx)
		if err == nil {
			err = fn()
		}
		if err != nil && errors.Is(ctx.Err(), context.Canceled) {
			var ns *nodeSideError
			if !errors.As(err, &ns) {
				err = &nodeSideError{err: err}
			}
		}
		return struct{}{}, err
	})
	return err
}

// retryIdempotent runs call through the breaker under one CallTimeout
// deadline, trying again up to idempotentRetries times when the coordinator
// answers Unavailable, after a jittered pause, while the deadline allows.
// It does not retry when the breaker refuses the call, nor when the
// connection stayed down for LinkWait: that wait was the retry.
func (a *Ambassador) retryIdempotent(ctx context.Context, call func(context.Context) error) (attempts int, err error) {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	for {
		attempts++
		err = a.execute(ctx, func() error { return call(cctx) })
		if err == nil || attempts > idempotentRetries || isBreakerRejection(err) || isLinkDown(err) ||
			status.Code(err) != codes.Unavailable {
			return attempts, err
		}
		wait := retryBackoffMin + rand.N(retryBackoffSpan)
		if dl, ok := cctx.Deadline(); ok && time.Until(dl) <= wait {
			return attempts, err
		}
		t := time.NewTimer(wait)
		select {
		case <-cctx.Done():
			t.Stop()
			return attempts, err
		case <-t.C:
		}
	}
}

// nodeError turns a raw forwarding error into what the node gets: status
// errors from the coordinator unchanged, Unavailable with a retry hint while
// the breaker refuses calls.
func (a *Ambassador) nodeError(err error) error {
	var ns *nodeSideError
	if errors.As(err, &ns) {
		err = ns.err
	}
	var ht *heartbeatTimeout
	if errors.As(err, &ht) {
		err = ht.err
	}
	var down *linkDownError
	switch {
	case errors.As(err, &down):
		// The ambassador has just waited for the coordinator: the node may
		// ask again at once, and its call will wait here again.
		return retryStatus(down.Error(), retryBackoffMin)
	case errors.Is(err, gobreaker.ErrOpenState):
		wait := time.Unix(0, a.openUntil.Load()).Sub(a.cfg.Now())
		if wait < 0 {
			wait = 0
		}
		wait = wait.Round(100 * time.Millisecond)
		return retryStatus(fmt.Sprintf(
			"ambassador: circuit breaker to coordinator %s is open after repeated failures; failing fast, retry in about %s",
			a.cfg.Coordinator, wait), wait)
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		return retryStatus(fmt.Sprintf(
			"ambassador: circuit breaker to coordinator %s is half-open and its probe calls are in flight; retry shortly",
			a.cfg.Coordinator), retryBackoffMin)
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return status.FromContextError(err).Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "ambassador: forwarding to coordinator %s: %v", a.cfg.Coordinator, err)
}

// retryStatus is an Unavailable status with a RetryInfo detail.
func retryStatus(msg string, wait time.Duration) error {
	st := status.New(codes.Unavailable, msg)
	if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = withInfo
	}
	return st.Err()
}

func (a *Ambassador) logCall(ctx context.Context, method string, start time.Time, err error, attempts int,
	node, job string, set int64, token uint64, haveSet bool) {
	if !a.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	code := codes.OK
	if err != nil {
		code = status.Code(a.nodeError(err))
	}
	if !haveSet {
		set = -1
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("node", node),
		slog.String("job", job),
		slog.Int64("set", set),
		slog.Uint64("token", token),
		slog.String("code", code.String()),
		slog.Duration("duration", time.Since(start)),
	}
	if attempts > 1 {
		attrs = append(attrs, slog.Int("attempts", attempts))
	}
	if isBreakerRejection(err) {
		attrs = append(attrs, slog.Bool("breaker_rejected", true))
	}
	a.log.LogAttrs(ctx, slog.LevelDebug, "forwarded call", attrs...)
}

// nodeSideError marks a failure that comes from the node's side of the
// forwarding (the node went away or cancelled): it says nothing about the
// coordinator, so the breaker excludes it.
type nodeSideError struct{ err error }

func (e *nodeSideError) Error() string { return "node side: " + e.err.Error() }
func (e *nodeSideError) Unwrap() error { return e.err }

// heartbeatTimeout marks a heartbeat that got no answer within its deadline
// (the node's, a couple of heartbeat intervals): the coordinator may be
// slow to commit, and a dead link is found by the keepalive and by the
// node's other calls. Counting it would let a busy coordinator open the
// breaker and stop every node's work with it.
type heartbeatTimeout struct{ err error }

func (e *heartbeatTimeout) Error() string { return "heartbeat timed out: " + e.err.Error() }
func (e *heartbeatTimeout) Unwrap() error { return e.err }

// linkDownError is a call that waited LinkWait for the connection to the
// coordinator and never saw it up: a failure of the link, counted by the
// breaker, without a gRPC status of its own (see nodeError).
type linkDownError struct {
	coordinator string
	waited      time.Duration
	state       connectivity.State
}

func (e *linkDownError) Error() string {
	return fmt.Sprintf("ambassador: coordinator %s is not reachable: no connection after waiting %s (%s); is it running and listening there?",
		e.coordinator, e.waited, e.state)
}

func isLinkDown(err error) bool {
	var down *linkDownError
	return errors.As(err, &down)
}

func isBreakerRejection(err error) bool {
	return errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
}

// isSuccessful reports whether err means the coordinator was reached and
// answered: only transport-level failures count against the breaker.
func isSuccessful(err error) bool {
	if err == nil {
		return true
	}
	st, ok := status.FromError(err)
	if !ok {
		return false // not a gRPC answer: a transport or local failure
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return false
	default:
		return true
	}
}

// isExcluded reports whether err is the node's own cancellation, which says
// nothing about the link to the coordinator.
func isExcluded(err error) bool {
	var ns *nodeSideError
	if errors.As(err, &ns) {
		return true
	}
	var ht *heartbeatTimeout
	if errors.As(err, &ht) {
		return true
	}
	return errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
}

// noteNode remembers a node name seen in a call, for breaker reports.
func (a *Ambassador) noteNode(name string) {
	if name == "" {
		return
	}
	a.namesMu.Lock()
	defer a.namesMu.Unlock()
	for i, n := range a.names {
		if n == name {
			a.names = append(append(a.names[:i:i], a.names[i+1:]...), name)
			return
		}
	}
	a.names = append(a.names, name)
	if len(a.names) > maxReportedNodes {
		a.names = append([]string(nil), a.names[len(a.names)-maxReportedNodes:]...)
	}
}

func (a *Ambassador) nodeNames() []string {
	a.namesMu.Lock()
	defer a.namesMu.Unlock()
	return append([]string(nil), a.names...)
}

// report tells the coordinator the breaker's state in the name of each
// node seen: a Heartbeat that holds no lease (no job, token 0), which the
// coordinator records for status and answers at once. Through the breaker
// it is a probe; direct, it goes out while the breaker is open and must be
// rare (the report loop sees to that).
func (a *Ambassador) report(ctx context.Context, names []string, throughBreaker bool) error {
	for _, name := range names {
		call := func() error {
			cctx, cancel := context.WithTimeout(ctx, reportTimeout)
			defer cancel()
			_, err := a.client.Heartbeat(cctx, &farmpb.HeartbeatRequest{Node: name, Breaker: a.BreakerState().Info()})
			return err
		}
		var err error
		if throughBreaker {
			err = a.execute(ctx, call)
		} else {
			err = call()
		}
		if err != nil && !isSuccessful(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// probeFirst makes a cheap probe when the breaker is half-open, before a
// call that may take long (a long poll, a stream): otherwise that call would
// be the probe and hold the breaker half-open, refusing every other call,
// for as long as it lasts.
func (a *Ambassador) probeFirst(ctx context.Context, node string) error {
	if node == "" || a.cb.Load().State() != gobreaker.StateHalfOpen {
		return nil
	}
	err := a.report(ctx, []string{node}, true)
	if err != nil && !isBreakerRejection(err) {
		a.log.Debug("probe before a long call failed", slog.String("node", node), slog.String("err", err.Error()))
	}
	return err
}

// reportLoop keeps the coordinator informed of the breaker's state, and
// lets the breaker close as soon as the coordinator is back:
//   - it reports every change of state (so that status shows a node's
//     breaker open while it is), as soon as the connection to the
//     coordinator is up: a report waits for the connection rather than fail
//     on it, and a connection that comes back wakes the loop at once;
//   - a report that reached the coordinator and failed is tried again only
//     every few intervals: a coordinator that answers badly is not hammered;
//   - once the breaker is half-open, it probes the coordinator with a
//     report through the breaker (when the connection is up), rather than
//     wait for a node's call to do it.
func (a *Ambassador) reportLoop(ctx context.Context) {
	if a.cfg.ReportInterval < 0 {
		return
	}
	t := time.NewTicker(a.cfg.ReportInterval)
	defer t.Stop()
	reported := "closed" // what the coordinator last heard from us
	var tried string     // the state of the last failed report
	var triedAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.stateChanged:
		case <-a.linkUp:
			tried = "" // a new connection: report again at once
		}
		names := a.nodeNames()
		if len(names) == 0 {
			continue
		}
		if st := a.conn.GetState(); st != connectivity.Ready {
			if st == connectivity.Idle {
				a.conn.Connect()
			}
			continue // a report or probe now could only fail; linkUp wakes us
		}
		state := a.cb.Load().State()
		switch {
		case state == gobreaker.StateHalfOpen:
			if err := a.report(ctx, names, true); err == nil {
				reported = state.String()
			}
			continue
		case state.String() == reported:
			continue
		case state.String() == tried && a.cfg.Now().Sub(triedAt) < reportRetryTicks*a.cfg.ReportInterval:
			continue
		}
		err := a.report(ctx, names, state == gobreaker.StateClosed)
		if err == nil {
			reported, tried = state.String(), ""
			continue
		}
		tried, triedAt = state.String(), a.cfg.Now()
		a.log.Debug("breaker report failed", slog.String("state", state.String()), slog.String("err", err.Error()))
	}
}

// watchLink follows the connection to the coordinator. Each time it comes
// up, the report loop is woken, and a breaker that is not closed is
// replaced with a fresh one: it opened while the coordinator could not be
// reached (not started yet, restarting), and the coordinator is back, so
// making the node wait out OpenTimeout or a probe would only delay its
// first set. A coordinator that is up and answers badly keeps the
// connection up, so the breaker still opens and stays open on it.
func (a *Ambassador) watchLink(ctx context.Context) {
	for st := a.conn.GetState(); ; {
		if !a.conn.WaitForStateChange(ctx, st) {
			return
		}
		if st = a.conn.GetState(); st != connectivity.Ready {
			continue
		}
		a.freshBreaker()
		select {
		case a.linkUp <- struct{}{}:
		default:
		}
	}
}

// freshBreaker replaces the breaker with a closed one unless it is closed.
func (a *Ambassador) freshBreaker() {
	old := a.cb.Load()
	from := old.State()
	if from == gobreaker.StateClosed || !a.cb.CompareAndSwap(old, a.newBreaker()) {
		return
	}
	select {
	case a.stateChanged <- struct{}{}:
	default:
	}
	a.log.Info("circuit breaker state changed",
		slog.String("coordinator", a.cfg.Coordinator),
		slog.String("from", from.String()),
		slog.String("to", gobreaker.StateClosed.String()),
		slog.String("why", "the connection to the coordinator is up again"))
}

// awaitLink waits up to LinkWait for the connection to the coordinator to
// be up, so that a call made while the coordinator is starting or
// restarting goes through once it listens instead of failing at once and
// counting against the breaker. It returns a *linkDownError if the
// connection did not come up, and ctx's error if the node cancelled.
func (a *Ambassador) awaitLink(ctx context.Context) error {
	st := a.conn.GetState()
	if st == connectivity.Ready || a.cfg.LinkWait < 0 {
		return nil
	}
	start := a.cfg.Now()
	wctx, cancel := context.WithTimeout(ctx, a.cfg.LinkWait)
	defer cancel()
	for ; st != connectivity.Ready; st = a.conn.GetState() {
		if st == connectivity.Idle {
			a.conn.Connect()
		}
		if !a.conn.WaitForStateChange(wctx, st) {
			if errors.Is(ctx.Err(), context.Canceled) {
				return ctx.Err()
			}
			// LinkWait or the node's own deadline ran out: either way the
			// coordinator could not be reached meanwhile.
			return &linkDownError{coordinator: a.cfg.Coordinator,
				waited: a.cfg.Now().Sub(start).Round(time.Millisecond), state: a.conn.GetState()}
		}
	}
	return nil
}
