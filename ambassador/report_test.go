package ambassador

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	farmpb "github.com/framefarm/framefarm/proto"
)

func (f *fakeCoord) states() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.hbStates...)
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The breaker opens because AcquireSet fails, while the coordinator still
// answers other calls: the ambassador tells it the breaker is open (so that
// status shows it), probes it with a cheap call once half-open, and tells it
// the breaker closed again. The node's calls never reach it while open.
func TestReportsBreakerState(t *testing.T) {
	f := &fakeCoord{acquireErr: status.Error(codes.Unavailable, "overloaded")}
	addr, _ := startFake(t, f)
	h := startAmb(t, addr, func(c *Config) {
		c.ReportInterval = 20 * time.Millisecond
		c.Breaker = BreakerConfig{TripAfter: 3, OpenTimeout: 300 * time.Millisecond}
	})
	ctx := testCtx(t)
	for range 3 {
		if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); status.Code(err) != codes.Unavailable {
			t.Fatalf("AcquireSet: %v, want Unavailable", err)
		}
	}
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("breaker %s, want open", got)
	}
	waitFor(t, "a report of the open breaker", func() bool { return slices.Contains(f.states(), "open") })
	f.mu.Lock()
	rep := f.lastHB
	f.mu.Unlock()
	if rep.GetNode() != "n1" || rep.GetToken() != 0 || rep.GetJobId() != "" {
		t.Errorf("report = %v, want a lease-less heartbeat in n1's name", rep)
	}
	// While open, the node's calls fail fast and one report is enough.
	for range 5 {
		if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); status.Code(err) != codes.Unavailable {
			t.Fatalf("AcquireSet while open: %v", err)
		}
	}
	if got := f.acquireCalls.Load(); got != 3 {
		t.Errorf("coordinator saw %d AcquireSet calls, want 3: none while open", got)
	}
	f.mu.Lock()
	f.acquireErr = nil
	f.mu.Unlock()
	waitFor(t, "the breaker to close by itself", func() bool { return h.amb.BreakerState().State == "closed" })
	waitFor(t, "a report of the closed breaker", func() bool {
		s := f.states()
		return len(s) > 0 && s[len(s)-1] == "closed"
	})
	if got, want := f.states(), []string{"open", "half-open", "closed"}; !slices.Equal(got, want) {
		t.Errorf("reported states %v, want %v", got, want)
	}
	if got := f.acquireCalls.Load(); got != 3 {
		t.Errorf("the probe was an AcquireSet: coordinator saw %d, want 3", got)
	}
	if _, err := h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"}); err != nil {
		t.Errorf("AcquireSet after recovery: %v", err)
	}
}

// tripWithAcquires makes n AcquireSet calls in n1's name, which the fake
// answers badly, and checks that they opened the breaker.
func tripWithAcquires(t *testing.T, h *harness, n int) {
	t.Helper()
	ctx := testCtx(t)
	for range n {
		_, _ = h.client.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "n1"})
	}
	if got := h.amb.BreakerState().State; got != "open" {
		t.Fatalf("breaker %s after %d bad answers, want open", got, n)
	}
}

// With the coordinator down, a failed report is tried again only every few
// intervals: the breaker must not be bypassed into a busy loop.
func TestReportsAreRareWhileDown(t *testing.T) {
	f := &fakeCoord{}
	f.setErr(status.Error(codes.Unavailable, "down"))
	addr, _ := startFake(t, f)
	const every = 20 * time.Millisecond
	h := startAmb(t, addr, func(c *Config) {
		c.ReportInterval = every
		c.Breaker = BreakerConfig{TripAfter: 3, OpenTimeout: time.Hour}
	})
	tripWithAcquires(t, h, 3)
	const window = 50 * every
	time.Sleep(window)
	// One report on the change, then one every reportRetryTicks intervals.
	got := f.heartbeatCalls.Load()
	if max := int64(window/(reportRetryTicks*every)) + 2; got < 2 || got > max {
		t.Errorf("%d reports in %v of outage, want 2 to %d", got, window, max)
	}
	if got := f.acquireCalls.Load(); got != 3 {
		t.Errorf("coordinator saw %d AcquireSet calls, want 3", got)
	}
}
