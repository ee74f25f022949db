package main

import (
	"context"
	"fmt"
	"os"

	"github.com/framefarm/framefarm/node"
)

func runNode(ctx context.Context, e *env, args []string) error {
	f := newFlags("node", "[flags]",
		`Renders sets: asks its ambassador for a set, receives the set's frames,
encodes them with ffmpeg, checks the result and uploads it, then asks for
the next one. Start one per machine (or per CPU quota); Ctrl-C gives the
set in progress back at once.`)
	host, err := os.Hostname()
	if err != nil {
		host = "node"
	}
	var cfg node.Config
	f.StringVar(&cfg.Ambassador, "ambassador", "127.0.0.1:5556", "`ADDR` of the ambassador on this machine")
	f.StringVar(&cfg.Name, "name", fmt.Sprintf("%s-%d", host, os.Getpid()), "`NAME` of this node in status and logs; unique per farm")
	f.StringVar(&cfg.Work, "work", "", "`DIR` for frames and parts while a set renders (default: a temp dir, removed on exit)")
	f.BoolVar(&cfg.Once, "once", false, "exit when the coordinator has no more work for this node")
	f.IntVar(&cfg.Slots, "slots", node.DefaultSlots, "work on `N` sets at once: with 2, frames stream in and parts upload while the other set encodes")
	f.IntVar(&cfg.Threads, "threads", 0, "encoder threads per set (`N`); 0 shares the cores among the slots")
	f.StringVar(&cfg.FramesFrom, "frames-from", node.FramesAuto, "where a set's frames come from (`MODE`): auto reads them from the coordinator's frames folder when this machine sees the same files there (same host or a shared mount), or from the bucket through the pre-signed URLs the coordinator hands out, and puts the part there (coordinator --storage), and streams them otherwise; stream always streams frames and parts through the coordinator")
	var mf metricsFlags
	mf.register(f)
	level := f.logLevel()
	pprofAddr := f.pprofFlag()
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.require("ambassador", "name"); err != nil {
		return err
	}
	if cfg.Slots < 1 || cfg.Slots > 64 {
		return fmt.Errorf("--slots %d: give 1 to 64 sets at once", cfg.Slots)
	}
	if cfg.Threads < 0 || cfg.Threads > 256 {
		return fmt.Errorf("--threads %d: give 1 to 256 threads, or 0 to share the cores among the slots", cfg.Threads)
	}
	cfg.Logger = newLogger(e.stderr, level)
	if err := startPprof(ctx, *pprofAddr, cfg.Logger); err != nil {
		return err
	}

	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	// The node holds no token (its ambassador does): off loopback its
	// metrics need --insecure.
	x := &exposure{insecure: mf.insecure, log: cfg.Logger}
	if err := mf.start(ctx, x, metricsServer{handler: n.MetricsHandler(), log: cfg.Logger}); err != nil {
		return err
	}
	return n.Run(ctx)
}
