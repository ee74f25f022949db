package coordinator

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
)

// What a coordinator killed at any instant finds when it starts again on
// the same data folder: every committed change, and nothing else. C sets stay
// C with their part, B sets keep their node and token (so the node's upload
// under that token is still taken), failures and exclusions are remembered,
// and tokens keep growing.
func TestStoreSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := jobRecord{ID: "job1", Created: t0, FramesDir: "/frames", Settings: jobSettings{Codec: "ffv1", FPSNum: 24, FPSDen: 1}, Fingerprint: "fp"}
	frames := make([]frameRecord, 8)
	for i := range frames {
		frames[i] = frameRecord{Number: int64(i + 1), Name: "f.png", Size: 10, ModTime: t0}
	}
	j := &job.Job{ID: "job1", State: job.JobRunning, Sets: job.Partition(len(frames), 4), NodeFailures: map[string]int{}}
	if err := st.createJob(ctx, rec, frames, j, []job.Event{{At: t0, Kind: "job_created", Set: -1}}); err != nil {
		t.Fatal(err)
	}
	apply := func(dirty []*job.Set, ev []job.Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.commit(ctx, j, dirty, ev); err != nil {
			t.Fatal(err)
		}
	}
	grant := func(node string) *job.Set {
		t.Helper()
		s, ev, err := j.Grant(node, t0)
		apply([]*job.Set{s}, ev, err)
		return s
	}
	s0 := grant("n1") // set 0: completed
	ev, err := j.Complete(s0.Index, s0.Token, job.PartInfo{Name: "set-00000.nut", Size: 5, SHA256: "abc", EncodeMS: 7, Node: "n1"}, t0)
	apply([]*job.Set{s0}, ev, err)
	s1 := grant("n2") // set 1: failed on n2, then on n3, now held by n1
	ev, err = j.Release(s1.Index, s1.Token, "ffmpeg: disk full", t0)
	apply([]*job.Set{s1}, ev, err)
	s1 = grant("n3")
	ev, err = j.Release(s1.Index, s1.Token, "ffmpeg: killed", t0)
	apply([]*job.Set{s1}, ev, err)
	s1 = grant("n1")
	s2 := grant("n2") // set 2: held by n2
	// A change that was never committed (the kill came first) must not
	// show: set 3 is granted in memory only.
	if _, _, err := j.Grant("n4", t0); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, gotFrames, got, err := st.loadJob(ctx, "job1")
	if err != nil {
		t.Fatal(err)
	}
	if len(gotFrames) != len(frames) {
		t.Fatalf("%d frames after restart, want %d", len(gotFrames), len(frames))
	}
	type setView struct {
		State    job.State
		Node     string
		Token    uint64
		FailedOn []string
		LastErr  string
		Part     job.PartInfo
	}
	view := func(s *job.Set) setView {
		v := setView{s.State, s.Node, s.Token, s.FailedOn, s.LastError, s.Part}
		if len(v.FailedOn) == 0 {
			v.FailedOn = nil
		}
		return v
	}
	want := []setView{
		{job.Completed, "n1", s0.Token, nil, "", job.PartInfo{Name: "set-00000.nut", Size: 5, SHA256: "abc", EncodeMS: 7, Node: "n1"}},
		{job.Assigned, "n1", s1.Token, []string{"n2", "n3"}, "ffmpeg: killed", job.PartInfo{}},
		{job.Assigned, "n2", s2.Token, nil, "", job.PartInfo{}},
		{job.Available, "", 0, nil, "", job.PartInfo{}},
	}
	for i, w := range want {
		if g := view(got.Sets[i]); !reflect.DeepEqual(g, w) {
			t.Errorf("set %d after restart = %+v, want %+v", i, g, w)
		}
	}
	if got.NodeFailures["n2"] != 1 || got.NodeFailures["n3"] != 1 || got.NodeFailures["n1"] != 0 {
		t.Errorf("node failures after restart %v", got.NodeFailures)
	}
	if got.NextToken != s2.Token {
		t.Errorf("next token %d after restart, want %d (the last committed grant)", got.NextToken, s2.Token)
	}
	// The node holding set 1 uploads after the restart, under its token.
	if err := got.CheckLease(1, s1.Token); err != nil {
		t.Errorf("the lease of set 1 did not survive the restart: %v", err)
	}
	if err := got.CheckLease(0, s0.Token); err == nil {
		t.Error("the C set 0 takes an upload after the restart")
	}
	s3, _, err := got.Grant("n4", t0.Add(time.Minute))
	if err != nil || s3.Index != 3 || s3.Token <= s2.Token {
		t.Fatalf("grant after restart: set %v token %v err %v, want set 3 with a token above %d", s3.Index, s3.Token, err, s2.Token)
	}
	evs, err := st.events(ctx, "job1", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(evs)) != got.LastSeq {
		t.Errorf("%d events, last seq %d", len(evs), got.LastSeq)
	}
	accepted := 0
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: the stream has a gap or a repeat", i, e.Seq)
		}
		if e.Kind == "part_accepted" {
			accepted++
		}
	}
	if accepted != 1 {
		t.Errorf("%d part_accepted events, want 1", accepted)
	}
}

// commit persists one change of job, in a batch of its own (for tests that
// write the store without a Coordinator): its scalar fields, the dirty sets and
// the new events (numbered here, in order).
func (s *store) commit(ctx context.Context, j *job.Job, dirty []*job.Set, events []job.Event) error {
	c := newTestCoordinator(s)
	changes{c}.add(&jobRun{job: j}, dirty, events)
	return s.write(ctx, c.open)
}

// createJob writes a new job's rows and events, as a change creating it
// would.
func (s *store) createJob(ctx context.Context, rec jobRecord, frames []frameRecord, j *job.Job, events []job.Event) error {
	c := newTestCoordinator(s)
	jr := &jobRun{rec: rec, frames: frames, job: j}
	c.open.created = append(c.open.created, jr)
	changes{c}.add(jr, nil, events)
	return s.write(ctx, c.open)
}
