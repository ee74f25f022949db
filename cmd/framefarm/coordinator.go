package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/framefarm/framefarm/coordinator"
	"github.com/framefarm/framefarm/coordinator/web"
	"github.com/framefarm/framefarm/internal/creds"
)

func runCoordinator(ctx context.Context, e *env, args []string) error {
	f := newFlags("coordinator", "[--frames DIR] [flags]",
		`Runs the farm: takes jobs (framefarm submit), splits each job's frames into
sets, hands the sets to nodes (through their ambassadors) under leases,
highest priority first, stores and checks the parts, and joins them into
each job's final video. With --frames it also submits that folder as a job
at start. Started again on the same --data, it resumes every job where it
stopped, and submits nothing twice.`)
	var cfg coordinator.Config
	f.StringVar(&cfg.FramesDir, "frames", "", "also submit this folder of numbered frames (`DIR`, or a bucket prefix URL such as s3://BUCKET/shots/sh010/?endpoint=...) as a job, with the encode flags")
	jobFlags := registerJobFlags(f, &cfg.JobSpec)
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:5555", "`ADDR` to serve nodes, status and fetch on (gRPC)")
	f.StringVar(&cfg.Data, "data", "./framefarm-data", "`DIR` for the farm's state and each job's parts and final video")
	f.DurationVar(&cfg.Lease, "lease", 10*time.Minute, "take a set back from a node that made no progress for `DURATION`")
	f.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 30*time.Second, "take a set back from a node silent for `DURATION`")
	f.BoolVar(&cfg.KeepParts, "keep-parts", false, "keep the encoded parts after the join (and in the --storage bucket)")
	f.StringVar(&cfg.Storage, "storage", "", "a bucket `URL` (s3://BUCKET/PREFIX/?endpoint=&region=&use_path_style=true) that nodes put their parts in through pre-signed URLs, and that keeps each job's final (PREFIX/finals/JOB/) and the frames of submit --upload (PREFIX/uploads/NAME/); credentials from the cloud's standard environment. Without it all of these stay under --data")
	f.DurationVar(&cfg.PresignExpiry, "presign-expiry", time.Hour, "how long the pre-signed URLs of frames in a bucket and of parts for --storage stay valid (`DURATION`); a node whose URL expired streams instead")
	f.DurationVar(&cfg.PollWindow, "poll-window", 20*time.Second, "how long a node's request for work waits (`DURATION`) before it is told to ask again")
	f.StringVar(&cfg.Token, "token", "", "require this `TOKEN` on every call (default $"+creds.EnvToken+")")
	f.StringVar(&cfg.TLS.Cert, "tls-cert", "", "serve TLS with the certificate in `FILE` (PEM)")
	f.StringVar(&cfg.TLS.Key, "tls-key", "", "the TLS key `FILE` (PEM)")
	f.StringVar(&cfg.TLS.ClientCA, "tls-client-ca", "", "require client certificates signed by the CA in `FILE` (mutual TLS)")
	f.IntVar(&cfg.MaxConns, "max-conns", 0, "serve at most `N` connections at once (0: the descriptor limit less a reserve for the farm's files)")
	f.IntVar(&cfg.MaxConnsPerPeer, "max-conns-per-peer", coordinator.DefaultMaxConnsPerPeer, "serve at most `N` connections from one address (0: no bound)")
	f.BoolVar(&cfg.Reflection, "reflection", false, "list the gRPC services to any client (grpcurl)")
	var mf metricsFlags
	mf.register(f)
	httpAddr := f.String("http", defaultHTTP, "serve the web app and its HTTP API on `ADDR`, with the same token and TLS; off when empty")
	var lim web.Limits
	f.Int64Var(&lim.TotalBytes, "http-max-upload", web.DefaultTotalBytes, "the most `BYTES` one upload through the web app may send in all")
	f.IntVar(&lim.Files, "http-max-files", web.DefaultFiles, "the most files (`N`) one upload through the web app may hold")
	f.Int64Var(&lim.FileBytes, "http-max-file", web.DefaultFileBytes, "the most `BYTES` one uploaded file may hold")
	level := f.logLevel()
	pprofAddr := f.pprofFlag()
	if err := f.parse(e, args); err != nil {
		return err
	}
	jobFlags.apply()
	cfg.Logger = newLogger(e.stderr, level)
	if err := startPprof(ctx, *pprofAddr, cfg.Logger); err != nil {
		return err
	}
	cfg.Token = creds.Token(cfg.Token)
	x := &exposure{insecure: mf.insecure, token: cfg.Token != "", tls: cfg.TLS.Cert != "", log: cfg.Logger}
	if err := x.check("--listen", cfg.Listen); err != nil {
		return err
	}
	if err := x.check("--http", *httpAddr); err != nil {
		return err
	}
	httpLis, err := listenHTTP(f, *httpAddr, cfg.Logger)
	if err != nil {
		return err
	}
	if httpLis != nil {
		defer httpLis.Close()
	}

	restore := limitStartMemory()
	c, err := coordinator.New(ctx, cfg)
	restore()
	if err != nil {
		return err
	}
	if err := mf.start(ctx, x, metricsServer{handler: c.MetricsHandler(), token: cfg.Token,
		tlsCert: cfg.TLS.Cert, tlsKey: cfg.TLS.Key, log: cfg.Logger}); err != nil {
		return err
	}
	tuneServeGC()
	var app *web.Server
	if httpLis != nil {
		tlsCfg, err := creds.ServerConfig(cfg.TLS)
		if err != nil {
			return err
		}
		if app, err = web.New(c, web.Options{Listener: httpLis, Token: cfg.Token, TLS: tlsCfg, Limits: lim, Metrics: c.MetricsHandler(), Logger: cfg.Logger}); err != nil {
			return err
		}
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	webDone := make(chan error, 1)
	if app != nil {
		// The web app stops with the coordinator's context, and a failed web
		// app stops the coordinator: a farm half up is not left running.
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			<-c.Ready()
			webDone <- app.Run(wctx)
		}()
	}
	select {
	case <-c.Ready():
		// Scripts and tests wait for this line: with --listen :0 it is the
		// only way to learn the port.
		if id := c.JobID(); id != "" {
			fmt.Fprintf(e.stdout, "framefarm coordinator: job %s listening on %s\n", id, c.Addr())
		} else {
			fmt.Fprintf(e.stdout, "framefarm coordinator: farm listening on %s\n", c.Addr())
		}
		if app != nil {
			scheme := "http"
			if cfg.TLS.Cert != "" {
				scheme = "https"
			}
			fmt.Fprintf(e.stdout, "framefarm coordinator: web app on %s://%s/\n", scheme, app.Addr())
		}
	case err := <-done:
		return err
	}
	select {
	case err := <-done:
		return err
	case err := <-webDone:
		if err != nil {
			return fmt.Errorf("the web app stopped: %w", err)
		}
		return <-done
	}
}

