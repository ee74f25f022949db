package ambassador

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	farmpb "github.com/framefarm/framefarm/proto"
)

// fakeCoord is a coordinator the test controls.
type fakeCoord struct {
	farmpb.UnimplementedNodeServiceServer

	acquireCalls, heartbeatCalls, streamCalls, uploadCalls, releaseCalls atomic.Int64

	mu         sync.Mutex
	acquireErr error // returned by AcquireSet only, while set
	hbStates   []string
	err        error // returned by every call while set (and failLeft > 0 if failLeft was set)
	failLeft   int   // if > 0, err is returned only this many more times
	block      bool  // unary calls wait for their context to end
	delay      time.Duration
	acquire    *farmpb.AcquireSetResponse
	chunks     []*farmpb.FrameChunk
	lastHB     *farmpb.HeartbeatRequest
	lastRel    *farmpb.ReleaseSetRequest
	lastSF     *farmpb.StreamFramesRequest
	upHeader   *farmpb.PartHeader
	upData     []byte
	upTrailer  *farmpb.PartTrailer
	upMsgs     int
}

func (f *fakeCoord) total() int64 {
	return f.acquireCalls.Load() + f.heartbeatCalls.Load() + f.streamCalls.Load() +
		f.uploadCalls.Load() + f.releaseCalls.Load()
}

func (f *fakeCoord) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.failLeft = err, 0
}

func (f *fakeCoord) failNext(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.failLeft = err, n
}

// answer returns the error to fail the call with, after any configured
// blocking or delay.
func (f *fakeCoord) answer(ctx context.Context) error {
	f.mu.Lock()
	block, delay := f.block, f.delay
	err := f.err
	if err != nil && f.failLeft > 0 {
		f.failLeft--
		if f.failLeft == 0 {
			f.err = nil
		}
	}
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return err
}

func (f *fakeCoord) AcquireSet(ctx context.Context, _ *farmpb.AcquireSetRequest) (*farmpb.AcquireSetResponse, error) {
	f.acquireCalls.Add(1)
	if err := f.answer(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.acquireErr != nil {
		return nil, f.acquireErr
	}
	if f.acquire != nil {
		return f.acquire, nil
	}
	return &farmpb.AcquireSetResponse{Result: &farmpb.AcquireSetResponse_RetryAfterMs{RetryAfterMs: 500}}, nil
}

func (f *fakeCoord) Heartbeat(ctx context.Context, req *farmpb.HeartbeatRequest) (*farmpb.HeartbeatResponse, error) {
	f.heartbeatCalls.Add(1)
	f.mu.Lock()
	f.lastHB = req
	f.hbStates = append(f.hbStates, req.GetBreaker().GetState())
	f.mu.Unlock()
	if err := f.answer(ctx); err != nil {
		return nil, err
	}
	return &farmpb.HeartbeatResponse{}, nil
}

func (f *fakeCoord) ReleaseSet(ctx context.Context, req *farmpb.ReleaseSetRequest) (*farmpb.ReleaseSetResponse, error) {
	f.releaseCalls.Add(1)
	if err := f.answer(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.lastRel = req
	f.mu.Unlock()
	return &farmpb.ReleaseSetResponse{}, nil
}

func (f *fakeCoord) StreamFrames(req *farmpb.StreamFramesRequest, s grpc.ServerStreamingServer[farmpb.FrameChunk]) error {
	f.streamCalls.Add(1)
	if err := f.answer(s.Context()); err != nil {
		return err
	}
	f.mu.Lock()
	f.lastSF = req
	chunks := f.chunks
	f.mu.Unlock()
	for _, c := range chunks {
		if err := s.Send(c); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeCoord) UploadPart(s grpc.ClientStreamingServer[farmpb.UploadPartRequest, farmpb.UploadPartResponse]) error {
	f.uploadCalls.Add(1)
	if err := f.answer(s.Context()); err != nil {
		return err
	}
	var (
		header  *farmpb.PartHeader
		trailer *farmpb.PartTrailer
		data    []byte
		n       int
	)
	for {
		m, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		n++
		switch {
		case m.GetHeader() != nil:
			header = m.GetHeader()
		case m.GetTrailer() != nil:
			trailer = m.GetTrailer()
		default:
			data = append(data, m.GetChunk()...)
		}
	}
	sum := sha256.Sum256(data)
	if trailer == nil || !bytes.Equal(sum[:], trailer.GetSha256()) {
		return status.Error(codes.InvalidArgument, "checksum mismatch")
	}
	f.mu.Lock()
	f.upHeader, f.upData, f.upTrailer, f.upMsgs = header, data, trailer, n
	f.mu.Unlock()
	return s.SendAndClose(&farmpb.UploadPartResponse{})
}

// startFake serves f on a loopback port; the returned stop stops the server.
func startFake(t testing.TB, f *fakeCoord) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 10 * time.Second, PermitWithoutStream: true,
	}))
	farmpb.RegisterNodeServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// lockedBuffer is a log sink safe to read while the ambassador writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type harness struct {
	amb    *Ambassador
	client farmpb.NodeServiceClient
	conn   *grpc.ClientConn
	logs   *lockedBuffer
	cancel context.CancelFunc
	runErr chan error
}

