//go:build faults

package main

// Fault tests: things break for real (kill -9, SIGSTOP, SIGTERM, a network
// link going down, corrupt uploads, a failing ffmpeg) while the real binary
// renders, and every trial's video is held frame by frame against one plain
// ffmpeg run. Run with `make test-faults`; each scenario prints
// "name: N passed, M failed".

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/internal/ffmpeg"
	farmpb "github.com/framefarm/framefarm/proto"
)

const (
	killFrames = 128 // frames of the kill scenarios' jobs, in 8 sets of 16
	killSize   = "384x216"
	killSets   = 8
)

// heldAt returns the sets node held at the instant at, from the events.
func heldAt(evs []*farmpb.Event, node string, at time.Time) []int32 {
	holder := map[int32]string{}
	for _, e := range evs {
		if e.UnixMs > at.UnixMilli() {
			break
		}
		switch e.Kind {
		case "set_granted":
			holder[e.SetIndex] = e.Node
		case "part_accepted", "set_released", "set_failed", "lease_expired":
			delete(holder, e.SetIndex)
		}
	}
	var sets []int32
	for s, n := range holder {
		if n == node {
			sets = append(sets, s)
		}
	}
	slices.Sort(sets)
	return sets
}

// nextFor returns the first event about set after seq.
func nextFor(evs []*farmpb.Event, set int32, after time.Time) *farmpb.Event {
	for _, e := range evs {
		if e.SetIndex == set && e.UnixMs >= after.UnixMilli() && e.Kind != "set_granted" {
			return e
		}
	}
	return nil
}

// (a) A node killed with SIGKILL at a random moment (in half the trials
// with its ambassador, as when the machine dies): its set goes back to A
// after the heartbeat timeout, another node renders it, the video is
// frame-exact and no set is accepted twice.
func TestFaultNodeKill(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, killFrames, 1, killSize)
	want := reference(t, frames, 1)
	const hb = 3 * time.Second
	var noticed []time.Duration
	scenario(t, "node-kill", 10, func(t *testing.T, i int) {
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", strconv.Itoa(killSets),
			"--heartbeat-timeout", hb.String(), "--keep-parts")
		w := watch(t, f.addr)
		var nodes []*farmNode
		for k := range 3 {
			nodes = append(nodes, addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{}))
		}
		v := nodes[rng.IntN(len(nodes))]
		machine := i%2 == 1
		w.waitFor(t, "a grant to "+v.name, time.Minute, kind("set_granted", -1, v.name))
		// Sets take 2-4s here: the kill lands in the first set, between
		// sets (then there is nothing to notice) or in the second.
		time.Sleep(time.Duration(rng.Int64N(int64(6 * time.Second))))
		killed := time.Now()
		_ = v.node.cmd.Process.Kill()
		if machine {
			_ = v.amb.cmd.Process.Kill()
		}
		w.waitDone(t, 3*time.Minute)
		evs := w.events()
		checkEvents(t, evs, killSets)
		checkExact(t, out, want)
		partsMatchEvents(t, f.data, f.job, evs)
		noTemps(t, f.data)
		held := heldAt(evs, v.name, killed)
		for _, s := range held {
			e := nextFor(evs, s, killed)
			switch {
			case e == nil:
				t.Errorf("set %d held by the killed node: nothing happened to it", s)
			case e.Kind == "lease_expired" && e.Node == v.name:
				noticed = append(noticed, time.UnixMilli(e.UnixMs).Sub(killed))
			case e.Kind == "part_accepted" && e.Node == v.name:
				// Its upload was complete when it died.
			default:
				t.Errorf("set %d held by the killed node: next event %s by %s", s, e.Kind, e.Node)
			}
		}
		what := "node"
		if machine {
			what = "node and ambassador"
		}
		note(t, "killed %s %s holding sets %v; %d/%d sets granted more than once",
			what, v.name, held, regrants(evs), killSets)
	})
	if len(noticed) > 0 {
		slices.Sort(noticed)
		fmt.Printf("node-kill: a dead node's set went back to A after %v (min) / %v (median) / %v (max), --heartbeat-timeout %v, %d samples\n",
			noticed[0].Round(time.Millisecond), median(noticed).Round(time.Millisecond), noticed[len(noticed)-1].Round(time.Millisecond), hb, len(noticed))
	}
}

// inProgress returns the sets in B at the end of evs.
func inProgress(evs []*farmpb.Event) []int32 {
	holder := map[int32]bool{}
	for _, e := range evs {
		switch e.Kind {
		case "set_granted":
			holder[e.SetIndex] = true
		case "part_accepted", "set_released", "set_failed", "lease_expired":
			delete(holder, e.SetIndex)
		}
	}
	var sets []int32
	for s := range holder {
		sets = append(sets, s)
	}
	slices.Sort(sets)
	return sets
}

func regrants(evs []*farmpb.Event) int {
	granted := map[int32]int{}
	for _, e := range evs {
		if e.Kind == "set_granted" {
			granted[e.SetIndex]++
		}
	}
	n := 0
	for _, c := range granted {
		if c > 1 {
			n++
		}
	}
	return n
}

var grantedLine = regexp.MustCompile(`msg="set granted" .*\bset=(\d+)\b`)

