// Command framefarm is the one binary of the framefarm render farm: it turns
// a folder of numbered images into one frame-exact video by encoding ranges
// of frames on many machines and joining the parts in order.
//
// Each role is a subcommand, so that a farm is deployed by copying a single
// file to every machine:
//
//	framefarm coordinator --frames ./shots/seq010 --out seq010.mp4
//	framefarm ambassador  --coordinator farm-host:5555
//	framefarm node        --ambassador 127.0.0.1:5556
//	framefarm status      --coordinator farm-host:5555 --watch
//	framefarm fetch       --coordinator farm-host:5555 -o seq010.mp4 --wait
//
// and a standing farm takes more jobs while it runs:
//
//	framefarm submit      --coordinator farm-host:5555 --frames ./shots/seq020 --priority 10
//	framefarm jobs        --coordinator farm-host:5555
//	framefarm cancel|reset|priority|delete JOB --coordinator farm-host:5555
//
// Run "framefarm help" for the list of subcommands and
// "framefarm <command> --help" for the flags of one.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the default behaviour comes back, so a second
	// Ctrl-C kills a shutdown that hangs.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
}
