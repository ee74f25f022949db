//go:build faults

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// TestFaultDataFull: the coordinator's --data fills up while nodes render
// (a small tmpfs). Their uploads are refused as the coordinator's own
// failure (ResourceExhausted): no set fails, no node is excluded, the nodes
// keep their sets and upload again, and once space is freed the job
// finishes frame-exact.
func TestFaultDataFull(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 32, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "data-full", 1, func(t *testing.T, _ int) {
		mnt := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
			lacking(t, "cannot mount a tmpfs here (%v: %s)", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
		data := filepath.Join(mnt, "data")
		out := filepath.Join(t.TempDir(), "out.mkv")
		args := []string{"coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0", "--codec", "ffv1",
			"--out", out, "--sets", "4", "--heartbeat-timeout", "10s", "--poll-window", "2s"}
		coord, m := start(t, "coordinator", coordReady, args...)
		f := &farm{coord: coord, job: m[1], addr: m[2], data: data, coordArgs: args}
		w := watch(t, f.addr)
		var nodes []*farmNode
		for k := range 2 {
			nodes = append(nodes, addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{slow: 3 * time.Second}))
		}
		// Every set is out (2 nodes, 2 slots each): nothing more needs a
		// commit until the parts come in. Then the disk fills up.
		w.waitCount(t, "the 4 sets granted", time.Minute, 4, func(e *farmpb.Event) bool { return e.Kind == "set_granted" })
		filler := filepath.Join(mnt, "filler")
		fill, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		chunk := make([]byte, 1<<20)
		for {
			if _, err := fill.Write(chunk); err != nil {
				break
			}
		}
		fill.Close()
		refused := regexp.MustCompile(`uploading the part failed.*(ResourceExhausted|full)`)
		deadline := time.Now().Add(time.Minute)
		for _, n := range nodes {
			for len(logLines(n.node, 0, refused)) == 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if len(logLines(n.node, 0, refused)) == 0 {
				t.Fatalf("%s's upload was not refused for the full disk:\n%s", n.name, n.node.out.String())
			}
		}
		time.Sleep(2 * time.Second) // a few more tries while full
		// status shows it as the coordinator's own fault.
		if st := runCmd(t, binary, "status", "--coordinator", f.addr); !strings.Contains(st, "coordinator's own fault") || !strings.Contains(st, "free space there") {
			t.Errorf("status does not show the coordinator's own fault:\n%s", st)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		freed := time.Now()
		w.waitDone(t, 3*time.Minute)
		for _, e := range w.events() {
			if e.Kind == "set_failed" || e.Kind == "node_excluded" || e.Kind == "lease_expired" || e.Kind == "job_failed" {
				t.Errorf("the coordinator's full disk was charged to a node: %s", formatEvents([]*farmpb.Event{e}))
			}
		}
		checkExact(t, out, want)
		tries := 0
		for _, n := range nodes {
			tries += len(logLines(n.node, 0, refused))
		}
		note(t, "--data full with 4 parts to come: %d uploads refused as the coordinator's (ResourceExhausted), no set failed, no node excluded; done %s after the space was freed, frame-exact",
			tries, time.Since(freed).Round(100*time.Millisecond))
	})
}