// (b) The coordinator killed with SIGKILL at a random moment and started
// again on the same --data and address: the ambassadors reconnect by
// themselves, the job goes on, and no set accepted before the kill is ever
// rendered again. The last check does not trust the coordinator: the
// nodes' own logs must show no grant of those sets after the kill.
func TestFaultCoordinatorKill(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, killFrames, 1, killSize)
	want := reference(t, frames, 1)
	scenario(t, "coordinator-kill", 6, func(t *testing.T, i int) {
		rng := rand.New(rand.NewPCG(uint64(i), 2))
		out := filepath.Join(t.TempDir(), "out.mkv")
		// A restarted coordinator gives every lease a fresh heartbeat
		// timeout; 10s leaves the nodes time to reconnect through their
		// ambassadors' breakers (open for 5s) and keep their sets.
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", strconv.Itoa(killSets), "--keep-parts",
			"--heartbeat-timeout", "10s")
		w := watch(t, f.addr)
		var nodes []*farmNode
		for k := range 3 {
			nodes = append(nodes, addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{}))
		}
		// A random moment in a phase of the job that each trial picks:
		// after k parts were accepted (k = killSets: during the join or
		// after it), plus up to 2s.
		k := []int{0, 2, 4, 5, 7, killSets}[i%6]
		w.waitCount(t, "accepted parts", 3*time.Minute, k, kind("part_accepted", -1, ""))
		if k == killSets {
			w.waitFor(t, "the join", time.Minute, kind("job_joining", -1, ""))
			time.Sleep(time.Duration(rng.Int64N(int64(500 * time.Millisecond))))
		} else {
			time.Sleep(time.Duration(rng.Int64N(int64(2 * time.Second))))
		}
		before := w.events()
		offsets := make([]int, len(nodes))
		for j, n := range nodes {
			offsets[j] = len(n.node.out.String())
		}
		_ = f.coord.cmd.Process.Kill()
		_ = exited(t, f.coord, 30*time.Second)
		killedAt := time.Now()
		accepted := map[int32]bool{}
		for _, e := range before {
			if e.Kind == "part_accepted" {
				accepted[e.SetIndex] = true
			}
		}
		time.Sleep(time.Duration(rng.Int64N(int64(2 * time.Second))))
		// What a kill can leave: a half-received part and a half-written
		// final, under their temp names. The restart must drop them.
		jobDir := filepath.Join(f.data, "jobs", f.job)
		planted := []string{filepath.Join(jobDir, "parts", ".tmp-set-00003-t99-123456"), filepath.Join(jobDir, ".tmp-final.mkv")}
		for _, p := range planted {
			if err := os.WriteFile(p, []byte("half written"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		restartCoordinator(t, f, "coordinator-2")
		for _, p := range planted {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s is still there after the restart", p)
			}
		}
		restartedAt := time.Now()
		for _, s := range getJob(t, f.addr).Sets {
			if accepted[int32(s.Index)] && s.State != "C" {
				t.Errorf("set %d was accepted before the kill, is %s after the restart", s.Index, s.State)
			}
		}
		w.waitDone(t, 3*time.Minute)
		// A fresh read of the whole stream from the restarted coordinator:
		// everything seen before the kill is still there, unchanged.
		all := watch(t, f.addr)
		all.waitFor(t, "job_done in a fresh replay", time.Minute, kind("job_done", -1, ""))
		evs := all.events()
		for j, e := range before {
			if j >= len(evs) || !proto.Equal(e, evs[j]) {
				t.Fatalf("event %d seen before the kill differs after the restart: %v, now %v", j+1, e, evs[min(j, len(evs)-1)])
			}
		}
		checkEvents(t, evs, killSets)
		for j, n := range nodes {
			for _, l := range logLines(n.node, offsets[j], grantedLine) {
				s, _ := strconv.Atoi(grantedLine.FindStringSubmatch(l)[1])
				if accepted[int32(s)] {
					t.Errorf("%s rendered set %d again after the kill, though it was accepted before: %s", n.name, s, l)
				}
			}
		}
		if !strings.Contains(f.coord.out.String(), "resuming job") {
			t.Errorf("the restarted coordinator did not resume the job:\n%s", f.coord.out.String())
		}
		checkExact(t, out, want)
		partsMatchEvents(t, f.data, f.job, evs)
		noTemps(t, f.data)
		state := "running"
		for _, e := range before {
			if e.Kind == "job_joining" {
				state = "joining"
			}
			if e.Kind == "job_done" {
				state = "done"
			}
		}
		// Sets in progress at the kill whose part was taken after the
		// restart under the lease granted before it.
		kept := 0
		for _, s := range inProgress(before) {
			if e := nextFor(evs, s, killedAt); e != nil && e.Kind == "part_accepted" {
				kept++
			}
		}
		note(t, "killed with %d/%d sets accepted (job %s), restarted %v later; %d of the %d sets in progress kept their lease and were accepted after the restart",
			len(accepted), killSets, state, restartedAt.Sub(killedAt).Round(100*time.Millisecond), kept, len(inProgress(before)))
		if os.Getenv("FAULTS_DEBUG") != "" {
			t.Logf("events:\n%s", formatEvents(evs))
		}
	})
}

// (c) SIGTERM to a node mid-set: it gives the set back at once (a
// set_released event, where a dead node's set waits for the heartbeat
// timeout, here a minute), exits 0 and leaves no files.
func TestFaultSigterm(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, killFrames, 1, killSize)
	want := reference(t, frames, 1)
	scenario(t, "sigterm-release", 3, func(t *testing.T, i int) {
		rng := rand.New(rand.NewPCG(uint64(i), 3))
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", strconv.Itoa(killSets), "--heartbeat-timeout", "60s")
		w := watch(t, f.addr)
		// Its ffmpeg waits 2s first: the set is surely in progress.
		v := addNode(t, f, "victim", nodeOpts{slow: 2 * time.Second})
		w.waitFor(t, "a grant to the victim", time.Minute, kind("set_granted", -1, "victim"))
		for k := range 2 {
			addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{})
		}
		time.Sleep(time.Duration(rng.Int64N(int64(2 * time.Second))))
		sent := time.Now()
		sendSignal(t, v.node, syscall.SIGTERM)
		if code := exited(t, v.node, 30*time.Second); code != 0 {
			t.Errorf("node exited %d after SIGTERM, want 0", code)
		}
		// A node works on --slots sets at once (2 by default): it gives
		// back every one it held.
		held := heldAt(w.events(), "victim", sent)
		if len(held) == 0 {
			t.Fatalf("the victim held no set at SIGTERM")
		}
		var took time.Duration
		for _, h := range held {
			rel := w.waitFor(t, "the set given back", 30*time.Second, kind("set_released", h, "victim"))
			took = max(took, time.UnixMilli(rel.UnixMs).Sub(sent))
		}
		w.waitDone(t, 3*time.Minute)
		evs := w.events()
		for _, e := range evs {
			if e.Kind == "lease_expired" || (e.Kind == "set_failed" && e.Node == "victim") {
				t.Errorf("unexpected %s of set %d: %s", e.Kind, e.SetIndex, e.Detail)
			}
		}
		checkEvents(t, evs, killSets)
		checkExact(t, out, want)
		empty(t, v.work)
		empty(t, v.tmp)
		note(t, "sets %v given back within %v after SIGTERM (heartbeat timeout 60s)", held, took.Round(time.Millisecond))
	})
}

