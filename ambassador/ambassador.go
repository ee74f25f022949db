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
// breaker is open and the coordinator can be reached, calls fail fast with
// Unavailable and a message that says when to try again.
//
// Start order: a call made while the connection to the coordinator is down
// (not started yet, restarting) waits for it up to LinkWait before it fails
// and counts (when the breaker is open already, it waits without counting);
// the connection is tried again every 100-400ms; and a breaker found open
// when the connection comes up is replaced with a closed one, so that nodes
// started before the coordinator get work as soon as it listens.
package ambassador

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/framefarm/framefarm/internal/chunk"
	"github.com/framefarm/framefarm/internal/framebuf"
	"github.com/framefarm/framefarm/internal/link"
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

// Ambassador serves farmpb.NodeService to the node and forwards each call to
// the coordinator through a circuit breaker. Create it with New and start it
// with Run.
type Ambassador struct {
	farmpb.UnimplementedNodeServiceServer

	cfg    Config
	log    *slog.Logger
	conn   *grpc.ClientConn
	client farmpb.NodeServiceClient
	// beats carries the heartbeats on a connection of their own: on a
	// slow link, a heartbeat on the frames' connection waits behind
	// their HTTP/2 frames and write buffers, and its set's lease expires
	// while its node works.
	beatConn *grpc.ClientConn
	beats    farmpb.NodeServiceClient
	// rtt is the smoothed round trip of the heartbeats, in nanoseconds,
	// sent with each so that the coordinator allows for it.
	rtt   atomic.Int64
	codec chunk.Codec
	pool  *framebuf.Pool

	// cb is the current breaker: the link watch replaces it with a fresh
	// one when the connection comes up while it is not closed (see
	// freshBreaker).
	cb atomic.Pointer[gobreaker.CircuitBreaker[struct{}]]
	// linkUp wakes the report loop when the connection comes up.
	linkUp chan struct{}
	// linkDownSinceOpen says the connection was down when the current
	// breaker opened or has been down since: only such a breaker is
	// replaced when the link comes up. The link watch may see the first
	// connection come up after bad answers on it have already opened the
	// breaker, and must not close that breaker.
	linkDownSinceOpen atomic.Bool

	// openUntil is when the breaker, opened last, lets a probe through;
	// written by the breaker's OnStateChange. A time.Time from the clock
	// keeps its monotonic reading, so the hints computed from it do not
	// move when the wall clock is stepped.
	openUntil atomic.Pointer[time.Time]
	// opens counts the breaker's opens; written by OnStateChange.
	opens atomic.Uint32
	// stateChanged wakes the report loop on a breaker state change.
	stateChanged chan struct{}

	// names are the node names seen in calls, most recent last: breaker
	// reports are sent in their name.
	namesMu sync.Mutex
	names   []string

	metrics *metrics

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
		codec:        chunk.NewCodec(),
		pool:         &framebuf.Pool{},
	}
	a.addr.Store("")
	a.metrics = newMetrics(a)

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
		// Within about half a second of the coordinator listening, however
		// long it was away; trying every 400ms during an outage is cheap.
		grpc.WithConnectParams(link.Params(400*time.Millisecond, 5*time.Second)),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMsgSize),
			grpc.MaxCallSendMsgSize(maxMsgSize),
		),
		experimental.WithBufferPool(a.pool),
	}
	conn, err := grpc.NewClient(cfg.Coordinator, append(append(opts[:len(opts):len(opts)], TransportOptions()...), cfg.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("ambassador: coordinator address %q: %w", cfg.Coordinator, err)
	}
	a.conn = conn
	a.client = farmpb.NewNodeServiceClient(conn)
	// gRPC's default windows and buffers: heartbeats are small.
	beatConn, err := grpc.NewClient(cfg.Coordinator, append(opts[:len(opts):len(opts)], cfg.DialOptions...)...)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ambassador: coordinator address %q: %w", cfg.Coordinator, err)
	}
	a.beatConn = beatConn
	a.beats = farmpb.NewNodeServiceClient(beatConn)

	a.cb.Store(a.newBreaker())
	return a, nil
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
	defer a.beatConn.Close()

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
		grpc.ChainUnaryInterceptor(a.metrics.grpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.metrics.grpc.StreamServerInterceptor()),
	)
	farmpb.RegisterNodeServiceServer(srv, a)
	// The standard health service, for Kubernetes' probes: SERVING while
	// the ambassador serves, whatever its breaker says (an outage of the
	// coordinator is no reason to restart its sidecars).
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	for name := range srv.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	a.metrics.grpc.InitializeMetrics(srv)

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
	hs.Shutdown()

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
