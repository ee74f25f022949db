// Package link is what node and ambassador do alike with the gRPC
// connection each dials (the node's to its ambassador, the ambassador's to
// the coordinator): reconnect soon after the other side starts listening,
// and wait a bounded time for the connection rather than fail a call at
// once, since either side may start first.
package link

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
)

// Params reconnects every 100ms at first, growing to maxDelay: gRPC's
// default backoff starts at 1s and grows to 2 minutes, which left a node
// idle for seconds after a cold start. A refused connection costs the
// listening side next to nothing.
func Params(maxDelay, minConnectTimeout time.Duration) grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxDelay},
		MinConnectTimeout: minConnectTimeout,
	}
}

// AwaitReady waits up to d for cc to be ready, asking an idle one to
// connect, and reports whether it is. When it is not, ctx ended or d ran
// out: the caller tells which from ctx, and cc.GetState() says how it
// stands.
func AwaitReady(ctx context.Context, cc *grpc.ClientConn, d time.Duration) bool {
	st := cc.GetState()
	if st == connectivity.Ready {
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for ; st != connectivity.Ready; st = cc.GetState() {
		if st == connectivity.Idle {
			cc.Connect()
		}
		if !cc.WaitForStateChange(wctx, st) {
			return false
		}
	}
	return true
}