// A long set on a slow node is not taken away while ffmpeg makes progress,
// however long it takes (trial 1); a node alive but stuck (heartbeating, no
// progress) loses its set after --lease (trial 2). The heartbeat timeout is
// long, so only the no-progress rule can take a set.
func TestFaultLease(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 96, 1, "320x240")
	want := reference(t, frames, 1)
	real, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal(err)
	}
	const lease = 3 * time.Second
	scenario(t, "lease", 2, func(t *testing.T, i int) {
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "4", "--lease", lease.String(),
			"--heartbeat-timeout", "60s")
		w := watch(t, f.addr)
		mark := filepath.Join(t.TempDir(), "first")
		var script, name string
		if i == 0 {
			// Slow: 8s of progress (a frame a second) before the real encode.
			name = "slow"
			script = fmt.Sprintf("if [ ! -e %s ]; then touch %s; for n in 1 2 3 4 5 6 7 8; do echo frame=$n; echo progress=continue; sleep 1; done; fi\nexec %s \"$@\"", mark, mark, real)
		} else {
			// Stuck: its first encode never moves.
			name = "stuck"
			script = fmt.Sprintf("if [ ! -e %s ]; then touch %s; exec sleep 3600; fi\nexec %s \"$@\"", mark, mark, real)
		}
		n := addNode(t, f, name, nodeOpts{ffmpeg: script})
		w.waitFor(t, "a grant to the "+name+" node", time.Minute, kind("set_granted", -1, name))
		addNode(t, f, "n1", nodeOpts{})
		if i == 0 {
			w.waitDone(t, 3*time.Minute)
			// The node works on two sets at once (--slots 2): the slow
			// encode is the one that started first, whichever set it is.
			evs := w.events()
			slow, took := int32(-1), time.Duration(0)
			for _, acc := range evs {
				if acc.Kind != "part_accepted" || acc.Node != name {
					continue
				}
				if d := time.UnixMilli(acc.UnixMs).Sub(time.UnixMilli(grantOf(evs, acc).UnixMs)); d > took {
					slow, took = acc.SetIndex, d
				}
			}
			if took <= 2*lease {
				t.Errorf("no set of the slow node took more than twice the lease (%v, the longest %v):\n%s", lease, took, formatEvents(evs))
			}
			for _, e := range evs {
				if e.Kind == "lease_expired" {
					t.Errorf("a set was taken from a node making progress: %s", e.Detail)
				}
			}
			note(t, "set %d took %v on the slow node with --lease %v, and stayed its own", slow, took.Round(100*time.Millisecond), lease)
		} else {
			// The node works on two sets at once (--slots 2): the one whose
			// encode started first is stuck, whichever was granted first.
			exp := w.waitFor(t, "the stuck node's lease expired", time.Minute, kind("lease_expired", -1, name))
			if !strings.Contains(exp.Detail, "no progress") {
				t.Errorf("lease_expired %q, want for no progress", exp.Detail)
			}
			granted := grantOf(w.events(), exp)
			w.waitDone(t, 3*time.Minute)
			if !leaseLost.MatchString(n.node.out.String()) {
				t.Errorf("the stuck node did not drop its set:\n%s", n.node.out.String())
			}
			note(t, "stuck set %d taken back after %v (%s)", exp.SetIndex,
				time.UnixMilli(exp.UnixMs).Sub(time.UnixMilli(granted.UnixMs)).Round(100*time.Millisecond), exp.Detail)
		}
		checkEvents(t, w.events(), 4)
		checkExact(t, out, want)
	})
}

// grantOf is the last grant of e's set to e's node before e.
func grantOf(evs []*farmpb.Event, e *farmpb.Event) *farmpb.Event {
	var g *farmpb.Event
	for _, x := range evs {
		if x.Kind == "set_granted" && x.SetIndex == e.SetIndex && x.Node == e.Node && x.Seq < e.Seq {
			g = x
		}
	}
	if g == nil {
		return e
	}
	return g
}

var leaseLost = regexp.MustCompile(`lease lost; dropping the set.*stale fencing token`)

// (d) A zombie: a node stopped (SIGSTOP) longer than the heartbeat timeout,
// whose set goes to another node and is accepted from it. Woken up
// (SIGCONT), its heartbeat or its upload is refused with
// FAILED_PRECONDITION; the set stays C with the other node's part, and the
// zombie moves on.
func TestFaultZombie(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, killFrames, 1, killSize)
	want := reference(t, frames, 1)
	scenario(t, "zombie", 2, func(t *testing.T, i int) {
		rng := rand.New(rand.NewPCG(uint64(i), 4))
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", strconv.Itoa(killSets),
			"--heartbeat-timeout", "3s", "--keep-parts")
		w := watch(t, f.addr)
		z := addNode(t, f, "zombie", nodeOpts{slow: time.Second})
		g := w.waitFor(t, "a grant to the zombie", time.Minute, kind("set_granted", -1, "zombie"))
		time.Sleep(time.Duration(rng.Int64N(int64(time.Second))))
		sendSignal(t, z.node, syscall.SIGSTOP)
		for k := range 2 {
			addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{})
		}
		w.waitFor(t, "the zombie's lease expired", time.Minute, kind("lease_expired", g.SetIndex, "zombie"))
		acc := w.waitFor(t, "the set accepted from another node", 2*time.Minute, kind("part_accepted", g.SetIndex, ""))
		if acc.Node == "zombie" {
			t.Fatalf("the stopped node's part was accepted")
		}
		part, _ := filepath.Glob(filepath.Join(f.data, "jobs", f.job, "parts", fmt.Sprintf("set-%05d-t*", g.SetIndex)))
		if len(part) != 1 {
			t.Fatalf("parts %v", part)
		}
		sum := sha(t, part[0])
		setBefore := getJob(t, f.addr).Sets[g.SetIndex]
		offset := len(z.node.out.String())
		sendSignal(t, z.node, syscall.SIGCONT)
		deadline := time.Now().Add(30 * time.Second)
		for len(logLines(z.node, offset, leaseLost)) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the zombie did not drop its set after waking up:\n%s", z.node.out.String()[offset:])
			}
			time.Sleep(100 * time.Millisecond)
		}
		refused := logLines(z.node, offset, leaseLost)[0]
		if setAfter := getJob(t, f.addr).Sets[g.SetIndex]; !proto.Equal(setBefore, setAfter) {
			t.Errorf("set %d changed when the zombie woke up: %v, now %v", g.SetIndex, setBefore, setAfter)
		}
		if got := sha(t, part[0]); got != sum {
			t.Errorf("stored part of set %d changed: %s, now %s", g.SetIndex, sum, got)
		}
		w.waitDone(t, 3*time.Minute)
		// It moves on: asks for work again and exits with the job (--once).
		if code := exited(t, z.node, time.Minute); code != 0 {
			t.Errorf("zombie exited %d", code)
		}
		if !regexp.MustCompile(`set granted|no more work`).MatchString(z.node.out.String()[offset:]) {
			t.Errorf("the zombie did not move on:\n%s", z.node.out.String()[offset:])
		}
		evs := w.events()
		checkEvents(t, evs, killSets)
		checkExact(t, out, want)
		partsMatchEvents(t, f.data, f.job, evs)
		how := "heartbeat"
		if strings.Contains(refused, "uploading") || !strings.Contains(refused, "lease lost") {
			how = "upload"
		}
		note(t, "set %d: the zombie's late %s was refused (%s); set and stored part unchanged", g.SetIndex, how,
			regexp.MustCompile(`stale fencing token[^"]*`).FindString(refused))
	})
}

// rawNode talks to the coordinator directly, as a node with a bug (or a
// network that flips bits) would.
type rawNode struct {
	name string
	c    farmpb.NodeServiceClient
}

func raw(t *testing.T, addr, name string) rawNode {
	return rawNode{name: name, c: farmpb.NewNodeServiceClient(dial(t, addr))}
}

func (r rawNode) acquire(t *testing.T) *farmpb.Assignment {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := r.c.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: r.name})
		cancel()
		if err != nil {
			t.Fatalf("%s: AcquireSet: %v", r.name, err)
		}
		if a := resp.GetAssignment(); a != nil {
			return a
		}
		if d := resp.GetDone(); d != "" {
			t.Fatalf("%s: no more work: %s", r.name, d)
		}
	}
	t.Fatalf("%s: no set granted in a minute", r.name)
	return nil
}

