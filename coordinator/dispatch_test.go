package coordinator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
)

// farmFixture is a coordinator with a real store and no jobs, for the
// cross-job grant.
func farmFixture(t *testing.T) *Coordinator {
	t.Helper()
	st, err := openStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newTestCoordinator(st)
}

// addTestJob creates a job of sets sets (one frame each), submitted at
// t0+after.
func addTestJob(t *testing.T, c *Coordinator, id string, priority, sets int, after time.Duration) *jobRun {
	t.Helper()
	frames := make([]frameRecord, sets)
	for i := range frames {
		frames[i] = frameRecord{Number: int64(i + 1), Name: fmt.Sprintf("f_%04d.png", i+1), Size: 10, ModTime: t0}
	}
	jr := &jobRun{
		rec:    jobRecord{ID: id, Name: id, Created: t0.Add(after), FramesDir: "/frames/" + id, Settings: jobSettings{Codec: "ffv1", FPSNum: 24, FPSDen: 1}},
		frames: frames,
		job:    &job.Job{ID: id, State: job.JobQueued, Priority: priority, Sets: job.Partition(sets, sets), NodeFailures: map[string]int{}},
	}
	createTestJob(t, c, jr)
	return jr
}

// wait puts a node's request for work in the queue, as AcquireSet does.
func wait(t *testing.T, c *Coordinator, node string, free, load float64, once bool) *waiter {
	t.Helper()
	w := &waiter{node: node, free: free, load: load, once: once, got: make(chan offer, 1)}
	if err := c.change(context.Background(), func(changes) error {
		w.since = c.cfg.Now()
		c.waiters = append(c.waiters, w)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

func offered(t *testing.T, w *waiter) (offer, bool) {
	t.Helper()
	select {
	case o := <-w.got:
		return o, true
	default:
		return offer{}, false
	}
}

func TestGrantHighestPriorityFirst(t *testing.T) {
	c := farmFixture(t)
	addTestJob(t, c, "low", 0, 2, 0)
	addTestJob(t, c, "high", 10, 2, time.Second)
	addTestJob(t, c, "mid", 5, 2, 2*time.Second)
	var got []string
	for i := range 6 {
		o, ok := offered(t, wait(t, c, fmt.Sprintf("n%d", i), 4, 0, false))
		if !ok {
			t.Fatalf("request %d: no set, with sets available", i)
		}
		got = append(got, fmt.Sprintf("%s/%d", o.job.rec.ID, o.set.Index))
	}
	if want := "[high/0 high/1 mid/0 mid/1 low/0 low/1]"; fmt.Sprint(got) != want {
		t.Errorf("granted %v, want %s", got, want)
	}
}

func TestGrantEarliestSubmittedAmongEquals(t *testing.T) {
	c := farmFixture(t)
	addTestJob(t, c, "second", 3, 1, time.Minute)
	addTestJob(t, c, "first", 3, 1, 0)
	o, ok := offered(t, wait(t, c, "n", 1, 0, false))
	if !ok || o.job.rec.ID != "first" {
		t.Fatalf("offer %+v (%v), want a set of the job submitted first", o, ok)
	}
	// Raising the later one's priority puts it first.
	if _, err := c.setPriority(context.Background(), "second", 4); err != nil {
		t.Fatal(err)
	}
	addTestJob(t, c, "third", 3, 1, 2*time.Minute)
	o, ok = offered(t, wait(t, c, "n", 1, 0, false))
	if !ok || o.job.rec.ID != "second" {
		t.Fatalf("offer %+v (%v), want the reprioritised job's set", o, ok)
	}
}

// When a set becomes available to several waiting nodes, the one with the
// most free cores gets it, then the least loaded, then the one waiting
// longest.
func TestGrantToTheLeastLoadedWaitingNode(t *testing.T) {
	c := farmFixture(t)
	busy := wait(t, c, "busy", 0.5, 0.9, false)
	idleLate := wait(t, c, "idle-late", 7, 0.1, false)
	loaded := wait(t, c, "loaded", 7, 0.6, false)
	idle := wait(t, c, "idle", 7, 0.1, false)
	for _, w := range []*waiter{busy, idleLate, loaded, idle} {
		if _, ok := offered(t, w); ok {
			t.Fatalf("%s got an offer from an empty farm", w.node)
		}
	}
	addTestJob(t, c, "j", 0, 2, 0)
	if _, ok := offered(t, busy); ok {
		t.Error("the busiest node got a set while idler nodes waited")
	}
	if _, ok := offered(t, loaded); ok {
		t.Error("a node with as many free cores but more load got a set before the less loaded ones")
	}
	for _, w := range []*waiter{idleLate, idle} {
		if o, ok := offered(t, w); !ok || o.job == nil {
			t.Errorf("%s, among the least loaded, got no set", w.node)
		}
	}
	if len(c.waiters) != 2 {
		t.Errorf("%d requests still wait, want the 2 not served", len(c.waiters))
	}
}

func TestGrantLongestWaitingAmongEquals(t *testing.T) {
	c := farmFixture(t)
	first := wait(t, c, "first", 2, 0.5, false)
	c.cfg.Now = func() time.Time { return t0.Add(time.Second) }
	later := wait(t, c, "later", 2, 0.5, false)
	addTestJob(t, c, "j", 0, 1, 0)
	if _, ok := offered(t, first); !ok {
		t.Error("the node waiting longest did not get the set")
	}
	if _, ok := offered(t, later); ok {
		t.Error("the node that came later got the set")
	}
}

// A node excluded from one job still gets sets of the others.
func TestExcludedNodeServedByOtherJobs(t *testing.T) {
	c := farmFixture(t)
	high := addTestJob(t, c, "high", 10, 2, 0)
	addTestJob(t, c, "low", 0, 2, time.Second)
	high.job.NodeFailures["bad"] = job.MaxFailures
	o, ok := offered(t, wait(t, c, "bad", 8, 0, false))
	if !ok || o.job.rec.ID != "low" {
		t.Fatalf("excluded node: offer %+v (%v), want a set of the other job", o, ok)
	}
	o, ok = offered(t, wait(t, c, "good", 8, 0, false))
	if !ok || o.job.rec.ID != "high" {
		t.Fatalf("another node: offer %+v (%v), want the high job's set", o, ok)
	}
}

// A node asking with once is told when the farm has no work left for it,
// and only then.
func TestOnceIsToldWhenNoWorkIsLeft(t *testing.T) {
	c := farmFixture(t)
	jr := addTestJob(t, c, "j", 0, 1, 0)
	o, ok := offered(t, wait(t, c, "n", 1, 0, true))
	if !ok || o.job == nil {
		t.Fatalf("offer %+v (%v), want the set", o, ok)
	}
	// The set is out: the job may still need this node (the set can come
	// back), so it waits.
	w := wait(t, c, "n", 1, 0, true)
	if o, ok := offered(t, w); ok {
		t.Fatalf("told %+v while the job runs", o)
	}
	if err := c.change(context.Background(), func(x changes) error {
		ev, err := jr.job.Complete(0, o.set.Token, job.PartInfo{Name: "p", Node: "n"}, t0)
		x.add(jr, []*job.Set{jr.job.Sets[0]}, ev)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	o, ok = offered(t, w)
	if !ok || !errors.Is(o.done, errIdle) {
		t.Fatalf("after the last set: offer %+v (%v), want done", o, ok)
	}
	// Without once, a node waits for new jobs.
	if _, ok := offered(t, wait(t, c, "m", 1, 0, false)); ok {
		t.Fatal("a node without once was answered on an idle farm")
	}
}

// The farm's view of a node names the sets it holds and the slots it said
// it has, as the nodes page and `framefarm nodes` show them.
func TestSnapshotNamesTheSetsANodeHolds(t *testing.T) {
	c := farmFixture(t)
	addTestJob(t, c, "a", 0, 3, 0)
	if err := c.touchNode("n1", nodeReport{hasLoad: true, free: 4, slots: 2}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, ok := offered(t, wait(t, c, "n1", 4, 0, false)); !ok {
			t.Fatal("no set, with sets available")
		}
	}
	s := c.Snapshot(context.Background())
	if len(s.Nodes) != 1 {
		t.Fatalf("nodes %v, want n1 alone", s.Nodes)
	}
	n := s.Nodes[0]
	if got := fmt.Sprint(n.WorkingOn); n.Slots != 2 || got != "[a/0 a/1]" {
		t.Errorf("n1: slots %d, working on %s; want 2 and [a/0 a/1]", n.Slots, got)
	}
}
