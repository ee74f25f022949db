package main

import (
	"context"
	"fmt"

	"github.com/framefarm/framefarm/ambassador"
	"github.com/framefarm/framefarm/internal/creds"
)

func runAmbassador(ctx context.Context, e *env, args []string) error {
	f := newFlags("ambassador", "--coordinator ADDR [flags]",
		`Runs beside a node on a render machine: serves the node on loopback and
forwards each of its calls to the coordinator through a circuit breaker,
with deadlines, retries of idempotent calls and keepalives.`)
	var cc clientCreds
	cc.register(f)
	var cfg ambassador.Config
	f.StringVar(&cfg.Coordinator, "coordinator", "", "the coordinator's `ADDR` (host:port, required)")
	f.StringVar(&cfg.Listen, "listen", ambassador.DefaultListen, "`ADDR` to serve the node on; keep it on loopback")
	var mf metricsFlags
	mf.register(f)
	level := f.logLevel()
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.require("coordinator"); err != nil {
		return err
	}
	cfg.Logger = newLogger(e.stderr, level)
	x := &exposure{insecure: mf.insecure, token: creds.Token(cc.token) != "", tls: cc.tls.CA != "", log: cfg.Logger}
	if err := x.check("--listen", cfg.Listen); err != nil {
		return err
	}
	opts, err := cc.dialOptions()
	if err != nil {
		return err
	}
	cfg.DialOptions = opts

	a, err := ambassador.New(cfg)
	if err != nil {
		return err
	}
	if err := mf.start(ctx, x, metricsServer{handler: a.MetricsHandler(), token: creds.Token(cc.token), log: cfg.Logger}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
		fmt.Fprintf(e.stdout, "framefarm ambassador: listening on %s, forwarding to %s\n", a.Addr(), cfg.Coordinator)
	case err := <-done:
		return err
	}
	return <-done
}