func (r rawNode) heartbeat(a *farmpb.Assignment, token uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.c.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: r.name, JobId: a.JobId, SetIndex: a.SetIndex, Token: token, FramesDone: 1})
	return err
}

// upload sends the messages of one upload and returns the answer.
func (r rawNode) upload(ctx context.Context, msgs []*farmpb.UploadPartRequest) error {
	s, err := r.c.UploadPart(ctx)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	_, err = s.CloseAndRecv()
	return err
}

const uploadChunk = 64 << 10

// part builds the messages of an upload of data for a under token.
func part(r rawNode, a *farmpb.Assignment, token uint64, data []byte) []*farmpb.UploadPartRequest {
	msgs := []*farmpb.UploadPartRequest{{Msg: &farmpb.UploadPartRequest_Header{Header: &farmpb.PartHeader{
		Node: r.name, JobId: a.JobId, SetIndex: a.SetIndex, Token: token, Size: int64(len(data)), Frames: uint32(len(a.Frames))}}}}
	for off := 0; off < len(data); off += uploadChunk {
		msgs = append(msgs, &farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Chunk{Chunk: data[off:min(off+uploadChunk, len(data))]}})
	}
	sum := sha256.Sum256(data)
	return append(msgs, &farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Trailer{Trailer: &farmpb.PartTrailer{Sha256: sum[:]}}})
}

// encode renders frames (file names in dir, in order) with the job's
// settings, or with codec instead, as a node would.
func encode(t *testing.T, dir string, names []string, s *farmpb.EncodeSettings, codec string) []byte {
	t.Helper()
	work := t.TempDir()
	for i, n := range names {
		if err := os.Symlink(filepath.Join(dir, n), filepath.Join(work, ffmpeg.SequenceName(i, s.FrameExt))); err != nil {
			t.Fatal(err)
		}
	}
	settings := ffmpeg.Settings{Codec: s.Codec, Rate: ffmpeg.Rate{Num: s.FpsNum, Den: s.FpsDen}, CRF: -1, PixFmt: s.PixFmt,
		Colour: ffmpeg.Colour{Space: s.Color, Range: s.ColorRange, EXRTransfer: s.ExrTransfer, Alpha: s.Alpha}}
	ext := s.PartExt
	if codec != "" {
		settings.Codec, settings.PixFmt, ext = codec, "yuv420p", "mp4"
	}
	out := filepath.Join(work, "part."+ext)
	args, err := ffmpeg.EncodeArgs(ffmpeg.SequencePattern(work, s.FrameExt), settings, out)
	if err != nil {
		t.Fatal(err)
	}
	runCmd(t, "ffmpeg", args...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func frameNames(a *farmpb.Assignment) []string {
	var names []string
	for _, f := range a.Frames {
		names = append(names, f.Name)
	}
	return names
}

// (e) Corrupt and truncated uploads are refused (INVALID_ARGUMENT), the set
// goes back to A with the reason recorded, nothing is stored; an upload cut
// off by the link changes nothing and the same lease uploads again.
func TestFaultCorruptUploads(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 80, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "corrupt-upload", 1, func(t *testing.T, _ int) {
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "8", "--heartbeat-timeout", "2m")
		w := watch(t, f.addr)
		garbage := make([]byte, 50_000)
		for i := range garbage {
			garbage[i] = byte(i * 7)
		}
		cases := []struct {
			name   string
			msgs   func(r rawNode, a *farmpb.Assignment, good []byte) []*farmpb.UploadPartRequest
			reason string
		}{
			{"wrong checksum", func(r rawNode, a *farmpb.Assignment, good []byte) []*farmpb.UploadPartRequest {
				m := part(r, a, a.Token, good)
				m[len(m)-1].GetTrailer().Sha256[0] ^= 1
				return m
			}, "SHA-256 mismatch"},
			{"truncated", func(r rawNode, a *farmpb.Assignment, good []byte) []*farmpb.UploadPartRequest {
				m := part(r, a, a.Token, good[:len(good)/2])
				m[0].GetHeader().Size = int64(len(good))
				return m
			}, " announced"},
			{"no trailer", func(r rawNode, a *farmpb.Assignment, good []byte) []*farmpb.UploadPartRequest {
				m := part(r, a, a.Token, good)
				return m[:len(m)-1]
			}, "without its trailer"},
			{"a frame missing", func(r rawNode, a *farmpb.Assignment, _ []byte) []*farmpb.UploadPartRequest {
				return part(r, a, a.Token, encode(t, frames, frameNames(a)[1:], a.Settings, ""))
			}, "frames, the set has"},
			{"wrong codec", func(r rawNode, a *farmpb.Assignment, _ []byte) []*farmpb.UploadPartRequest {
				return part(r, a, a.Token, encode(t, frames, frameNames(a), a.Settings, "libx264"))
			}, "part is h264, the job encodes ffv1"},
			{"not a video", func(r rawNode, a *farmpb.Assignment, _ []byte) []*farmpb.UploadPartRequest {
				return part(r, a, a.Token, garbage)
			}, "not a readable video"},
		}
		// Each case on a set of its own (a set failing on 3 nodes would
		// fail the job), from a node of its own.
		type held struct {
			r rawNode
			a *farmpb.Assignment
		}
		var sets []held
		for i := range len(cases) + 1 {
			r := raw(t, f.addr, fmt.Sprintf("raw-%d", i))
			sets = append(sets, held{r, r.acquire(t)})
		}
		for i, tc := range cases {
			r, a := sets[i].r, sets[i].a
			good := encode(t, frames, frameNames(a), a.Settings, "")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := r.upload(ctx, tc.msgs(r, a, good))
			cancel()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("%s: got %v, want INVALID_ARGUMENT saying %q", tc.name, err, tc.reason)
			}
			st := getJob(t, f.addr).Sets[a.SetIndex]
			if st.State != "A" || st.Failures != 1 || !strings.Contains(st.LastError, "upload refused") || !strings.Contains(st.LastError, tc.reason) {
				t.Errorf("%s: set %d is %s with %d failures and last error %q, want A, 1, the reason", tc.name, a.SetIndex, st.State, st.Failures, st.LastError)
			}
			w.waitFor(t, "the refusal recorded", 10*time.Second, func(e *farmpb.Event) bool {
				return e.Kind == "set_failed" && e.SetIndex == int32(a.SetIndex) && e.Node == r.name && strings.Contains(e.Detail, tc.reason)
			})
			if err := r.heartbeat(a, a.Token); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("%s: heartbeat after the refusal: %v, want FAILED_PRECONDITION", tc.name, err)
			}
		}
		// Cut off mid-upload (the node or the link died): not the node's
		// fault, nothing changes, and the same lease uploads again.
		r, a := sets[len(cases)].r, sets[len(cases)].a
		good := encode(t, frames, frameNames(a), a.Settings, "")
		ctx, cancel := context.WithCancel(context.Background())
		s, err := r.c.UploadPart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		msgs := part(r, a, a.Token, good)
		for _, m := range msgs[:len(msgs)/2] {
			if err := s.Send(m); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		cancel()
		time.Sleep(500 * time.Millisecond)
		if st := getJob(t, f.addr).Sets[a.SetIndex]; st.State != "B" || st.Token != a.Token || st.Failures != 0 {
			t.Errorf("after an upload cut off: set %d is %s under token %d with %d failures, want B under %d, none", a.SetIndex, st.State, st.Token, st.Failures, a.Token)
		}
		noTemps(t, f.data)
		ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel2()
		if err := r.upload(ctx2, msgs); err != nil {
			t.Errorf("upload again under the same lease: %v", err)
		}
		if st := getJob(t, f.addr).Sets[a.SetIndex]; st.State != "C" {
			t.Errorf("set %d is %s after the second upload, want C", a.SetIndex, st.State)
		}
		// Real nodes render the refused sets again: the video is exact.
		for k := range 2 {
			addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{})
		}
		w.waitDone(t, 3*time.Minute)
		checkEvents(t, w.events(), 8)
		checkExact(t, out, want)
		noTemps(t, f.data)
		note(t, "%d corrupt uploads refused and their sets given back; an upload cut off left its set untouched and was taken when sent again", len(cases))
	})
}

