package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"

	farmpb "github.com/framefarm/framefarm/proto"

	"github.com/framefarm/framefarm/internal/text"
)

// minWorkFree is the free space below which the node asks for no work: a
// set's frames and part need at least this much in --work.
const minWorkFree = 64 << 20

// problem says what on this machine keeps the node from rendering (no
// ffmpeg to run, a full work folder), "" when nothing does. Such a fault
// is the node's own, not the sets': the node asks for no work until it is
// fixed, and gives no set back as failed because of it.
func (n *Node) problem(work string) string {
	bin := n.cfg.FFmpeg.FFmpeg
	if bin == "" {
		bin = "ffmpeg"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Sprintf("ffmpeg cannot be run here (%v): install it, or put it on the node's PATH", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(work, &st); err != nil {
		return fmt.Sprintf("work folder %s cannot be used (%v): fix it, or give another --work", work, err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < minWorkFree {
		return fmt.Sprintf("work folder %s has %s free, less than the %s a set needs at least: free space there, or give another --work",
			work, text.Size(int64(free)), text.Size(minWorkFree))
	}
	return ""
}

// maxOwnFaults is how many sets in a row may fail for what looks like this
// machine's reason (ownFault) while the machine looks fit (problem says
// nothing): a set larger than the free space, or an ffmpeg that says its
// disk is full when it is not. Past it such failures count as the sets',
// so that a node cannot hold a job up forever by giving sets back.
const maxOwnFaults = 3

// ownFault reports whether a set failed for a reason of this machine's
// (its disk full, ffmpeg missing) rather than the set's: such a set is given
// back without a failure.
func ownFault(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, exec.ErrNotFound) ||
		// ffmpeg says so on its stderr, which the error carries.
		strings.Contains(err.Error(), "No space left on device") || strings.Contains(err.Error(), "Disk quota exceeded")
}

// waitHealthy holds the slot while the machine has a problem: it says so
// (in the log, and to the coordinator, which shows it in status) when it
// starts and when it changes, checks again after each backoff step, and
// returns once the problem is gone (or ctx ends). cause is what made the
// node look, when a set failed for it.
func (n *Node) waitHealthy(ctx context.Context, work string, cause error, log *slog.Logger) {
	bo := backoff{min: n.cfg.MinBackoff, max: n.cfg.MaxBackoff}
	said := ""
	first := true
	for ctx.Err() == nil {
		p := n.problem(work)
		if p == "" && first && cause != nil {
			// The failure freed its own space (the set's folder is gone):
			// wait one step before trying again, then look.
			p = "a set failed for this machine's own reason: " + text.Truncate(cause.Error(), 300)
		}
		first = false
		if p == "" {
			if said != "" {
				log.Info("this machine is fit to render again; asking for work", "was", said)
			}
			return
		}
		if p != said {
			log.Error("not asking for work: this machine cannot render", "problem", p)
			n.report(ctx, p, log)
			said = p
		}
		sleep(ctx, bo.next())
	}
}

// report tells the coordinator the node's problem (a heartbeat without a
// lease), for status. It is said once per change: asking for work again
// clears it there.
func (n *Node) report(ctx context.Context, p string, log *slog.Logger) {
	load, free := n.load.sample()
	if _, err := n.client.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: n.cfg.Name, CpuLoad: load, FreeCores: free, Problem: p}); err != nil {
		log.Debug("telling the coordinator failed", "err", err)
	}
}
