package ambassador

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/framefarm/framefarm/internal/reason"
	farmpb "github.com/framefarm/framefarm/proto"
)

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
			a.metrics.transitions.WithLabelValues(from.String(), to.String()).Inc()
			if to == gobreaker.StateOpen {
				a.linkDownSinceOpen.Store(a.conn.GetState() != connectivity.Ready)
				until := cfg.Now().Add(cfg.Breaker.OpenTimeout)
				a.openUntil.Store(&until)
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
	if until := a.openUntil.Load(); until != nil {
		snap.LastOpened = until.Add(-a.cfg.Breaker.OpenTimeout)
	}
	return snap
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
	return !reason.IsLinkFailure(st.Err())
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