// (d, at the wire) A zombie's late upload, heartbeat, frame request and
// release are all refused with FAILED_PRECONDITION, before and after the
// set's new holder completes it; the set and the stored part do not change.
// The zombie's part is different (its frames reversed), so that a wrongly
// taken zombie part would show in the stored part and in the video.
func TestFaultZombieUpload(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 48, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "zombie-upload", 1, func(t *testing.T, _ int) {
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "2", "--heartbeat-timeout", "2s", "--keep-parts")
		w := watch(t, f.addr)
		zombie, fresh := raw(t, f.addr, "zombie"), raw(t, f.addr, "fresh")
		za := zombie.acquire(t)
		names := frameNames(za)
		slices.Reverse(names)
		zpart := encode(t, frames, names, za.Settings, "")
		w.waitFor(t, "the zombie's lease expired", time.Minute, kind("lease_expired", int32(za.SetIndex), "zombie"))
		fa := fresh.acquire(t)
		if fa.SetIndex != za.SetIndex || fa.Token <= za.Token {
			t.Fatalf("fresh node got set %d token %d, want set %d with a token above %d", fa.SetIndex, fa.Token, za.SetIndex, za.Token)
		}
		stop := make(chan struct{})
		beats := make(chan struct{})
		go func() { // the new holder keeps its lease
			defer close(beats)
			for {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond):
					_ = fresh.heartbeat(fa, fa.Token)
				}
			}
		}()
		defer func() { close(stop); <-beats }()
		fpart := encode(t, frames, frameNames(fa), fa.Settings, "")
		refusedAll := func(when string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			checks := map[string]error{
				"upload":    zombie.upload(ctx, part(zombie, za, za.Token, zpart)),
				"heartbeat": zombie.heartbeat(za, za.Token),
			}
			_, checks["release"] = zombie.c.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: "zombie", JobId: za.JobId, SetIndex: za.SetIndex, Token: za.Token, Error: "late"})
			if s, err := zombie.c.StreamFrames(ctx, &farmpb.StreamFramesRequest{Node: "zombie", JobId: za.JobId, SetIndex: za.SetIndex, Token: za.Token}); err != nil {
				checks["frames"] = err
			} else {
				_, checks["frames"] = s.Recv()
			}
			for what, err := range checks {
				if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "stale fencing token") {
					t.Errorf("%s: the zombie's %s got %v, want FAILED_PRECONDITION (stale fencing token)", when, what, err)
				}
			}
		}
		before := getJob(t, f.addr).Sets[za.SetIndex]
		refusedAll("while the set is held by another node")
		after := getJob(t, f.addr).Sets[za.SetIndex]
		if before.State != "B" || before.Node != "fresh" || before.Token != fa.Token || before.Failures != 0 ||
			after.State != before.State || after.Node != before.Node || after.Token != before.Token || after.Failures != 0 {
			t.Errorf("set %d: %v, after the zombie: %v; want B held by fresh under token %d, unchanged", za.SetIndex, before, after, fa.Token)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := fresh.upload(ctx, part(fresh, fa, fa.Token, fpart)); err != nil {
			t.Fatalf("the holder's upload: %v", err)
		}
		stored := filepath.Join(f.data, "jobs", f.job, "parts", fmt.Sprintf("set-%05d-t%d.%s", fa.SetIndex, fa.Token, fa.Settings.PartExt))
		sum := sha(t, stored)
		refusedAll("after the set was completed")
		if err := fresh.upload(ctx, part(fresh, fa, fa.Token, fpart)); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("a second upload of a completed set: %v, want FAILED_PRECONDITION", err)
		}
		if got := sha(t, stored); got != sum {
			t.Errorf("stored part changed: %s, now %s", sum, got)
		}
		if st := getJob(t, f.addr).Sets[za.SetIndex]; st.State != "C" || st.Node != "fresh" || st.Failures != 0 {
			t.Errorf("set %d after the zombie: %v", za.SetIndex, st)
		}
		addNode(t, f, "n0", nodeOpts{})
		w.waitDone(t, 3*time.Minute)
		checkEvents(t, w.events(), 2)
		checkExact(t, out, want)
		note(t, "zombie token %d refused (upload, heartbeat, frames, release) while token %d held the set and after it completed", za.Token, fa.Token)
	})
}

// ffmpegFails is what a failing ffmpeg says: an encoder it cannot open (a
// full disk would be the machine's fault, not the set's: see TestFaultNodeEnv).
const ffmpegFails = "[vost#0:0 @ 0x55d0] Error while opening encoder - maybe incorrect parameters such as bit_rate, rate, width or height"

