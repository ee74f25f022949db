package ambassador

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	farmpb "github.com/framefarm/framefarm/proto"
)

// freeAddr returns a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// serveFakeOn serves f on addr, as a coordinator that starts late does.
func serveFakeOn(t *testing.T, addr string, f *fakeCoord) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Error(err) // may run on another goroutine than the test's
		return
	}
	srv := grpc.NewServer()
	farmpb.RegisterNodeServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

// A call made before the coordinator listens waits for it (up to
// LinkWait) and goes through soon after it does, without counting a failure.
func TestCallWaitsForTheCoordinator(t *testing.T) {
	addr := freeAddr(t)
	h := startAmb(t, addr, func(c *Config) { c.LinkWait = 5 * time.Second })
	// Let the connection fail a few times first, as at a cold start.
	ctx := testCtx(t)
	f := &fakeCoord{}
	upc := make(chan time.Time, 1)
	time.AfterFunc(1500*time.Millisecond, func() { serveFakeOn(t, addr, f); upc <- time.Now() })
	if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); err != nil {
		t.Fatalf("AcquireSet across the coordinator's start: %v", err)
	}
	up := <-upc
	// gRPC's reconnect backoff is at most 400ms (+20% jitter) here.
	if took := time.Since(up); took > time.Second {
		t.Errorf("the call went through %v after the coordinator listened, want within 1s", took)
	}
	if got := h.amb.BreakerState(); got.State != "closed" || got.TotalFailures != 0 {
		t.Errorf("breaker = %+v, want closed without failures", got)
	}
}

// Calls that find no coordinator within LinkWait fail with Unavailable and
// a short retry hint, count against the breaker and open it; once the
// coordinator listens the breaker is fresh (closed) at once, without
// waiting out OpenTimeout.
func TestFreshBreakerWhenTheCoordinatorComesUp(t *testing.T) {
	addr := freeAddr(t)
	h := startAmb(t, addr, func(c *Config) {
		c.LinkWait = 100 * time.Millisecond
		c.Breaker = BreakerConfig{TripAfter: 2, OpenTimeout: time.Hour}
	})
	ctx := testCtx(t)
	for i := range 2 {
		_, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
		st, _ := status.FromError(err)
		if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "not reachable") {
			t.Fatalf("call %d without a coordinator: %v, want Unavailable saying it is not reachable", i, err)
		}
		if d := retryDelay(err); d != retryBackoffMin {
			t.Errorf("call %d: RetryInfo delay %v, want %v", i, d, retryBackoffMin)
		}
	}
	if got := h.amb.BreakerState(); got.State != "open" || got.Opens != 1 {
		t.Fatalf("breaker = %+v, want open once", got)
	}
	f := &fakeCoord{}
	serveFakeOn(t, addr, f)
	// The node's calls fail fast while open; the link watch notices the
	// coordinator anyway, since the reconnect backoff keeps trying.
	waitFor(t, "a fresh breaker", func() bool { return h.amb.BreakerState().State == "closed" })
	if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); err != nil {
		t.Fatalf("AcquireSet once the coordinator listens: %v", err)
	}
	if got := f.acquireCalls.Load(); got != 1 {
		t.Errorf("coordinator saw %d AcquireSet calls, want 1", got)
	}
	if !strings.Contains(h.logs.String(), "the connection to the coordinator is up again") {
		t.Errorf("log does not say why the breaker closed:\n%s", h.logs.String())
	}
}

// The retry hint of an open breaker is the time left until it lets a probe
// through, on the ambassador's clock.
func TestOpenHintFromTheClock(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, err := New(Config{Coordinator: "127.0.0.1:1", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.conn.Close()
	until := now.Add(2300 * time.Millisecond)
	a.openUntil.Store(&until)
	err = a.nodeError(gobreaker.ErrOpenState)
	if d := retryDelay(err); d != 2300*time.Millisecond {
		t.Errorf("RetryInfo delay %v, want 2.3s", d)
	}
	if !strings.Contains(err.Error(), "retry in about 2.3s") {
		t.Errorf("message %q does not say when to retry", err)
	}
	if err := a.nodeError(&nodeSideError{err: context.Canceled}); status.Code(err) != codes.Canceled {
		t.Errorf("node cancel: %v", err)
	}
	if err := a.nodeError(&heartbeatTimeout{err: status.Error(codes.DeadlineExceeded, "slow")}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("heartbeat timeout: %v", err)
	}
	if !isExcluded(&heartbeatTimeout{err: errors.New("x")}) {
		t.Error("a heartbeat timeout counts against the breaker")
	}
}

// A call made while the breaker is open because the coordinator is away
// waits for it, and goes through as soon as it listens.
func TestOpenBreakerCallWaitsForTheCoordinator(t *testing.T) {
	addr := freeAddr(t)
	h := startAmb(t, addr, func(c *Config) {
		c.LinkWait = 2 * time.Second
		c.Breaker = BreakerConfig{TripAfter: 1, OpenTimeout: time.Hour}
	})
	ctx := testCtx(t)
	if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("without a coordinator: %v, want Unavailable", err)
	}
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("breaker %s, want open", got)
	}
	f := &fakeCoord{}
	upc := make(chan time.Time, 1)
	time.AfterFunc(500*time.Millisecond, func() { serveFakeOn(t, addr, f); upc <- time.Now() })
	if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); err != nil {
		t.Fatalf("AcquireSet while open, across the coordinator's start: %v", err)
	}
	if took := time.Since(<-upc); took > time.Second {
		t.Errorf("the call went through %v after the coordinator listened, want within 1s", took)
	}
	if got := h.amb.BreakerState(); got.State != "closed" || got.Opens != 1 {
		t.Errorf("breaker = %+v, want closed (fresh), opened once", got)
	}
}

// A breaker opened by bad answers on a live connection is not closed by the
// link watch, even when the watch notices the connection's first coming up
// only after the breaker opened (a late wake, as on a loaded machine); once
// the coordinator goes away and comes back, it is.
func TestFreshBreakerOnlyAfterTheLinkWasDown(t *testing.T) {
	f := &fakeCoord{}
	f.setErr(status.Error(codes.Unavailable, "overloaded"))
	addr, stop := startFake(t, f)
	h := startAmb(t, addr, func(c *Config) {
		c.LinkWait = 5 * time.Second
		c.Breaker = BreakerConfig{TripAfter: 2, OpenTimeout: time.Hour}
	})
	tripWithAcquires(t, h, 2)
	h.amb.freshBreaker() // what a late wake of the link watch does
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("breaker %s after a link-up wake on a live connection, want still open", got)
	}

	stop()
	waitFor(t, "the link to go down", func() bool { return h.amb.conn.GetState() != connectivity.Ready })
	serveFakeOn(t, addr, &fakeCoord{})
	if _, err := h.client.AcquireSet(testCtx(t), &farmpb.AcquireSetRequest{Node: "n1"}); err != nil {
		t.Fatalf("AcquireSet once the coordinator is back: %v", err)
	}
	if got := h.amb.BreakerState(); got.State != "closed" || got.Opens != 1 {
		t.Errorf("breaker = %+v, want closed (fresh), opened once", got)
	}
}
