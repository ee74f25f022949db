package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/framefarm/framefarm/internal/creds"
	"github.com/framefarm/framefarm/internal/reason"
	farmpb "github.com/framefarm/framefarm/proto"
)

// maxRecvMsg matches the servers' bound: the video comes in chunks of at
// most 1 MiB, so 4 MiB leaves room without letting a bad peer bloat memory.
const maxRecvMsg = 4 << 20

// callTimeout bounds one GetJob: the coordinator answers from memory, so a
// slow answer means it is unreachable.
const callTimeout = 10 * time.Second

// farmClient is the people-facing side of a coordinator.
type farmClient struct {
	addr string
	tls  creds.ClientTLS // for the hints of explain
	conn *grpc.ClientConn
	farmpb.FarmServiceClient
}

// clientCreds are the flags with which a client proves it belongs to the
// farm: the token and TLS.
type clientCreds struct {
	token string
	tls   creds.ClientTLS
}

func (c *clientCreds) register(f *cmdFlags) {
	f.StringVar(&c.token, "token", "", "the farm's `TOKEN` (default $"+creds.EnvToken+")")
	f.StringVar(&c.tls.CA, "tls-ca", "", "connect with TLS, trusting the coordinator certificate signed by the CA in `FILE` (PEM)")
	f.StringVar(&c.tls.Cert, "tls-cert", "", "client certificate `FILE` (PEM), for a coordinator that requires mutual TLS")
	f.StringVar(&c.tls.Key, "tls-key", "", "client key `FILE` (PEM), with --tls-cert")
}

func (c *clientCreds) dialOptions() ([]grpc.DialOption, error) {
	return creds.DialOptions(creds.Token(c.token), c.tls)
}

func dialFarm(addr string, cc *clientCreds) (*farmClient, error) {
	opts, err := cc.dialOptions()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, append(opts,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsg)))...)
	if err != nil {
		return nil, fmt.Errorf("coordinator address %q: %w", addr, err)
	}
	return &farmClient{addr: addr, tls: cc.tls, conn: conn, FarmServiceClient: farmpb.NewFarmServiceClient(conn)}, nil
}

func (c *farmClient) Close() error { return c.conn.Close() }

func (c *farmClient) getJob(ctx context.Context, job string) (*farmpb.JobStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	st, err := c.GetJob(cctx, &farmpb.GetJobRequest{JobId: job})
	if err != nil {
		return nil, c.explain(ctx, err)
	}
	return st, nil
}

// explain turns a gRPC error into a sentence for a person: "rpc error:
// code = ..." says nothing to someone who only wants their video.
func (c *farmClient) explain(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch {
	case reason.IsLinkFailure(err):
		if hint := tlsHint(s.Message(), c.tls); hint != "" {
			return &linkError{fmt.Errorf("cannot connect to the coordinator at %s: %s; %s", c.addr, s.Message(), hint)}
		}
		return &linkError{fmt.Errorf("cannot reach the coordinator at %s (is it running? check --coordinator): %s", c.addr, s.Message())}
	case s.Code() == codes.Canceled:
		return context.Canceled
	default:
		return fmt.Errorf("%s", s.Message())
	}
}

// tlsHint says which flag to check when a connection failed the way a
// mismatch of TLS settings makes it fail ("is it running?" would mislead).
// A refused client certificate reaches the client either as a TLS alert or
// as a connection broken while it writes, depending on timing.
func tlsHint(msg string, t creds.ClientTLS) string {
	has := func(subs ...string) bool {
		for _, sub := range subs {
			if strings.Contains(msg, sub) {
				return true
			}
		}
		return false
	}
	broken := has("broken pipe", "connection reset", "error reading server preface: EOF")
	switch {
	case has("certificate required", "bad certificate", "unknown certificate authority") && t.Cert == "":
		return "the coordinator requires a client certificate (mutual TLS): pass --tls-cert and --tls-key"
	case has("certificate required", "bad certificate", "unknown certificate authority"):
		return "the coordinator refused the client certificate: check that --tls-cert is signed by a CA the coordinator trusts (its --tls-client-ca)"
	case has("first record does not look like a TLS handshake"):
		return "the coordinator does not serve TLS: leave out --tls-ca"
	case has("x509:", "tls:"):
		return "the TLS handshake failed: check --tls-ca (the CA that signed the coordinator's certificate)"
	case broken && t.CA == "":
		return "if the coordinator serves TLS, pass --tls-ca"
	case broken && t.Cert == "":
		return "if the coordinator requires client certificates (mutual TLS), pass --tls-cert and --tls-key"
	case broken:
		return "if the coordinator requires client certificates (mutual TLS), check that --tls-cert is signed by a CA the coordinator trusts"
	}
	return ""
}

// linkError is a failure to reach the coordinator, worth trying again
// while watching or waiting, since a coordinator may be restarting.
type linkError struct{ err error }

func (e *linkError) Error() string { return e.err.Error() }
func (e *linkError) Unwrap() error { return e.err }

// pause waits d or until ctx ends, and reports whether to go on.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