// startAmb runs an ambassador in front of coordAddr and connects a node
// client to it. Everything is torn down at the end of the test.
func startAmb(t testing.TB, coordAddr string, mod func(*Config)) *harness {
	t.Helper()
	logs := &lockedBuffer{}
	cfg := Config{
		Coordinator: coordAddr,
		Listen:      "127.0.0.1:0",
		Logger:      slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		CallTimeout: 3 * time.Second,
		Breaker:     BreakerConfig{TripAfter: 3, OpenTimeout: 200 * time.Millisecond},
		// Reports and proactive probes would add calls the tests count;
		// the tests of the report loop turn them on.
		ReportInterval: -1,
	}
	if mod != nil {
		mod(&cfg)
	}
	amb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- amb.Run(ctx) }()
	select {
	case <-amb.Ready():
	case err := <-runErr:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatal("ambassador not ready after 5s")
	}
	conn, err := grpc.NewClient(amb.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h := &harness{amb: amb, client: farmpb.NewNodeServiceClient(conn), conn: conn, logs: logs, cancel: cancel, runErr: runErr}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		select {
		case <-runErr:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pattern returns n deterministic, non-repeating-looking bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func doStream(ctx context.Context, c farmpb.NodeServiceClient, req *farmpb.StreamFramesRequest) ([]*farmpb.FrameChunk, error) {
	s, err := c.StreamFrames(ctx, req)
	if err != nil {
		return nil, err
	}
	var got []*farmpb.FrameChunk
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

func doUpload(ctx context.Context, c farmpb.NodeServiceClient, hdr *farmpb.PartHeader, data []byte, chunk int) error {
	s, err := c.UploadPart(ctx)
	if err != nil {
		return err
	}
	send := func(m *farmpb.UploadPartRequest) error {
		if err := s.Send(m); err != nil && err != io.EOF {
			return err
		}
		return nil
	}
	if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Header{Header: hdr}}); err != nil {
		return err
	}
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Chunk{Chunk: data[off:end]}}); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(data)
	if err := send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Trailer{Trailer: &farmpb.PartTrailer{Sha256: sum[:]}}}); err != nil {
		return err
	}
	_, err = s.CloseAndRecv()
	return err
}

func TestNewConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a coordinator address: want an error")
	}
	a, err := New(Config{Coordinator: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.conn.Close()
	c := a.cfg
	if c.Listen != DefaultListen || c.CallTimeout != 10*time.Second || c.AcquireTimeout != 60*time.Second ||
		c.Breaker.MaxRequests != 1 || c.Breaker.OpenTimeout != 5*time.Second || c.Breaker.TripAfter != 5 ||
		c.Breaker.Interval != 0 || c.LinkWait != DefaultLinkWait || c.Now == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if a.Addr() != "" {
		t.Fatalf("Addr before Run = %q, want empty", a.Addr())
	}
	if got := a.BreakerState(); got.State != "closed" || got.Requests != 0 {
		t.Fatalf("initial breaker = %+v", got)
	}
}

func TestPassThrough(t *testing.T) {
	f := &fakeCoord{}
	f.acquire = &farmpb.AcquireSetResponse{Result: &farmpb.AcquireSetResponse_Assignment{Assignment: &farmpb.Assignment{
		JobId: "job1", SetIndex: 3, Token: 42, HeartbeatIntervalMs: 2000,
		Frames:   []*farmpb.FrameInfo{{Number: 101, Name: "f_0101.png", Size: 12345}, {Number: 102, Name: "f_0102.png", Size: 999}},
		Settings: &farmpb.EncodeSettings{Codec: "libx264", FpsNum: 24000, FpsDen: 1001, Crf: 18, PartExt: "mp4"},
	}}}
	// Three frames, the first in three chunks of up to 1 MiB.
	f.chunks = []*farmpb.FrameChunk{
		{Position: 0, Data: pattern(1<<20, 1)},
		{Position: 0, Data: pattern(1<<20, 2)},
		{Position: 0, Data: pattern(1000, 3), Last: true},
		{Position: 1, Data: pattern(70_000, 4), Last: true},
		{Position: 2, Data: nil, Last: true},
	}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, nil)
	ctx := testCtx(t)

	tests := []struct {
		name  string
		call  func() error
		count *atomic.Int64
		check func(t *testing.T)
	}{
		{
			name: "AcquireSet",
			call: func() error {
				resp, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
				if err == nil && !proto.Equal(resp, f.acquire) {
					t.Errorf("AcquireSet response = %v, want %v", resp, f.acquire)
				}
				return err
			},
			count: &f.acquireCalls,
		},
		{
			name: "Heartbeat",
			call: func() error {
				_, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{
					Node: "n1", JobId: "job1", SetIndex: 3, Token: 42, FramesDone: 17, CpuLoad: 0.75, FreeCores: 2.5})
				return err
			},
			count: &f.heartbeatCalls,
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				hb := f.lastHB
				if hb.GetNode() != "n1" || hb.GetJobId() != "job1" || hb.GetSetIndex() != 3 || hb.GetToken() != 42 ||
					hb.GetFramesDone() != 17 || hb.GetCpuLoad() != 0.75 || hb.GetFreeCores() != 2.5 {
					t.Errorf("coordinator got heartbeat %v", hb)
				}
			},
		},
		{
			name: "StreamFrames",
			call: func() error {
				got, err := doStream(ctx, h.client, &farmpb.StreamFramesRequest{Node: "n1", JobId: "job1", SetIndex: 3, Token: 42})
				if err != nil {
					return err
				}
				if len(got) != len(f.chunks) {
					t.Fatalf("got %d chunks, want %d", len(got), len(f.chunks))
				}
				for i := range got {
					if !proto.Equal(got[i], f.chunks[i]) {
						t.Errorf("chunk %d differs (position %d/%d, %d/%d bytes, last %v/%v)", i,
							got[i].Position, f.chunks[i].Position, len(got[i].Data), len(f.chunks[i].Data), got[i].Last, f.chunks[i].Last)
					}
				}
				return nil
			},
			count: &f.streamCalls,
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.lastSF.GetJobId() != "job1" || f.lastSF.GetToken() != 42 || f.lastSF.GetSetIndex() != 3 {
					t.Errorf("coordinator got stream request %v", f.lastSF)
				}
			},
		},
		{
			name: "UploadPart",
			call: func() error {
				data := pattern(3<<20+12345, 9)
				return doUpload(ctx, h.client, &farmpb.PartHeader{Node: "n1", JobId: "job1", SetIndex: 3, Token: 42,
					Size: int64(len(data)), Frames: 48, EncodeMs: 1234}, data, 512<<10)
			},
			count: &f.uploadCalls,
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				want := pattern(3<<20+12345, 9)
				if !bytes.Equal(f.upData, want) {
					t.Errorf("coordinator got %d upload bytes, not the %d sent", len(f.upData), len(want))
				}
				if f.upHeader.GetSize() != int64(len(want)) || f.upHeader.GetFrames() != 48 || f.upHeader.GetToken() != 42 {
					t.Errorf("coordinator got header %v", f.upHeader)
				}
				if wantMsgs := 1 + 7 + 1; f.upMsgs != wantMsgs {
					t.Errorf("coordinator got %d upload messages, want %d", f.upMsgs, wantMsgs)
				}
			},
		},
		{
			name: "ReleaseSet",
			call: func() error {
				_, err := h.client.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: "n1", JobId: "job1", SetIndex: 3, Token: 42, Error: "ffmpeg exit 1"})
				return err
			},
			count: &f.releaseCalls,
			check: func(t *testing.T) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.lastRel.GetError() != "ffmpeg exit 1" || f.lastRel.GetToken() != 42 {
					t.Errorf("coordinator got release %v", f.lastRel)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.count.Load()
			if err := tc.call(); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if got := tc.count.Load() - before; got != 1 {
				t.Errorf("coordinator saw %d %s calls, want 1", got, tc.name)
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
	if got := h.amb.BreakerState(); got.State != "closed" || got.Requests != 5 || got.TotalSuccesses != 5 || got.TotalFailures != 0 {
		t.Errorf("breaker after 5 good calls = %+v", got)
	}
	logs := h.logs.String()
	for _, want := range []string{`"method":"UploadPart"`, `"node":"n1"`, `"job":"job1"`, `"set":3`, `"token":42`, `"code":"OK"`, `"duration":`} {
		if !strings.Contains(logs, want) {
			t.Errorf("debug log lacks %s:\n%s", want, logs)
		}
	}
}

func TestStatusPassThrough(t *testing.T) {
	f := &fakeCoord{}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, nil)
	ctx := testCtx(t)

	calls := map[string]func() error{
		"AcquireSet": func() error { _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); return err },
		"Heartbeat":  func() error { _, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1"}); return err },
		"ReleaseSet": func() error { _, err := h.client.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: "n1"}); return err },
		"StreamFrames": func() error {
			_, err := doStream(ctx, h.client, &farmpb.StreamFramesRequest{Node: "n1"})
			return err
		},
		"UploadPart": func() error {
			return doUpload(ctx, h.client, &farmpb.PartHeader{Node: "n1"}, pattern(100_000, 1), 32<<10)
		},
	}
	codesToTry := []codes.Code{codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.AlreadyExists,
		codes.Unauthenticated, codes.PermissionDenied, codes.Internal}
	for _, code := range codesToTry {
		for name, call := range calls {
			t.Run(code.String()+"/"+name, func(t *testing.T) {
				msg := "coordinator says " + code.String() + " to " + name
				f.setErr(status.Error(code, msg))
				before := f.total()
				err := call()
				st, _ := status.FromError(err)
				if st.Code() != code || st.Message() != msg {
					t.Errorf("node got (%v, %q), want (%v, %q)", st.Code(), st.Message(), code, msg)
				}
				if got := f.total() - before; got != 1 {
					t.Errorf("coordinator saw %d calls, want exactly 1 (no retry)", got)
				}
			})
		}
	}

	t.Run("FailedPrecondition x20 does not trip", func(t *testing.T) {
		f.setErr(status.Error(codes.FailedPrecondition, "stale token 7, current 9"))
		before := f.heartbeatCalls.Load()
		for i := range 20 {
			_, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1", Token: 7})
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("call %d: got %v, want FailedPrecondition", i, err)
			}
		}
		if got := f.heartbeatCalls.Load() - before; got != 20 {
			t.Errorf("coordinator saw %d heartbeats, want 20", got)
		}
		if got := h.amb.BreakerState(); got.State != "closed" || got.ConsecutiveFailures != 0 || got.TotalFailures != 0 {
			t.Errorf("breaker = %+v, want closed with no failures", got)
		}
	})
}

