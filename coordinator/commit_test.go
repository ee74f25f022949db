package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/framefarm/framefarm/coordinator/job"
)

// t0 is the tests' clock.
var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// newCommitCoordinator is a coordinator with a real store and a job of
// 4 sets, enough for change and the batches behind it.
func newCommitCoordinator(t *testing.T) (*Coordinator, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := jobRecord{ID: "job1", Created: t0, FramesDir: "/frames", Settings: jobSettings{Codec: "ffv1", FPSNum: 24, FPSDen: 1}, Fingerprint: "fp"}
	frames := make([]frameRecord, 8)
	for i := range frames {
		frames[i] = frameRecord{Number: int64(i + 1), Name: "f.png", Size: 10, ModTime: t0}
	}
	j := &job.Job{ID: "job1", State: job.JobRunning, Sets: job.Partition(len(frames), 4), NodeFailures: map[string]int{}}
	c := newTestCoordinator(st)
	createTestJob(t, c, &jobRun{rec: rec, frames: frames, job: j})
	return c, dir
}

// createTestJob adds jr to the farm as a submission does.
func createTestJob(t *testing.T, c *Coordinator, jr *jobRun) {
	t.Helper()
	if err := c.change(context.Background(), func(x changes) error {
		x.create(jr)
		x.add(jr, nil, []job.Event{{At: t0, Kind: job.EvJobCreated, Set: -1}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// sqlite is the coordinator's store, for tests that reach into it.
func (c *Coordinator) sqlite() *store { return c.store.(*store) }

func newTestCoordinator(st *store) *Coordinator {
	c := &Coordinator{
		cfg: Config{Now: func() time.Time { return t0 }}, log: slog.New(slog.DiscardHandler), store: st, jobs: map[string]*jobRun{},
		changed: make(chan struct{}), nodes: map[string]*nodeInfo{}, joinWant: map[string]bool{},
		open: newBatch(), fatal: make(chan error, 1), joinReq: make(chan struct{}, 1),
	}
	c.metrics = newMetrics(c)
	return c
}

func grantChange(c *Coordinator, node string, got *job.Set) func(x changes) error {
	return func(x changes) error {
		jr := c.jobs["job1"]
		s, ev, err := jr.job.Grant(node, c.cfg.Now())
		if err != nil {
			return err
		}
		*got = *s
		x.add(jr, []*job.Set{s}, ev)
		return nil
	}
}

// stored reads the job back from the data folder, as a restart would.
func stored(t *testing.T, dir string) *job.Job {
	t.Helper()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, _, j, err := st.loadJob(context.Background(), "job1")
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// A change is answered only once its batch is committed: while another
// write is in progress it waits, and the data folder does not hold it yet.
func TestChangeWaitsForItsCommit(t *testing.T) {
	c, dir := newCommitCoordinator(t)
	c.commitMu.Lock() // a write in progress
	var s job.Set
	done := make(chan error, 1)
	go func() { done <- c.change(context.Background(), grantChange(c, "n1", &s)) }()
	// The grant is applied in memory, and waits.
	for {
		c.mu.Lock()
		applied := c.jobs["job1"].job.Sets[0].State == job.Assigned
		c.mu.Unlock()
		if applied {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("change answered (%v) before its batch was written", err)
	case <-time.After(50 * time.Millisecond):
	}
	if j := stored(t, dir); j.Sets[0].State != job.Available || j.NextToken != 0 {
		t.Fatalf("the data folder holds set 0 %c, token %d before the commit", j.Sets[0].State, j.NextToken)
	}
	// A refusal made while the grant is in flight may depend on it: it
	// waits as well.
	refused := make(chan error, 1)
	go func() {
		refused <- c.change(context.Background(), func(changes) error {
			return c.jobs["job1"].job.CheckLease(0, 99)
		})
	}()
	select {
	case err := <-refused:
		t.Fatalf("a refusal (%v) was answered before the change it saw was written", err)
	case <-time.After(20 * time.Millisecond):
	}
	c.commitMu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-refused; !errors.Is(err, job.ErrStaleToken) {
		t.Fatalf("refusal: %v, want a stale token", err)
	}
	j := stored(t, dir)
	if j.Sets[0].State != job.Assigned || j.Sets[0].Token != s.Token || j.LastSeq != 2 {
		t.Fatalf("after the commit the data folder holds set 0 %c token %d, last event %d; want B, token %d, event 2",
			j.Sets[0].State, j.Sets[0].Token, j.LastSeq, s.Token)
	}
}

// Changes that arrive while a batch is written are committed together, in
// the order they were applied.
func TestChangesShareABatch(t *testing.T) {
	c, dir := newCommitCoordinator(t)
	c.commitMu.Lock()
	sets := make([]job.Set, 3)
	errs := make(chan error, len(sets))
	for i := range sets {
		go func() { errs <- c.change(context.Background(), grantChange(c, "n", &sets[i])) }()
	}
	for {
		c.mu.Lock()
		n := len(c.open.events)
		c.mu.Unlock()
		if n == len(sets) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.commitMu.Unlock()
	for range sets {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	evs, err := c.store.events(context.Background(), "job1", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 {
		t.Fatalf("%d events, want job_created and 3 grants", len(evs))
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d numbered %d", i, e.Seq)
		}
	}
	j := stored(t, dir)
	if j.NextToken != 3 || j.Sets[0].State != job.Assigned || j.Sets[1].State != job.Assigned || j.Sets[2].State != job.Assigned || j.Sets[3].State != job.Available {
		t.Fatalf("stored token %d, sets %c%c%c%c; want 3, BBBA", j.NextToken, j.Sets[0].State, j.Sets[1].State, j.Sets[2].State, j.Sets[3].State)
	}
}

// A failed commit acknowledges nothing: every change of the batch, and of
// the one gathered behind it, fails; the coordinator takes no more changes
// and stops; the data folder holds the state before the batch.
func TestFailedCommitAcknowledgesNothing(t *testing.T) {
	c, dir := newCommitCoordinator(t)
	var first job.Set
	if err := c.change(context.Background(), grantChange(c, "n1", &first)); err != nil {
		t.Fatal(err)
	}
	// The next commit fails: the events table is gone.
	if _, err := c.sqlite().db.Exec(`ALTER TABLE events RENAME TO events_gone`); err != nil {
		t.Fatal(err)
	}
	c.commitMu.Lock()
	errs := make(chan error, 2)
	var s1, s2 job.Set
	go func() { errs <- c.change(context.Background(), grantChange(c, "n2", &s1)) }()
	go func() { errs <- c.change(context.Background(), grantChange(c, "n3", &s2)) }()
	for {
		c.mu.Lock()
		n := len(c.open.events)
		c.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.commitMu.Unlock()
	for range 2 {
		err := <-errs
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("change in the failed batch: %v, want ErrStopped", err)
		}
		if code := status.Code(toStatus(err)); code != codes.Unavailable {
			t.Fatalf("a failed commit is answered %s, want Unavailable", code)
		}
	}
	select {
	case err := <-c.fatal:
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("Run is told %v", err)
		}
	default:
		t.Fatal("Run is not told to stop")
	}
	var s3 job.Set
	if err := c.change(context.Background(), grantChange(c, "n4", &s3)); !errors.Is(err, ErrStopped) {
		t.Fatalf("a change after the failed commit: %v, want ErrStopped", err)
	}
	if _, err := c.sqlite().db.Exec(`ALTER TABLE events_gone RENAME TO events`); err != nil {
		t.Fatal(err)
	}
	j := stored(t, dir)
	if j.NextToken != first.Token || j.Sets[0].State != job.Assigned || j.Sets[1].State != job.Available || j.Sets[2].State != job.Available {
		t.Fatalf("after the failed commit the data folder holds token %d, sets %c%c%c; want token %d, BAA",
			j.NextToken, j.Sets[0].State, j.Sets[1].State, j.Sets[2].State, first.Token)
	}
}

func TestBatchAdd(t *testing.T) {
	failed := &job.Set{Index: 2, State: job.Available, FailedOn: []string{"n1"}, LastError: "boom"}
	done := &job.Set{Index: 1, State: job.Completed, Node: "n2", Token: 7, Part: job.PartInfo{Name: "p", Size: 3}}
	tests := []struct {
		name     string
		changes  [][]*job.Set
		wantSets []setRow
	}{
		{"one set", [][]*job.Set{{{Index: 0, State: job.Assigned, Node: "n", Token: 1}}},
			[]setRow{{Index: 0, State: job.Assigned, Node: "n", Token: 1, FailedOn: "[]", Part: "{}"}}},
		{"the last change of a set wins, in first-change order", [][]*job.Set{
			{{Index: 3, State: job.Assigned, Node: "a", Token: 1}},
			{{Index: 0, State: job.Assigned, Node: "b", Token: 2}},
			{{Index: 3, State: job.Available}},
		}, []setRow{
			{Index: 3, State: job.Available, FailedOn: "[]", Part: "{}"},
			{Index: 0, State: job.Assigned, Node: "b", Token: 2, FailedOn: "[]", Part: "{}"},
		}},
		{"failures and parts as JSON", [][]*job.Set{{failed, done}}, []setRow{
			{Index: 2, State: job.Available, FailedOn: `["n1"]`, LastError: "boom", Part: "{}"},
			{Index: 1, State: job.Completed, Node: "n2", Token: 7, FailedOn: "[]", Part: `{"Name":"p","Size":3,"SHA256":"","EncodeMS":0,"Node":""}`},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := &job.Job{ID: "j", State: job.JobRunning, LastSeq: 10, NextToken: 5}
			c := newTestCoordinator(nil)
			for _, dirty := range tc.changes {
				changes{c}.add(&jobRun{job: j}, dirty, []job.Event{{Kind: "x"}})
			}
			b := c.open
			if !reflect.DeepEqual(b.jobs["j"].sets, tc.wantSets) {
				t.Errorf("rows %+v, want %+v", b.jobs["j"].sets, tc.wantSets)
			}
			for i, e := range b.events {
				if e.Seq != uint64(11+i) {
					t.Errorf("event %d numbered %d, want %d", i, e.Seq, 11+i)
				}
			}
			if want := (jobRow{State: job.JobRunning, NextToken: 5, LastSeq: uint64(10 + len(tc.changes))}); b.jobs["j"].job != want {
				t.Errorf("job row %+v, want %+v", b.jobs["j"].job, want)
			}
		})
	}
}