// defaultHTTP is the web app's address when --http is not given.
const defaultHTTP = "127.0.0.1:8080"

// listenHTTP listens for the web app (nil when --http is empty). The
// default address taken (a second farm on this machine, a test) is said
// and the farm runs without the web app; an address given is the user's
// and must work.
func listenHTTP(f *cmdFlags, addr string, log *slog.Logger) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err == nil {
		return lis, nil
	}
	given := false
	f.Visit(func(fl *flag.Flag) { given = given || fl.Name == "http" })
	if !given && errors.Is(err, syscall.EADDRINUSE) {
		log.Warn("the web app's default address is in use: running without it (give --http ADDR)", "addr", addr)
		return nil, nil
	}
	return nil, fmt.Errorf("--http %s: %w", addr, err)
}

// startMemoryLimit is the coordinator process's soft Go heap limit while
// coordinator.New runs. Scanning the frames folder and storing the frame
// list make short-lived garbage much faster than they keep data: on 100,000
// frames New keeps ~40 MB, yet with the default GC pacing the process
// peaked at ~110 MB RSS there, more than at any time after. Under this limit
// it peaked at ~76 MB, for ~0.4 CPU-s more. The process's limit is its
// owner's to set, so it is set here, not in the coordinator package.
const startMemoryLimit = 60 << 20

// limitStartMemory sets startMemoryLimit unless a lower limit is set
// (GOMEMLIMIT), and returns what puts the process's limit back.
func limitStartMemory() (restore func()) {
	prev := debug.SetMemoryLimit(-1)
	if prev <= startMemoryLimit {
		return func() {}
	}
	debug.SetMemoryLimit(startMemoryLimit)
	return func() { debug.SetMemoryLimit(prev) }
}

// serveGCPercent is the coordinator's GC target while it serves (GOGC).
// Under a thousand nodes the coordinator keeps ~30 MB of heap (the job,
// gRPC's per-connection state) and 14 MB of goroutine stacks, and the
// default pacing lets the heap grow by all of that again before a
// collection. At 1000 nodes and 1000 cycles/s the process peaked at 108-122
// MiB RSS with the default and at 91-115 MiB (mostly 99-103) with 50. The
// cost is up to 4% more CPU: 9.5-9.7 against 9.1-9.4 CPU-s in one set of
// runs taken in turns, no difference in another. The process's GC is its
// owner's to set: GOGC in the environment wins.
const serveGCPercent = 50

func tuneServeGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(serveGCPercent)
	}
}
