package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/framefarm/framefarm/coordinator"
	"github.com/framefarm/framefarm/internal/creds"
	"github.com/framefarm/framefarm/internal/ffmpeg"
)

func runCoordinator(ctx context.Context, e *env, args []string) error {
	f := newFlags("coordinator", "--frames DIR [flags]",
		`Serves one job: scans the frames folder, splits it into sets, hands the sets
to nodes (through their ambassadors) under leases, stores and checks the
parts, and joins them into the final video. Started again on the same
--data, it resumes the job where it stopped.`)
	var cfg coordinator.Config
	f.StringVar(&cfg.FramesDir, "frames", "", "folder of numbered frames to encode (`DIR`, required)")
	f.StringVar(&cfg.Out, "out", "", "also copy the final video to `FILE`; its extension picks the container (.mp4 .mkv .mov .webm)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:5555", "`ADDR` to serve nodes, status and fetch on (gRPC)")
	f.StringVar(&cfg.Data, "data", "./framefarm-data", "`DIR` for the job's state, parts and final video")
	f.IntVar(&cfg.Sets, "sets", 8, "split the frames into `N` sets of near-equal size")
	f.DurationVar(&cfg.Lease, "lease", 10*time.Minute, "take a set back from a node that made no progress for `DURATION`")
	f.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 30*time.Second, "take a set back from a node silent for `DURATION`")
	f.StringVar(&cfg.FPS, "fps", "24", "frame `RATE`: an integer, a decimal or a ratio such as 24000/1001")
	f.StringVar(&cfg.Codec, "codec", "libx264", "encoder `NAME`: "+strings.Join(ffmpeg.Codecs(), ", "))
	f.IntVar(&cfg.CRF, "crf", -1, "constant rate factor `N` (quality; lower is better); -1 leaves the encoder's default")
	f.StringVar(&cfg.Preset, "preset", "", "encoder preset `NAME` (e.g. medium for libx264); empty leaves the encoder's default")
	f.StringVar(&cfg.PixFmt, "pix-fmt", "", "pixel format `NAME`; empty means the codec's default: yuv420p, yuv422p10le for prores_ks")
	f.BoolVar(&cfg.KeepParts, "keep-parts", false, "keep the encoded parts after the join")
	f.StringVar(&cfg.Audio, "audio", "", "mux the audio `FILE` into the final video, cut to the video's length: copied when the container takes its codec, else encoded (AAC in .mp4/.mov, Opus in .mkv/.webm)")
	fastStart := f.Bool("faststart", true, "put an .mp4 or .mov video's index before its media data, so that a browser can play it while it downloads")
	f.DurationVar(&cfg.PollWindow, "poll-window", 20*time.Second, "how long a node's request for work waits (`DURATION`) before it is told to ask again")
	f.StringVar(&cfg.Pattern, "pattern", "", "use only the frames of this naming `PATTERN` (e.g. shot_####.png) when the folder holds several")
	f.StringVar(&cfg.Gaps, "gaps", "refuse", "missing frame numbers: refuse, hold (repeat the previous frame, keeping the timing) or skip (close them up)")
	f.StringVar(&cfg.Scale, "scale", "", "scale every frame to `WxH` (for folders of mixed sizes)")
	f.StringVar(&cfg.Token, "token", "", "require this `TOKEN` on every call (default $"+creds.EnvToken+")")
	f.StringVar(&cfg.TLS.Cert, "tls-cert", "", "serve TLS with the certificate in `FILE` (PEM)")
	f.StringVar(&cfg.TLS.Key, "tls-key", "", "the TLS key `FILE` (PEM)")
	f.StringVar(&cfg.TLS.ClientCA, "tls-client-ca", "", "require client certificates signed by the CA in `FILE` (mutual TLS)")
	f.BoolVar(&cfg.Reflection, "reflection", false, "list the gRPC services to any client (grpcurl)")
	level := f.logLevel()
	pprofAddr := f.pprofFlag()
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.require("frames"); err != nil {
		return err
	}
	cfg.NoFastStart = !*fastStart
	cfg.Logger = newLogger(e.stderr, level)
	if err := startPprof(ctx, *pprofAddr, cfg.Logger); err != nil {
		return err
	}
	cfg.Token = creds.Token(cfg.Token)

	restore := limitStartMemory()
	c, err := coordinator.New(ctx, cfg)
	restore()
	if err != nil {
		return err
	}
	tuneServeGC()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
		// Scripts and tests wait for this line: with --listen :0 it is the
		// only way to learn the port.
		fmt.Fprintf(e.stdout, "framefarm coordinator: job %s listening on %s\n", c.JobID(), c.Addr())
	case err := <-done:
		return err
	}
	return <-done
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