// (f) ffmpeg failing on a node: the set is given back with ffmpeg's own
// words; a node that failed 3 sets gets no more (trial 1); a set that
// failed on 3 nodes fails the job (trial 2). Both show in status.
func TestFaultFFmpegFails(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 80, 1, "320x240")
	want := reference(t, frames, 1)
	failing := fmt.Sprintf("echo %q >&2\nexit 1", ffmpegFails)
	scenario(t, "ffmpeg-fail", 2, func(t *testing.T, i int) {
		out := filepath.Join(t.TempDir(), "out.mkv")
		if i == 0 {
			t.Log("a node whose ffmpeg always fails is excluded after 3 sets; the others finish the job")
			f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "8")
			w := watch(t, f.addr)
			bad := addNode(t, f, "bad", nodeOpts{ffmpeg: failing})
			w.waitFor(t, "the bad node excluded", time.Minute, kind("node_excluded", -1, "bad"))
			if code := exited(t, bad.node, 30*time.Second); code != 0 {
				t.Errorf("excluded node exited %d, want 0 (--once: no more work)", code)
			}
			if !strings.Contains(bad.node.out.String(), "node excluded") {
				t.Errorf("the excluded node was not told why:\n%s", bad.node.out.String())
			}
			failedSets := map[int32]bool{}
			for _, e := range w.events() {
				if e.Kind == "set_failed" && e.Node == "bad" {
					failedSets[e.SetIndex] = true
					if !strings.Contains(e.Detail, ffmpegFails) {
						t.Errorf("set_failed without ffmpeg's words: %q", e.Detail)
					}
				}
			}
			// The node works on two sets at once (--slots 2): the set it
			// held when its third failure excluded it may fail as well.
			if len(failedSets) < 3 || len(failedSets) > 4 {
				t.Errorf("the bad node failed sets %v, want 3 different ones (4 with the one in flight)", failedSets)
			}
			st := getJob(t, f.addr)
			if n := nodeStatus(st, "bad"); n == nil || !n.Excluded || int(n.Failures) != len(failedSets) {
				t.Errorf("status of the bad node: %v, want excluded with %d failures", n, len(failedSets))
			}
			text := runCmd(t, binary, "status", "--coordinator", f.addr)
			if f := row(t, text, "bad"); !slices.Contains(f, "yes") {
				t.Errorf("status does not show the bad node excluded:\n%s", text)
			}
			for k := range 2 {
				addNode(t, f, fmt.Sprintf("good%d", k), nodeOpts{})
			}
			w.waitDone(t, 3*time.Minute)
			checkEvents(t, w.events(), 8)
			checkExact(t, out, want)
			for _, s := range getJob(t, f.addr).Sets {
				if failedSets[int32(s.Index)] && (s.Failures != 1 || !strings.Contains(s.LastError, "Error while opening encoder")) {
					t.Errorf("set %d: %d failures, last error %q", s.Index, s.Failures, s.LastError)
				}
			}
			note(t, "node excluded after failing sets %v with ffmpeg's error; the job finished on the other nodes", sortedSets(failedSets))
			return
		}
		t.Log("3 nodes whose ffmpeg fails: a set fails on all 3 and the job fails")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "2")
		w := watch(t, f.addr)
		var bad []*farmNode
		for k := range 3 {
			bad = append(bad, addNode(t, f, fmt.Sprintf("bad%d", k), nodeOpts{ffmpeg: failing}))
		}
		e := w.waitFor(t, "the job failed", time.Minute, kind("job_failed", -1, ""))
		if !strings.Contains(e.Detail, "failed 3 times") || !strings.Contains(e.Detail, ffmpegFails) {
			t.Errorf("job_failed: %q, want the set's 3 failures and ffmpeg's words", e.Detail)
		}
		for _, b := range bad {
			if code := exited(t, b.node, 30*time.Second); code != 0 {
				t.Errorf("%s exited %d", b.name, code)
			}
		}
		failedEvents := 0
		for _, ev := range w.events() {
			if ev.Kind == "job_failed" {
				failedEvents++
			}
		}
		if failedEvents != 1 {
			t.Errorf("%d job_failed events, want 1", failedEvents)
		}
		st := getJob(t, f.addr)
		if st.State != "failed" || st.Reason != e.Detail {
			t.Errorf("status: state %q reason %q", st.State, st.Reason)
		}
		var fsets []uint32
		for _, s := range st.Sets {
			if s.State == "F" {
				fsets = append(fsets, s.Index)
				if s.Failures != 3 || !strings.Contains(s.LastError, "Error while opening encoder") {
					t.Errorf("failed set %d: %d failures, last error %q", s.Index, s.Failures, s.LastError)
				}
			}
		}
		if len(fsets) == 0 {
			t.Errorf("no set in state F: %v", st.Sets)
		}
		text := runCmd(t, binary, "status", "--coordinator", f.addr)
		if !strings.Contains(text, "failed") || !strings.Contains(text, "reason: "+e.Detail[:40]) {
			t.Errorf("status text does not show the failure:\n%s", text)
		}
		fetch := exec.Command(binary, "fetch", "--coordinator", f.addr, "-o", filepath.Join(t.TempDir(), "x.mkv"), "--wait")
		if b, err := fetch.CombinedOutput(); err == nil || !strings.Contains(string(b), "Error while opening encoder") {
			t.Errorf("fetch --wait of a failed job: %v\n%s", err, b)
		}
		note(t, "sets in F: %v; the job failed once, with the first: %.90s...", fsets, e.Detail)
	})
}

func sortedSets(m map[int32]bool) []int32 {
	var s []int32
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

var (
	forwarded   = regexp.MustCompile(`msg="forwarded call"`)
	breakerOpen = regexp.MustCompile(`msg="circuit breaker state changed".* to=open`)
	breakerShut = regexp.MustCompile(`msg="circuit breaker state changed".* to=closed`)
)

// Bounds on the calls during an outage of ~30s. A node calls its
// ambassador for its heartbeats (every heartbeat-timeout/4) and for work
// or an upload. While the coordinator cannot be reached, each such call
// waits in the ambassador up to its LinkWait (2s) for the connection, so
// that a coordinator coming back is used at once, and the node retries
// after the ambassador's hint (~100ms): about one call per 2.1s for each
// call the node has in flight (2 slots, each with a heartbeat and an
// upload or a request for work: 4), some 65 in 33s. The ambassador
// forwards calls until its breaker opens, then one probe and one report
// per open period (5s). A busy loop would make thousands.
const (
	maxNodeCalls  = 120
	maxCoordCalls = 40
)

// watchBreakerOpen polls status until node's breaker shows open, then
// closed again; it returns when it saw open and when closed. Whether status
// catches the open state depends on when the link comes back within the
// breaker's open time, so it also returns how many times status says the
// breaker opened after since (from the ambassador's report, which gets
// through once the link is back whatever the state).
func watchBreakerOpen(t *testing.T, addr, node string, since time.Time, d time.Duration) (sawOpen, sawClosed time.Time, opens uint32) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn := dial(t, addr)
		st, err := farmpb.NewFarmServiceClient(conn).GetJob(ctx, &farmpb.GetJobRequest{})
		cancel()
		conn.Close()
		if err != nil {
			continue
		}
		n := nodeStatus(st, node)
		if n != nil && n.Breaker != nil && n.Breaker.LastOpenedUnixMs >= since.UnixMilli() {
			opens = max(opens, n.Breaker.Opens)
		}
		switch {
		case n == nil || n.Breaker == nil:
		case n.Breaker.State == "open" && sawOpen.IsZero():
			sawOpen = time.Now()
		case n.Breaker.State == "closed" && !sawOpen.IsZero():
			return sawOpen, time.Now(), opens
		case n.Breaker.State == "closed" && opens > 0:
			// Closed already, and status says it opened: the open state
			// itself was not reported in time.
			return sawOpen, time.Time{}, opens
		}
	}
	return sawOpen, time.Time{}, opens
}

