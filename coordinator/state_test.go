package coordinator

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func newJob(frames, sets int) *Job {
	return &Job{ID: "j", State: JobRunning, Sets: Partition(frames, sets), NodeFailures: map[string]int{}}
}

func TestPartition(t *testing.T) {
	for _, tc := range []struct {
		n, k   int
		counts []int
	}{
		{243, 8, []int{31, 31, 31, 30, 30, 30, 30, 30}},
		{10, 3, []int{4, 3, 3}},
		{8, 8, []int{1, 1, 1, 1, 1, 1, 1, 1}},
		{3, 8, []int{1, 1, 1}},
		{1, 1, []int{1}},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.n, tc.k), func(t *testing.T) {
			sets := Partition(tc.n, tc.k)
			pos := 0
			if len(sets) != len(tc.counts) {
				t.Fatalf("got %d sets, want %d", len(sets), len(tc.counts))
			}
			for i, s := range sets {
				if s.Index != i || s.First != pos || s.Count != tc.counts[i] || s.State != Available {
					t.Errorf("set %d = %+v, want first %d count %d", i, s, pos, tc.counts[i])
				}
				pos += s.Count
			}
			if pos != tc.n {
				t.Errorf("sets cover %d frames, want %d", pos, tc.n)
			}
		})
	}
}

func TestTransitions(t *testing.T) {
	hb, lease := 30*time.Second, 10*time.Minute
	type step struct {
		name string
		do   func(j *Job) error
		// want is the state of set 0 after the step.
		want    State
		wantErr error
	}
	grant := func(node string) func(j *Job) error {
		return func(j *Job) error { _, _, err := j.Grant(node, t0); return err }
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"A to B to C", []step{
			{"grant", grant("n1"), Assigned, nil},
			{"complete", func(j *Job) error { _, err := j.Complete(0, 1, PartInfo{Name: "p"}, t0); return err }, Completed, nil},
		}},
		{"B back to A on release", []step{
			{"grant", grant("n1"), Assigned, nil},
			{"release", func(j *Job) error { _, err := j.Release(0, 1, "", t0); return err }, Available, nil},
			{"stale heartbeat after release", func(j *Job) error { return j.Beat(0, 1, 5, t0) }, Available, ErrStaleToken},
		}},
		{"C never goes back", []step{
			{"grant", grant("n1"), Assigned, nil},
			{"complete", func(j *Job) error { _, err := j.Complete(0, 1, PartInfo{}, t0); return err }, Completed, nil},
			{"complete again", func(j *Job) error { _, err := j.Complete(0, 1, PartInfo{}, t0); return err }, Completed, ErrStaleToken},
			{"release a C set", func(j *Job) error { _, err := j.Release(0, 1, "x", t0); return err }, Completed, ErrStaleToken},
			{"expire", func(j *Job) error { j.Expire(t0.Add(time.Hour), hb, lease); return nil }, Completed, nil},
		}},
		{"stale token changes nothing", []step{
			{"grant", grant("n1"), Assigned, nil},
			{"expire", func(j *Job) error { j.Expire(t0.Add(hb+time.Second), hb, lease); return nil }, Available, nil},
			{"regrant", func(j *Job) error { _, _, err := j.Grant("n2", t0.Add(hb+time.Second)); return err }, Assigned, nil},
			{"zombie upload", func(j *Job) error { _, err := j.Complete(0, 1, PartInfo{}, t0); return err }, Assigned, ErrStaleToken},
			{"zombie release", func(j *Job) error { _, err := j.Release(0, 1, "boom", t0); return err }, Assigned, ErrStaleToken},
			{"zombie heartbeat", func(j *Job) error { return j.Beat(0, 1, 9, t0) }, Assigned, ErrStaleToken},
			{"current holder completes", func(j *Job) error { _, err := j.Complete(0, 2, PartInfo{}, t0); return err }, Completed, nil},
		}},
		{"unknown set", []step{
			{"beat set 99", func(j *Job) error { return j.Beat(99, 1, 0, t0) }, Available, ErrNotFound},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := newJob(1, 1)
			for _, s := range tc.steps {
				err := s.do(j)
				if !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
					t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
				}
				if got := j.Sets[0].State; got != s.want {
					t.Fatalf("%s: state = %c, want %c", s.name, got, s.want)
				}
			}
		})
	}
}

