//go:build faults

package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

// TestFaultCoordinatorKillJobs: kill -9 of a coordinator serving three jobs
// (queued, running, some sets of each done), started again on the same data
// folder and address: every job finishes frame-exact, and no set accepted
// before the kill is rendered again.
func TestFaultCoordinatorKillJobs(t *testing.T) {
	needFFmpeg(t)
	const jobs = 3
	var frames []string
	var want [][]string
	for j := range jobs {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("frames-%d", j))
		genFrames(t, dir, 48, 1, "192x108")
		frames = append(frames, dir)
		want = append(want, reference(t, dir, 1))
	}
	scenario(t, "coordinator-kill-jobs", 3, func(t *testing.T, i int) {
		rng := rand.New(rand.NewPCG(uint64(i), 3))
		data := filepath.Join(t.TempDir(), "data")
		args := []string{"coordinator", "--data", data, "--listen", "127.0.0.1:0", "--heartbeat-timeout", "10s", "--poll-window", "2s"}
		coord, m := start(t, "coordinator", farmReady, args...)
		f := &farm{coord: coord, addr: m[1], data: data}
		w := watch(t, f.addr)
		var ids, outs []string
		for j := range jobs {
			out := filepath.Join(t.TempDir(), "out.mkv")
			ids = append(ids, strings.TrimSpace(runCmd(t, binary, "submit", "--coordinator", f.addr, "--frames", frames[j],
				"--codec", "ffv1", "--out", out, "--sets", "6", "--priority", fmt.Sprint(j%2))))
			outs = append(outs, out)
		}
		for k := range 2 {
			addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{noOnce: true, slow: 100 * time.Millisecond})
		}
		// After k of the 18 parts, plus up to a second.
		k := []int{2, 7, 12}[i%3]
		w.waitCount(t, "accepted parts", 3*time.Minute, k, func(e *farmpb.Event) bool { return e.Kind == "part_accepted" })
		time.Sleep(time.Duration(rng.Int64N(int64(time.Second))))
		before := w.events()
		_ = f.coord.cmd.Process.Kill()
		_ = exited(t, f.coord, 30*time.Second)
		accepted := map[string]bool{}
		for _, e := range before {
			if e.Kind == "part_accepted" {
				accepted[fmt.Sprintf("%s/%d", e.JobId, e.SetIndex)] = true
			}
		}
		f.coord, _ = start(t, "coordinator-2", farmReady, append(args, "--listen", f.addr)...)
		for _, id := range ids {
			w.waitFor(t, "job "+id+" done", 3*time.Minute, func(e *farmpb.Event) bool { return e.JobId == id && e.Kind == "job_done" })
		}
		evs := w.events()
		for _, e := range evs[len(before):] {
			if e.Kind == "set_granted" && accepted[fmt.Sprintf("%s/%d", e.JobId, e.SetIndex)] {
				t.Errorf("job %s set %d was accepted before the kill and granted again after it", e.JobId, e.SetIndex)
			}
		}
		for j := range jobs {
			checkExact(t, outs[j], want[j])
		}
		noTemps(t, data)
		note(t, "killed after %d of 18 parts (%d accepted before the kill); all 3 jobs finished frame-exact, no accepted set rendered again",
			k, len(accepted))
	})
}