// (g) The coordinator stopped (SIGSTOP) for 30s mid-job: each ambassador's
// breaker opens, the nodes back off, the calls that reach the coordinator
// stay few, status shows the breakers open once the coordinator can hear
// again, and everything recovers: no lease is lost, the video is exact.
func TestFaultCoordinatorOutage(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 96, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "coordinator-stop-30s", 1, func(t *testing.T, _ int) {
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "8", "--heartbeat-timeout", "10s")
		w := watch(t, f.addr)
		var nodes []*farmNode
		var proxies []*countingProxy
		for k := range 2 {
			p := startProxy(t, "127.0.0.1:0", f.addr)
			proxies = append(proxies, p)
			nodes = append(nodes, addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{via: p.addr(), ambDebug: true, slow: 3 * time.Second}))
		}
		for _, n := range nodes {
			w.waitFor(t, "a grant to "+n.name, time.Minute, kind("set_granted", -1, n.name))
		}
		time.Sleep(time.Second)
		t0 := time.Now()
		sendSignal(t, f.coord, syscall.SIGSTOP)
		time.Sleep(30 * time.Second)
		// Wake it just after a breaker (re)opened, so that its open period
		// overlaps the coordinator's return: the window in which status
		// can show it open.
		if _, ok := firstLineAfter(nodes[0].amb, breakerOpen, t0.Add(30*time.Second), 20*time.Second); !ok {
			t.Errorf("%s's breaker did not open during the outage", nodes[0].name)
		}
		sendSignal(t, f.coord, syscall.SIGCONT)
		t1 := time.Now()
		opened, closed, statusOpens := watchBreakerOpen(t, f.addr, nodes[0].name, t0, 30*time.Second)
		if opened.IsZero() && statusOpens == 0 {
			t.Errorf("status never showed %s's breaker open, nor that it opened during the outage", nodes[0].name)
		}
		var report []string
		for k, n := range nodes {
			calls, conns := proxies[k].callsBetween(t0, t1)
			nodeCalls := linesBetween(n.amb, forwarded, t0, t1)
			opens := linesBetween(n.amb, breakerOpen, t0, t1)
			if opens == 0 {
				t.Errorf("%s: the breaker never opened", n.name)
			}
			if calls > maxCoordCalls || nodeCalls > maxNodeCalls {
				t.Errorf("%s: %d calls reached the coordinator, %d node calls in %v of outage; want at most %d and %d",
					n.name, calls, nodeCalls, t1.Sub(t0).Round(time.Second), maxCoordCalls, maxNodeCalls)
			}
			back, _ := firstLineAfter(n.amb, breakerShut, t1, time.Minute)
			report = append(report, fmt.Sprintf("%s: %d node calls, %d calls (%d connections) reached the coordinator, breaker opened %d times, closed %v after SIGCONT",
				n.name, nodeCalls, calls, conns, opens, back.Sub(t1).Round(100*time.Millisecond)))
		}
		next := w.waitFor(t, "a part accepted after the outage", 2*time.Minute, func(e *farmpb.Event) bool {
			return e.Kind == "part_accepted" && e.UnixMs >= t1.UnixMilli()
		})
		w.waitDone(t, 3*time.Minute)
		evs := w.events()
		for _, e := range evs {
			if e.Kind == "lease_expired" {
				t.Errorf("a lease was lost to the coordinator's pause: %s", e.Detail)
			}
		}
		checkEvents(t, evs, 8)
		checkExact(t, out, want)
		note(t, "outage %v; %s; %s; first part accepted %v after SIGCONT",
			t1.Sub(t0).Round(100*time.Millisecond), strings.Join(report, "; "), statusSaw("n0", opened, closed, t1, statusOpens),
			time.UnixMilli(next.UnixMs).Sub(t1).Round(100*time.Millisecond))
	})
}

// (g, network) A render machine in its own network namespace, its link to
// the coordinator cut (the veth taken down) for 20s mid-set: its breaker
// opens, its node backs off, its set goes to a node that can still be
// heard; once the link is back, status shows its breaker open, its late
// upload or heartbeat is refused, it recovers and renders again.
func TestFaultLinkDown(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 96, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "link-down-netns", 1, func(t *testing.T, i int) {
		ns, hostIP, _, hostDev := netns(t, i)
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "8", "--heartbeat-timeout", "5s")
		w := watch(t, f.addr)
		link := startProxy(t, hostIP+":0", f.addr)
		cut := addNode(t, f, "cut", nodeOpts{via: link.addr(), prep: inNetns(ns), ambDebug: true, slow: 2 * time.Second, noOnce: true})
		g := w.waitFor(t, "a grant to the cut node", time.Minute, kind("set_granted", -1, "cut"))
		home := addNode(t, f, "home", nodeOpts{slow: 4 * time.Second})
		time.Sleep(500 * time.Millisecond)
		t0 := time.Now()
		ipLink(t, hostDev, "down")
		w.waitFor(t, "the cut node's lease expired", time.Minute, kind("lease_expired", g.SetIndex, "cut"))
		time.Sleep(time.Until(t0.Add(20 * time.Second)))
		if _, ok := firstLineAfter(cut.amb, breakerOpen, t0.Add(20*time.Second), 20*time.Second); !ok {
			t.Errorf("the cut node's breaker did not open")
		}
		offset := len(cut.node.out.String())
		ipLink(t, hostDev, "up")
		t1 := time.Now()
		opened, closed, statusOpens := watchBreakerOpen(t, f.addr, "cut", t0, 40*time.Second)
		if opened.IsZero() && statusOpens == 0 {
			t.Errorf("status never showed the cut node's breaker open, nor that it opened during the outage")
		}
		calls, conns := link.callsBetween(t0, t1)
		nodeCalls := linesBetween(cut.amb, forwarded, t0, t1)
		opens := linesBetween(cut.amb, breakerOpen, t0, t1)
		if opens == 0 || calls > maxCoordCalls || nodeCalls > maxNodeCalls {
			t.Errorf("during the outage: breaker opened %d times, %d calls reached the coordinator, %d node calls; want >0, <=%d, <=%d",
				opens, calls, nodeCalls, maxCoordCalls, maxNodeCalls)
		}
		w.waitDone(t, 3*time.Minute)
		back, _ := firstLineAfter(cut.amb, breakerShut, t1, time.Minute)
		evs := w.events()
		checkEvents(t, evs, 8)
		checkExact(t, out, want)
		// The other node may finish the job before the cut node's next
		// retry (its backoff reaches several seconds): give it time to hear.
		if _, ok := firstLineAfter(cut.node, leaseLost, t1, 30*time.Second); !ok {
			t.Errorf("the cut node did not drop its stale set once the link was back:\n%s", cut.node.out.String()[offset:])
		}
		rendered := 0
		for _, e := range evs {
			if e.Kind == "part_accepted" && e.Node == "cut" && e.UnixMs > t1.UnixMilli() {
				rendered++
			}
		}
		_ = home
		note(t, "link down %v: breaker opened %d times, %d node calls, %d calls (%d connections) reached the coordinator; set %d went to another node; "+
			"after the link came back %s, the ambassador closed it %v after the link came back; the cut node rendered %d sets after",
			t1.Sub(t0).Round(100*time.Millisecond), opens, nodeCalls, calls, conns, g.SetIndex, statusSaw("the cut node", opened, closed, t1, statusOpens),
			back.Sub(t1).Round(100*time.Millisecond), rendered)
	})
}