func TestTokensOnlyGrow(t *testing.T) {
	j := newJob(4, 2)
	var last uint64
	for i := 0; i < 10; i++ {
		s, _, err := j.Grant("n", t0)
		if err != nil {
			t.Fatal(err)
		}
		if s.Token <= last {
			t.Fatalf("token %d after %d", s.Token, last)
		}
		last = s.Token
		if _, err := j.Release(s.Index, s.Token, "", t0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExpire(t *testing.T) {
	hb, lease := 30*time.Second, 10*time.Minute
	for _, tc := range []struct {
		name  string
		beats []time.Duration // heartbeat times after t0, each with progress
		prog  bool
		at    time.Duration
		want  State
	}{
		{"fresh lease kept", nil, false, 29 * time.Second, Assigned},
		{"no heartbeat", nil, false, 31 * time.Second, Available},
		{"heartbeats keep it", []time.Duration{20 * time.Second, 40 * time.Second}, false, 60 * time.Second, Assigned},
		{"heartbeats without progress lose it after the lease", every(20*time.Second, 11*time.Minute), false, 11 * time.Minute, Available},
		{"progress keeps a long set past the lease", every(20*time.Second, 30*time.Minute), true, 30 * time.Minute, Assigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := newJob(1, 1)
			s, _, _ := j.Grant("n", t0)
			for i, b := range tc.beats {
				done := 0
				if tc.prog {
					done = i + 1
				}
				if err := j.Beat(0, s.Token, done, t0.Add(b)); err != nil {
					t.Fatal(err)
				}
			}
			ev := j.Expire(t0.Add(tc.at), hb, lease)
			if got := j.Sets[0].State; got != tc.want {
				t.Fatalf("state %c, want %c (events %v)", got, tc.want, ev)
			}
			if tc.want == Available && (len(ev) != 1 || ev[0].Kind != "lease_expired") {
				t.Fatalf("events %v, want one lease_expired", ev)
			}
		})
	}
}

func every(d, until time.Duration) []time.Duration {
	var out []time.Duration
	for t := d; t <= until; t += d {
		out = append(out, t)
	}
	return out
}

func TestFailuresStopTheJob(t *testing.T) {
	j := newJob(2, 2)
	for i, node := range []string{"n1", "n2", "n3"} {
		s, _, err := j.Grant(node, t0)
		if err != nil {
			t.Fatal(err)
		}
		if s.Index != 0 {
			t.Fatalf("grant %d got set %d, want 0 (lowest available)", i, s.Index)
		}
		if _, err := j.Release(0, s.Token, "ffmpeg: bad frame", t0); err != nil {
			t.Fatal(err)
		}
	}
	if j.State != JobFailed || j.Sets[0].State != Failed {
		t.Fatalf("job %s set %c, want failed/F", j.State, j.Sets[0].State)
	}
	if _, _, err := j.Grant("n4", t0); !errors.Is(err, ErrJobFailed) {
		t.Fatalf("grant after failure: %v", err)
	}
}

func TestNodeExcludedAfterThreeFailedSets(t *testing.T) {
	j := newJob(4, 4)
	for i := 0; i < MaxFailures; i++ {
		s, _, err := j.Grant("bad", t0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Release(s.Index, s.Token, "oom", t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := j.Grant("bad", t0); !errors.Is(err, ErrNodeExcluded) {
		t.Fatalf("grant to excluded node: %v", err)
	}
	if _, _, err := j.Grant("good", t0); err != nil {
		t.Fatalf("grant to a good node: %v", err)
	}
}

func TestGrantPrefersSetsNotFailedOnNode(t *testing.T) {
	j := newJob(2, 2)
	s, _, _ := j.Grant("n1", t0)
	_, _ = j.Release(s.Index, s.Token, "boom", t0)
	s2, _, _ := j.Grant("n1", t0)
	if s2.Index != 1 {
		t.Fatalf("n1 got set %d again, want set 1", s2.Index)
	}
}

func TestLastCompleteStartsJoin(t *testing.T) {
	j := newJob(3, 3)
	for i := 0; i < 3; i++ {
		s, _, _ := j.Grant("n", t0)
		ev, err := j.Complete(s.Index, s.Token, PartInfo{}, t0)
		if err != nil {
			t.Fatal(err)
		}
		if want := i == 2; (j.State == JobJoining) != want || (len(ev) == 2) != want {
			t.Fatalf("after %d completes: job %s, %d events", i+1, j.State, len(ev))
		}
	}
	if _, _, err := j.Grant("n", t0); !errors.Is(err, ErrJobFinished) {
		t.Fatalf("grant while joining: %v", err)
	}
}