// retryDelay returns the RetryInfo delay of err, or -1.
func retryDelay(err error) time.Duration {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return -1
}

func TestBreakerTripsAndRecovers(t *testing.T) {
	f := &fakeCoord{}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, func(c *Config) {
		c.Breaker = BreakerConfig{TripAfter: 4, OpenTimeout: 200 * time.Millisecond}
	})
	ctx := testCtx(t)
	acquire := func() error {
		_, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
		return err
	}

	f.setErr(status.Error(codes.Unavailable, "coordinator overloaded"))
	for i := range 4 {
		err := acquire()
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != "coordinator overloaded" {
			t.Fatalf("call %d: got %v, want the coordinator's Unavailable", i, err)
		}
		if want := "closed"; i < 3 && h.amb.BreakerState().State != want {
			t.Fatalf("after %d failures breaker is %s, want %s", i+1, h.amb.BreakerState().State, want)
		}
	}
	if got := f.acquireCalls.Load(); got != 4 {
		t.Fatalf("coordinator saw %d calls, want 4 (AcquireSet is not retried)", got)
	}
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("after 4 failures breaker is %s, want open", got)
	}

	// Open: fail fast, without reaching the coordinator, whatever the call.
	fast := map[string]func() error{
		"AcquireSet": acquire,
		"Heartbeat":  func() error { _, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1"}); return err },
		"ReleaseSet": func() error { _, err := h.client.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: "n1"}); return err },
		"StreamFrames": func() error {
			_, err := doStream(ctx, h.client, &farmpb.StreamFramesRequest{Node: "n1"})
			return err
		},
		"UploadPart": func() error { return doUpload(ctx, h.client, &farmpb.PartHeader{Node: "n1"}, pattern(1000, 1), 100) },
	}
	for name, call := range fast {
		start := time.Now()
		err := call()
		took := time.Since(start)
		st, _ := status.FromError(err)
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "circuit breaker") || !strings.Contains(st.Message(), "open") {
			t.Errorf("%s while open: got %v, want Unavailable saying the circuit breaker is open", name, err)
		}
		if !strings.Contains(st.Message(), "retry in about") {
			t.Errorf("%s while open: message %q does not say when to retry", name, st.Message())
		}
		if d := retryDelay(err); d < 0 || d > 200*time.Millisecond {
			t.Errorf("%s while open: RetryInfo delay = %v, want within [0, 200ms]", name, d)
		}
		if took > 2*time.Second { // fast next to the open timeout; generous for a loaded machine
			t.Errorf("%s while open took %v, want a fast failure", name, took)
		}
	}
	if got := f.total(); got != 4 {
		t.Fatalf("coordinator saw %d calls in total, want still 4 while the breaker is open", got)
	}

	// Half-open: a long call (here the AcquireSet long poll) is preceded by
	// a cheap probe, a Heartbeat, so that it does not hold the breaker
	// half-open for as long as it lasts. A failing probe: open again, and
	// the long call never reaches the coordinator.
	time.Sleep(250 * time.Millisecond)
	if got := h.amb.BreakerState().State; got != "half-open" {
		t.Fatalf("after OpenTimeout breaker is %s, want half-open", got)
	}
	if err := acquire(); status.Code(err) != codes.Unavailable {
		t.Fatalf("failing probe: got %v", err)
	}
	if a, hb := f.acquireCalls.Load(), f.heartbeatCalls.Load(); a != 4 || hb != 1 {
		t.Fatalf("coordinator saw %d AcquireSet and %d Heartbeat calls, want 4 and 1 (one probe)", a, hb)
	}
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("after a failed probe breaker is %s, want open", got)
	}

	// Half-open probe that succeeds: closed, and the long call goes on.
	f.setErr(nil)
	time.Sleep(250 * time.Millisecond)
	if err := acquire(); err != nil {
		t.Fatalf("probe after recovery: %v", err)
	}
	if a, hb := f.acquireCalls.Load(), f.heartbeatCalls.Load(); a != 5 || hb != 2 {
		t.Fatalf("coordinator saw %d AcquireSet and %d Heartbeat calls, want 5 and 2", a, hb)
	}
	f.mu.Lock()
	probe := f.lastHB
	f.mu.Unlock()
	if probe.GetNode() != "n1" || probe.GetToken() != 0 || probe.GetJobId() != "" || probe.GetBreaker().GetState() != "half-open" {
		t.Errorf("probe = %v, want a lease-less heartbeat of n1 carrying the half-open state", probe)
	}
	if got := h.amb.BreakerState(); got.State != "closed" || got.ConsecutiveFailures != 0 {
		t.Fatalf("after a good probe breaker = %+v, want closed", got)
	}
	for i := range 3 {
		if err := acquire(); err != nil {
			t.Fatalf("call %d after recovery: %v", i, err)
		}
	}
	if got := f.acquireCalls.Load(); got != 8 {
		t.Fatalf("coordinator saw %d calls, want 8", got)
	}
	logs := h.logs.String()
	for _, want := range []string{`"from":"closed","to":"open"`, `"from":"open","to":"half-open"`, `"from":"half-open","to":"open"`, `"from":"half-open","to":"closed"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks state change %s", want)
		}
	}
	// Once closed again it still tells that it opened: the first trip and
	// the failed probe.
	if got := h.amb.BreakerState(); got.Opens != 2 || got.LastOpened.IsZero() {
		t.Errorf("breaker counted %d opens, last at %v; want 2 and a time", got.Opens, got.LastOpened)
	} else if info := got.Info(); info.Opens != 2 || info.LastOpenedUnixMs != got.LastOpened.UnixMilli() {
		t.Errorf("the report carries %d opens at %d ms, want 2 at %d", info.Opens, info.LastOpenedUnixMs, got.LastOpened.UnixMilli())
	} else if until := h.amb.openUntil.Load(); until == nil || !strings.Contains(until.String(), " m=") {
		// The retry hints are computed from it: on the monotonic clock, a
		// wall clock stepped back does not make nodes wait the step.
		t.Errorf("the breaker's open period ends at %v, without the clock's monotonic reading", until)
	}
}

func TestRetries(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "try again")
	tests := []struct {
		name      string
		failNext  int // -1: fail always
		err       error
		call      func(h *harness, ctx context.Context) error
		counter   func(f *fakeCoord) int64
		wantCode  codes.Code
		wantCalls int64
	}{
		{"Heartbeat recovers on 3rd attempt", 2, unavailable,
			func(h *harness, ctx context.Context) error {
				_, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1"})
				return err
			}, func(f *fakeCoord) int64 { return f.heartbeatCalls.Load() }, codes.OK, 3},
		{"ReleaseSet recovers on 2nd attempt", 1, unavailable,
			func(h *harness, ctx context.Context) error {
				_, err := h.client.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: "n1"})
				return err
			}, func(f *fakeCoord) int64 { return f.releaseCalls.Load() }, codes.OK, 2},
		{"Heartbeat gives up after 3 attempts", -1, unavailable,
			func(h *harness, ctx context.Context) error {
				_, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1"})
				return err
			}, func(f *fakeCoord) int64 { return f.heartbeatCalls.Load() }, codes.Unavailable, 3},
		{"Heartbeat not retried on ResourceExhausted", -1, status.Error(codes.ResourceExhausted, "slow down"),
			func(h *harness, ctx context.Context) error {
				_, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1"})
				return err
			}, func(f *fakeCoord) int64 { return f.heartbeatCalls.Load() }, codes.ResourceExhausted, 1},
		{"AcquireSet not retried", -1, unavailable,
			func(h *harness, ctx context.Context) error {
				_, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
				return err
			}, func(f *fakeCoord) int64 { return f.acquireCalls.Load() }, codes.Unavailable, 1},
		{"StreamFrames not retried", -1, unavailable,
			func(h *harness, ctx context.Context) error {
				_, err := doStream(ctx, h.client, &farmpb.StreamFramesRequest{Node: "n1"})
				return err
			}, func(f *fakeCoord) int64 { return f.streamCalls.Load() }, codes.Unavailable, 1},
		{"UploadPart not retried", -1, unavailable,
			func(h *harness, ctx context.Context) error {
				return doUpload(ctx, h.client, &farmpb.PartHeader{Node: "n1"}, pattern(1000, 1), 100)
			}, func(f *fakeCoord) int64 { return f.uploadCalls.Load() }, codes.Unavailable, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCoord{}
			if tc.failNext < 0 {
				f.setErr(tc.err)
			} else {
				f.failNext(tc.failNext, tc.err)
			}
			addr, _ := startFake(t, f)
			h := startAmb(t, addr, func(c *Config) { c.Breaker.TripAfter = 10 })
			start := time.Now()
			err := tc.call(h, testCtx(t))
			if status.Code(err) != tc.wantCode {
				t.Errorf("got %v, want code %v", err, tc.wantCode)
			}
			if got := tc.counter(f); got != tc.wantCalls {
				t.Errorf("coordinator saw %d calls, want %d", got, tc.wantCalls)
			}
			if minWait := time.Duration(tc.wantCalls-1) * retryBackoffMin; time.Since(start) < minWait {
				t.Errorf("took %v, want at least %v of backoff", time.Since(start), minWait)
			}
			wantFailures := uint32(tc.wantCalls)
			if tc.failNext >= 0 {
				wantFailures = uint32(tc.failNext)
			}
			if got := h.amb.BreakerState(); got.TotalFailures != wantFailures || got.Requests != uint32(tc.wantCalls) {
				t.Errorf("breaker = %+v, want %d requests, %d failures", got, tc.wantCalls, wantFailures)
			}
		})
	}

	t.Run("retries stop when the breaker opens", func(t *testing.T) {
		f := &fakeCoord{}
		f.setErr(unavailable)
		addr, _ := startFake(t, f)
		h := startAmb(t, addr, func(c *Config) { c.Breaker = BreakerConfig{TripAfter: 5, OpenTimeout: 10 * time.Second} })
		ctx := testCtx(t)
		for range 2 {
			_, _ = h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1"})
		}
		// 3 attempts, then 2 more trip the breaker and the third is refused.
		if got := f.heartbeatCalls.Load(); got != 5 {
			t.Errorf("coordinator saw %d heartbeats, want 5", got)
		}
		if got := h.amb.BreakerState().State; got != "open" {
			t.Errorf("breaker is %s, want open", got)
		}
	})

	t.Run("retries stay within CallTimeout", func(t *testing.T) {
		f := &fakeCoord{}
		f.setErr(unavailable)
		addr, _ := startFake(t, f)
		h := startAmb(t, addr, func(c *Config) { c.CallTimeout = 150 * time.Millisecond; c.Breaker.TripAfter = 10 })
		_, err := h.client.Heartbeat(testCtx(t), &farmpb.HeartbeatRequest{Node: "n1"})
		// The deadline ends the retries: the node gets the last answer, or
		// the deadline itself when it cut an attempt short.
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			t.Errorf("got %v, want Unavailable or DeadlineExceeded", err)
		}
		if got := f.heartbeatCalls.Load(); got < 1 || got > 3 {
			t.Errorf("coordinator saw %d heartbeats, want 1 to 3 attempts", got)
		}
	})
}

func TestDeadlines(t *testing.T) {
	f := &fakeCoord{block: true}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, func(c *Config) {
		c.CallTimeout = 150 * time.Millisecond
		c.AcquireTimeout = 300 * time.Millisecond
		c.Breaker.TripAfter = 100
	})
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		call func() error
		want time.Duration
	}{
		{"Heartbeat", func() error { _, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{}); return err }, 150 * time.Millisecond},
		{"ReleaseSet", func() error { _, err := h.client.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{}); return err }, 150 * time.Millisecond},
		{"AcquireSet", func() error { _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{}); return err }, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.call()
			took := time.Since(start)
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("got %v, want DeadlineExceeded", err)
			}
			if took < tc.want || took > tc.want+5*time.Second { // without the deadline it would block for good
				t.Errorf("took %v, want about %v", took, tc.want)
			}
		})
	}
	// DeadlineExceeded is a failure, except on a heartbeat: a slow
	// coordinator must not open the breaker through its heartbeats.
	if got := h.amb.BreakerState(); got.TotalFailures != 2 || got.TotalExclusions != 1 {
		t.Errorf("breaker counted %d failures and %d exclusions, want 2 and 1 (the heartbeat)", got.TotalFailures, got.TotalExclusions)
	}
}

func TestNodeCancelIsExcluded(t *testing.T) {
	f := &fakeCoord{block: true}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, func(c *Config) { c.Breaker.TripAfter = 3 })
	for i := range 6 {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		var err error
		if i%2 == 0 {
			_, err = h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
		} else {
			_, err = doStream(ctx, h.client, &farmpb.StreamFramesRequest{Node: "n1"})
		}
		if status.Code(err) != codes.Canceled {
			t.Fatalf("call %d: got %v, want Canceled", i, err)
		}
	}
	// The ambassador sees the cancellation asynchronously; wait for it to count.
	deadline := time.Now().Add(2 * time.Second)
	for h.amb.BreakerState().TotalExclusions < 6 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := h.amb.BreakerState()
	if got.State != "closed" || got.TotalFailures != 0 || got.TotalExclusions != 6 {
		t.Errorf("breaker = %+v, want closed, 0 failures, 6 exclusions", got)
	}
}

func TestCoordinatorDown(t *testing.T) {
	f := &fakeCoord{}
	addr, stop := startFake(t, f)
	h := startAmb(t, addr, func(c *Config) {
		c.Breaker = BreakerConfig{TripAfter: 3, OpenTimeout: 10 * time.Second}
		c.LinkWait = 200 * time.Millisecond
	})
	ctx := testCtx(t)
	if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); err != nil {
		t.Fatalf("before stop: %v", err)
	}
	stop()

	for i := range 3 {
		start := time.Now()
		_, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d with coordinator down: got %v, want Unavailable", i, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("call %d took %v, want a quick failure", i, took)
		}
	}
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("breaker is %s, want open", got)
	}
	// Open, with the coordinator still down: a call waits LinkWait for it
	// (which costs the coordinator nothing) rather than fail fast, and is
	// then told to ask again at once; the breaker stays open.
	start := time.Now()
	_, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1"})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "not reachable") {
		t.Fatalf("while open: got %v", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 2*time.Second { // generous for a loaded machine
		t.Errorf("open breaker with the coordinator down answered in %v, want after LinkWait (200ms)", took)
	}
	if d := retryDelay(err); d != retryBackoffMin {
		t.Errorf("RetryInfo delay = %v, want %v", d, retryBackoffMin)
	}
	if got := h.amb.BreakerState(); got.State != "open" || got.Opens != 1 {
		t.Errorf("breaker = %+v, want still open, opened once", got)
	}
	if got := f.total(); got != 1 {
		t.Errorf("coordinator saw %d calls, want 1", got)
	}
}

func TestHeartbeatCarriesBreakerInfo(t *testing.T) {
	f := &fakeCoord{}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, func(c *Config) {
		c.Breaker = BreakerConfig{TripAfter: 3, OpenTimeout: 200 * time.Millisecond}
	})
	ctx := testCtx(t)
	lastBreaker := func() *farmpb.BreakerInfo {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.lastHB.GetBreaker()
	}
	heartbeat := func() error {
		// The node's own value must be replaced.
		_, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1", Breaker: &farmpb.BreakerInfo{State: "bogus", Requests: 999}})
		return err
	}

	if err := heartbeat(); err != nil {
		t.Fatal(err)
	}
	want := &farmpb.BreakerInfo{State: "closed", Requests: 1}
	if got := lastBreaker(); !proto.Equal(got, want) {
		t.Errorf("first heartbeat carried %v, want %v", got, want)
	}

	f.setErr(status.Error(codes.Unavailable, "down"))
	for range 2 {
		_, _ = h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
	}
	f.setErr(nil)
	if err := heartbeat(); err != nil {
		t.Fatal(err)
	}
	want = &farmpb.BreakerInfo{State: "closed", Requests: 4, TotalFailures: 2, ConsecutiveFailures: 2}
	if got := lastBreaker(); !proto.Equal(got, want) {
		t.Errorf("heartbeat after 2 failures carried %v, want %v", got, want)
	}

	// Trip it, wait for half-open: the probe heartbeat says so.
	f.setErr(status.Error(codes.Unavailable, "down"))
	for range 3 {
		_, _ = h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
	}
	f.setErr(nil)
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("breaker is %s, want open", got)
	}
	time.Sleep(250 * time.Millisecond)
	if err := heartbeat(); err != nil {
		t.Fatal(err)
	}
	opened := h.amb.BreakerState().LastOpened.UnixMilli()
	want = &farmpb.BreakerInfo{State: "half-open", Requests: 1, Opens: 1, LastOpenedUnixMs: opened}
	if got := lastBreaker(); !proto.Equal(got, want) {
		t.Errorf("probe heartbeat carried %v, want %v", got, want)
	}
	if got := h.amb.BreakerState().State; got != "closed" {
		t.Errorf("after the probe breaker is %s, want closed", got)
	}
}

func TestGracefulShutdown(t *testing.T) {
	f := &fakeCoord{chunks: []*farmpb.FrameChunk{{Position: 0, Data: pattern(100_000, 1), Last: true}}}
	addr, _ := startFake(t, f)
	// Settle the fake server's own goroutines before taking the baseline.
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	a, err := New(Config{Coordinator: addr, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-runErr:
		t.Fatalf("Run: %v", err)
	}
	listenAddr := a.Addr()
	if listenAddr == "" || strings.HasSuffix(listenAddr, ":0") {
		t.Fatalf("Addr = %q, want the real port", listenAddr)
	}
	if err := a.Run(ctx); err == nil {
		t.Error("second Run: want an error")
	}

	conn, err := grpc.NewClient(listenAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client := farmpb.NewNodeServiceClient(conn)
	cctx := testCtx(t)
	if _, err := client.AcquireSet(cctx, &farmpb.AcquireSetRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	if got, err := doStream(cctx, client, &farmpb.StreamFramesRequest{Node: "n1"}); err != nil || len(got) != 1 {
		t.Fatalf("stream: %d chunks, %v", len(got), err)
	}
	if err := doUpload(cctx, client, &farmpb.PartHeader{Node: "n1"}, pattern(200_000, 2), 64<<10); err != nil {
		t.Fatal(err)
	}

	// A call in flight at shutdown is let finish.
	f.mu.Lock()
	f.delay = 300 * time.Millisecond
	f.mu.Unlock()
	inflight := make(chan error, 1)
	go func() {
		_, err := client.Heartbeat(cctx, &farmpb.HeartbeatRequest{Node: "n1"})
		inflight <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for f.heartbeatCalls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(7 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if err := <-inflight; err != nil {
		t.Errorf("in-flight heartbeat: %v, want it to finish", err)
	}
	if c, err := net.DialTimeout("tcp", listenAddr, time.Second); err == nil {
		c.Close()
		t.Error("still listening after Run returned")
	}
	conn.Close()

	var now int
	for range 100 {
		now = runtime.NumGoroutine()
		if now <= base+2 {
			break
		}
		time.Sleep(30 * time.Millisecond)
	}
	if now > base+2 {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines: %d before, %d after shutdown\n%s", base, now, buf[:n])
	}
}

func TestRunListenError(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	a, err := New(Config{Coordinator: "127.0.0.1:1", Listen: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run on a busy port: got %v, want a listen error", err)
	}
	select {
	case <-a.Ready():
		t.Error("Ready closed although Run could not listen")
	default:
	}
}

// TestHeartbeatRoundTrip: the ambassador measures its heartbeats' round
// trip and sends it with the next one, on a connection of their own (so
// that none waits behind frames), and a heartbeat that times out is not a
// failure of the link.
func TestHeartbeatRoundTrip(t *testing.T) {
	f := &fakeCoord{delay: 100 * time.Millisecond}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, nil)
	ctx := testCtx(t)
	for range 2 {
		if _, err := h.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n1", LinkRttMs: 99999}); err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	rtt := f.lastHB.GetLinkRttMs()
	f.mu.Unlock()
	if rtt < 100 || rtt > 1000 {
		t.Errorf("the second heartbeat carried a round trip of %d ms, want about 100", rtt)
	}
	if h.amb.beatConn == h.amb.conn {
		t.Error("heartbeats share the frames' connection")
	}
	f.mu.Lock()
	f.delay = time.Second
	f.mu.Unlock()
	for range 4 {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := h.client.Heartbeat(short, &farmpb.HeartbeatRequest{Node: "n1"})
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("a heartbeat past its deadline: %v", err)
		}
	}
	if st := h.amb.BreakerState(); st.State != "closed" || st.TotalFailures != 0 {
		t.Errorf("after heartbeats that timed out the breaker is %s with %d failures, want closed with none", st.State, st.TotalFailures)
	}
}
