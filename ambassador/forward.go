package ambassador

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/framefarm/framefarm/internal/chunk"
	farmpb "github.com/framefarm/framefarm/proto"
)

const (
	// idempotentRetries is how many more times Heartbeat and ReleaseSet are
	// tried after an Unavailable answer.
	idempotentRetries = 2
	retryBackoffMin   = 100 * time.Millisecond
	retryBackoffSpan  = 300 * time.Millisecond
)

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
	a.endCall(ctx, "AcquireSet", start, err, 1,
		req.GetNode(), as.GetJobId(), int64(as.GetSetIndex()), as.GetToken(), as != nil)
	if err != nil {
		return nil, a.nodeError(err)
	}
	return resp, nil
}

// Heartbeat adds the breaker's state and counts and the link's round trip
// to the node's heartbeat and forwards it, on the heartbeats' own
// connection. It is idempotent, so it is retried on Unavailable.
func (a *Ambassador) Heartbeat(ctx context.Context, req *farmpb.HeartbeatRequest) (*farmpb.HeartbeatResponse, error) {
	start := time.Now()
	a.noteNode(req.GetNode())
	var resp *farmpb.HeartbeatResponse
	attempts, err := a.retryIdempotent(ctx, func(cctx context.Context) error {
		req.Breaker = a.BreakerState().Info()
		req.LinkRttMs = uint32(a.rtt.Load() / int64(time.Millisecond))
		sent := time.Now()
		var err error
		resp, err = a.beats.Heartbeat(cctx, req)
		timedOut := status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
		if err == nil || timedOut {
			// A beat that timed out took at least that long.
			a.noteRTT(time.Since(sent))
		}
		if timedOut {
			return &heartbeatTimeout{err: err}
		}
		return err
	})
	a.endCall(ctx, "Heartbeat", start, err, attempts,
		req.GetNode(), req.GetJobId(), int64(req.GetSetIndex()), req.GetToken(), true)
	if err != nil {
		return nil, a.nodeError(err)
	}
	return resp, nil
}

// noteRTT adds a heartbeat's round trip to the smoothed one (weight 1/4,
// as TCP's estimator gives a new sample 1/8: heartbeats are rarer).
func (a *Ambassador) noteRTT(d time.Duration) {
	old := a.rtt.Load()
	if old == 0 {
		a.rtt.Store(int64(d))
		return
	}
	a.rtt.Store(old + (int64(d)-old)/4)
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
	a.endCall(ctx, "ReleaseSet", start, err, attempts,
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
	a.endCall(ctx, "StreamFrames", start, err, 1,
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
			var msg chunk.Raw
			err := up.RecvMsg(&msg)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			a.metrics.forwarded.WithLabelValues(streamFrames).Add(float64(msg.Len()))
			if err := chunk.Send(node, &msg); err != nil {
				return &nodeSideError{err: err}
			}
		}
	})
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
			// they came (see chunk.Raw).
			err = up.Send(first)
			for err == nil {
				var msg chunk.Raw
				if rerr := node.RecvMsg(&msg); rerr == io.EOF {
					break
				} else if rerr != nil {
					return &nodeSideError{err: rerr}
				}
				a.metrics.forwarded.WithLabelValues(streamParts).Add(float64(msg.Len()))
				err = chunk.Send(up, &msg)
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
	a.endCall(ctx, "UploadPart", start, err, 1,
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
//
// While the breaker is open and the coordinator cannot be reached, the call
// waits for the connection (up to LinkWait) instead of failing fast: no
// call reaches the coordinator either way, and the node's call goes
// through as soon as the coordinator is back, rather than after a retry
// hint of up to OpenTimeout. Open with the connection up (a coordinator
// that answers badly), calls still fail fast.
func (a *Ambassador) execute(ctx context.Context, fn func() error) error {
	cb := a.cb.Load()
	if cb.State() == gobreaker.StateOpen && a.conn.GetState() != connectivity.Ready {
		// Seen down here, now: the link watch may not have looked yet.
		a.linkDownSinceOpen.Store(true)
		if err := a.awaitLink(ctx); err != nil {
			return err
		}
		a.freshBreaker() // the link watch would, a moment later
		cb = a.cb.Load()
	}
	_, err := cb.Execute(func() (struct{}, error) {
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
		var wait time.Duration
		if until := a.openUntil.Load(); until != nil {
			wait = max(until.Sub(a.cfg.Now()), 0)
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

// endCall counts a forwarded call by its outcome and logs it (at debug).
func (a *Ambassador) endCall(ctx context.Context, method string, start time.Time, err error, attempts int,
	node, job string, set int64, token uint64, haveSet bool) {
	a.metrics.calls.WithLabelValues(method, outcome(err)).Inc()
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
