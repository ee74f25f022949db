package ambassador

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc/connectivity"

	"github.com/framefarm/framefarm/internal/link"
)

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

// watchLink follows the connection to the coordinator. Each time it comes
// up, the report loop is woken, and a breaker that is not closed and saw
// the link down is replaced with a fresh one: it opened while the
// coordinator could not be reached (not started yet, restarting), or the
// coordinator went away since, and the coordinator is back, so making the
// node wait out OpenTimeout or a probe would only delay its first set. A
// coordinator that is up and answers badly keeps the connection up, so the
// breaker still opens and stays open on it.
func (a *Ambassador) watchLink(ctx context.Context) {
	for st := a.conn.GetState(); ; {
		prev := st
		if !a.conn.WaitForStateChange(ctx, prev) {
			return
		}
		// Up before and up now is a link that went down and came back
		// between two looks.
		st = a.conn.GetState()
		if prev == connectivity.Ready || st != connectivity.Ready {
			a.linkDownSinceOpen.Store(true)
		}
		if st != connectivity.Ready {
			continue
		}
		a.freshBreaker()
		select {
		case a.linkUp <- struct{}{}:
		default:
		}
	}
}

// freshBreaker replaces the breaker with a closed one unless it is closed
// or the link has been up since it opened.
func (a *Ambassador) freshBreaker() {
	old := a.cb.Load()
	from := old.State()
	if from == gobreaker.StateClosed || !a.linkDownSinceOpen.Load() || !a.cb.CompareAndSwap(old, a.newBreaker()) {
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
	if a.cfg.LinkWait < 0 {
		return nil
	}
	start := a.cfg.Now()
	if link.AwaitReady(ctx, a.conn, a.cfg.LinkWait) {
		return nil
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	// LinkWait or the node's own deadline ran out: either way the
	// coordinator could not be reached meanwhile.
	return &linkDownError{coordinator: a.cfg.Coordinator,
		waited: a.cfg.Now().Sub(start).Round(time.Millisecond), state: a.conn.GetState()}
}
