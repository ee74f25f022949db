package ambassador

import (
	"context"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc/connectivity"

	farmpb "github.com/framefarm/framefarm/proto"
)

const (
	// reportTimeout bounds one breaker report or probe: both are answered by
	// the coordinator from memory.
	reportTimeout = 2 * time.Second
	// reportRetryTicks is how many ReportIntervals a failed report waits
	// before it is tried again (a state change sends one at once).
	reportRetryTicks = 5
	// maxReportedNodes bounds the node names a report is sent for.
	maxReportedNodes = 8
)

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
			_, err := a.beats.Heartbeat(cctx, &farmpb.HeartbeatRequest{Node: name, Breaker: a.BreakerState().Info()})
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