// (h) Every role stops cleanly on SIGINT and on SIGTERM, mid-job: exit 0,
// the node's set given back, no temp file in the data folder or the work
// folders; a coordinator stopped this way resumes the job.
func TestFaultGracefulShutdown(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 96, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "graceful-shutdown", 2, func(t *testing.T, i int) {
		first, second := syscall.SIGINT, syscall.SIGTERM
		if i == 1 {
			first, second = second, first
		}
		stop := func(p *proc, sig syscall.Signal) {
			t.Helper()
			sendSignal(t, p, sig)
			if code := exited(t, p, 30*time.Second); code != 0 {
				t.Errorf("%s exited %d after %v, want 0", p.name, code, sig)
			}
		}
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "8", "--heartbeat-timeout", "60s")
		w := watch(t, f.addr)
		n0 := addNode(t, f, "n0", nodeOpts{slow: 2 * time.Second, noOnce: true})
		g := w.waitFor(t, "a grant to n0", time.Minute, kind("set_granted", -1, "n0"))
		n1 := addNode(t, f, "n1", nodeOpts{noOnce: true})
		time.Sleep(500 * time.Millisecond)
		stop(n0.node, first)
		w.waitFor(t, "n0's set given back", 30*time.Second, kind("set_released", g.SetIndex, "n0"))
		empty(t, n0.work)
		empty(t, n0.tmp)
		stop(n0.amb, second)
		w.waitFor(t, "a grant to n1", time.Minute, kind("set_granted", -1, "n1"))
		stop(f.coord, first)
		noTemps(t, f.data)
		restartCoordinator(t, f, "coordinator-2")
		w.waitDone(t, 3*time.Minute)
		checkEvents(t, w.events(), 8)
		checkExact(t, out, want)
		stop(n1.node, second)
		stop(n1.amb, first)
		stop(f.coord, second)
		empty(t, n1.work)
		empty(t, n1.tmp)
		noTemps(t, f.data, filepath.Dir(out))
		note(t, "node %v, ambassador %v, coordinator %v mid-job; idle node %v, ambassador %v, coordinator %v: all exited 0, nothing left behind",
			first, second, first, second, first, second)
	})
}

// (h, in process) The same roles run in this process and are stopped as a
// signal stops them (their context cancelled), one of them mid-set: no
// goroutine of theirs is left behind.
func TestFaultShutdownNoLeaks(t *testing.T) {
	needFFmpeg(t)
	scenario(t, "shutdown-no-leaks", 1, func(t *testing.T, _ int) {
		tmp := t.TempDir()
		frames := filepath.Join(tmp, "frames")
		genFrames(t, frames, 48, 1, "320x240")
		base := goroutines()
		coordCtx, stopCoord := context.WithCancel(context.Background())
		ambCtx, stopAmb := context.WithCancel(context.Background())
		n0Ctx, stopN0 := context.WithCancel(context.Background())
		n1Ctx, stopN1 := context.WithCancel(context.Background())
		defer func() { stopCoord(); stopAmb(); stopN0(); stopN1() }()
		data := filepath.Join(tmp, "data")
		coord := startRole(coordCtx, "coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0",
			"--sets", "2", "--codec", "ffv1", "--poll-window", "1s", "--log-level", "warn")
		m := coordReady.FindStringSubmatch(coord.firstLine(t))
		if m == nil {
			t.Fatalf("coordinator: %s", coord.stderr)
		}
		addr := m[2]
		w := watch(t, addr)
		amb := startRole(ambCtx, "ambassador", "--coordinator", addr, "--listen", "127.0.0.1:0", "--log-level", "warn")
		am := ambReady.FindStringSubmatch(amb.firstLine(t))
		if am == nil {
			t.Fatalf("ambassador: %s", amb.stderr)
		}
		work0, work1 := filepath.Join(tmp, "w0"), filepath.Join(tmp, "w1")
		n0 := startRole(n0Ctx, "node", "--ambassador", am[1], "--name", "n0", "--work", work0, "--log-level", "warn")
		g := w.waitFor(t, "a grant to n0", time.Minute, kind("set_granted", -1, "n0"))
		// Past the grant's delivery (a node stopped while its grant is on
		// the way cannot give back what it never got: that set waits for
		// the heartbeat timeout, as a dead node's would).
		time.Sleep(300 * time.Millisecond)
		stopN0() // as SIGINT does, mid-set
		n0.wait(t, "node n0", exitOK)
		w.waitFor(t, "n0's set given back", 30*time.Second, func(e *farmpb.Event) bool {
			return e.Node == "n0" && e.SetIndex == g.SetIndex && (e.Kind == "set_released" || e.Kind == "part_accepted")
		})
		n1 := startRole(n1Ctx, "node", "--ambassador", am[1], "--name", "n1", "--work", work1, "--log-level", "warn")
		w.waitDone(t, 3*time.Minute)
		stopN1()
		n1.wait(t, "node n1", exitOK)
		stopAmb()
		amb.wait(t, "ambassador", exitOK)
		stopCoord()
		coord.wait(t, "coordinator", exitOK)
		empty(t, work0)
		empty(t, work1)
		noTemps(t, data)
		w.close()
		left := leaked(t, base, 10*time.Second)
		for _, g := range left {
			t.Errorf("goroutine left behind after every role stopped:\n%s", g)
		}
		note(t, "4 roles stopped (one node mid-set); %d goroutines of theirs left", len(left))
	})
}

// goroutines returns the ids of the running goroutines.
func goroutines() map[string]bool {
	ids := map[string]bool{}
	for _, g := range stacks() {
		ids[strings.Fields(g)[1]] = true
	}
	return ids
}

func stacks() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Split(strings.TrimSpace(string(buf)), "\n\n")
}

// leaked waits up to d for the goroutines started since base that run our
// code, gRPC, SQL or a subprocess to end, and returns those left.
func leaked(t *testing.T, base map[string]bool, d time.Duration) []string {
	t.Helper()
	ours := regexp.MustCompile(`github\.com/framefarm/framefarm/(coordinator|ambassador|node|internal)|google\.golang\.org/grpc|database/sql|modernc\.org/sqlite|os/exec`)
	var left []string
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		for _, g := range stacks()[1:] { // [0] is this goroutine
			if !base[strings.Fields(g)[1]] && ours.MatchString(g) && !strings.Contains(g, "faults_helpers_test.go") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
	}
}

// statusSaw says what status showed of a node's breaker after the outage.
func statusSaw(node string, opened, closed, back time.Time, opens uint32) string {
	if opened.IsZero() {
		return fmt.Sprintf("status showed %s's breaker closed again, opened %d times during the outage", node, opens)
	}
	return fmt.Sprintf("status showed %s's breaker open %v after the outage ended and closed %v later (opened %d times)",
		node, opened.Sub(back).Round(100*time.Millisecond), closed.Sub(opened).Round(100*time.Millisecond), opens)
}
