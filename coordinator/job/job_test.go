package job

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
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
			{"stale heartbeat after release", func(j *Job) error { return j.Beat(0, 1, 5, 0, t0) }, Available, ErrStaleToken},
		}},
		{"C never goes back", []step{
			{"grant", grant("n1"), Assigned, nil},
			{"complete", func(j *Job) error { _, err := j.Complete(0, 1, PartInfo{}, t0); return err }, Completed, nil},
			{"complete again", func(j *Job) error { _, err := j.Complete(0, 1, PartInfo{}, t0); return err }, Completed, ErrStaleToken},
			{"release a C set", func(j *Job) error { _, err := j.Release(0, 1, "x", t0); return err }, Completed, ErrStaleToken},
			// The holder's beat that crossed its upload's answer: kept, not lost.
			{"late beat of the completing lease", func(j *Job) error { return j.Beat(0, 1, 9, 0, t0) }, Completed, nil},
			{"beat of another lease", func(j *Job) error { return j.Beat(0, 2, 9, 0, t0) }, Completed, ErrStaleToken},
			{"expire", func(j *Job) error { j.Expire(t0.Add(time.Hour), hb, lease); return nil }, Completed, nil},
		}},
		{"stale token changes nothing", []step{
			{"grant", grant("n1"), Assigned, nil},
			{"expire", func(j *Job) error { sweep(j, 5*time.Second, hb+5*time.Second, 5*time.Second, hb, lease); return nil }, Available, nil},
			{"regrant", func(j *Job) error { _, _, err := j.Grant("n2", t0.Add(hb+time.Second)); return err }, Assigned, nil},
			{"zombie upload", func(j *Job) error { _, err := j.Complete(0, 1, PartInfo{}, t0); return err }, Assigned, ErrStaleToken},
			{"zombie release", func(j *Job) error { _, err := j.Release(0, 1, "boom", t0); return err }, Assigned, ErrStaleToken},
			{"zombie heartbeat", func(j *Job) error { return j.Beat(0, 1, 9, 0, t0) }, Assigned, ErrStaleToken},
			{"current holder completes", func(j *Job) error { _, err := j.Complete(0, 2, PartInfo{}, t0); return err }, Completed, nil},
		}},
		{"unknown set", []step{
			{"beat set 99", func(j *Job) error { return j.Beat(99, 1, 0, 0, t0) }, Available, ErrNotFound},
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
			j := newJob(1000, 1) // progress is capped at the set's frame count
			s, _, _ := j.Grant("n", t0)
			// The heartbeats, and the sweeps every 5s as the coordinator
			// makes them (a longer silence would be a pause of its own).
			var ev []Event
			next := 0
			for at := 5 * time.Second; ; at = min(at+5*time.Second, tc.at) {
				for ; next < len(tc.beats) && tc.beats[next] <= at; next++ {
					done := 0
					if tc.prog {
						done = next + 1
					}
					if j.Sets[0].State != Assigned {
						break
					}
					if err := j.Beat(0, s.Token, done, 0, t0.Add(tc.beats[next])); err != nil {
						t.Fatal(err)
					}
				}
				ev = append(ev, j.Expire(t0.Add(at), hb, lease)...)
				if at == tc.at {
					break
				}
			}
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

// sweep calls Expire every step from from to to (inclusive), as the
// coordinator's sweeper does, and returns the events.
func sweep(j *Job, from, to, step, hb, lease time.Duration) []Event {
	var ev []Event
	for at := from; at <= to; at += step {
		ev = append(ev, j.Expire(t0.Add(at), hb, lease)...)
	}
	return ev
}

func TestExpireWithRegularSweeps(t *testing.T) {
	hb, lease := 30*time.Second, 10*time.Minute
	j := newJob(1, 1)
	if _, _, err := j.Grant("n", t0); err != nil {
		t.Fatal(err)
	}
	if ev := sweep(j, 5*time.Second, 30*time.Second, 5*time.Second, hb, lease); len(ev) != 0 || j.Sets[0].State != Assigned {
		t.Fatalf("within the heartbeat timeout: events %v, state %c", ev, j.Sets[0].State)
	}
	ev := sweep(j, 35*time.Second, 35*time.Second, 5*time.Second, hb, lease)
	if len(ev) != 1 || ev[0].Kind != "lease_expired" || j.Sets[0].State != Available {
		t.Fatalf("first sweep past the timeout: events %v, state %c", ev, j.Sets[0].State)
	}
}

// A coordinator that did not run for a while (SIGSTOP, a suspended VM)
// heard no heartbeat because it was not listening: its leases survive the
// pause, and a node that really died is still noticed, the pause not
// counted.
func TestPausedCoordinatorKeepsLeases(t *testing.T) {
	hb, lease := 30*time.Second, 10*time.Minute
	j := newJob(2, 2)
	dead, _, _ := j.Grant("dead", t0)
	alive, _, _ := j.Grant("alive", t0)
	sweep(j, 5*time.Second, 20*time.Second, 5*time.Second, hb, lease)
	if err := j.Beat(alive.Index, alive.Token, 1, 0, t0.Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Paused from 20s to 80s: no sweep, no heartbeat.
	if ev := j.Expire(t0.Add(80*time.Second), hb, lease); len(ev) != 0 {
		t.Fatalf("first sweep after the pause expired %v", ev)
	}
	// The live node heartbeats again; the dead one never does.
	for at := 81 * time.Second; at <= 120*time.Second; at += 5 * time.Second {
		if err := j.Beat(alive.Index, alive.Token, 1, 0, t0.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	ev := sweep(j, 85*time.Second, 120*time.Second, 5*time.Second, hb, lease)
	if len(ev) != 1 || ev[0].Set != dead.Index || ev[0].Node != "dead" {
		t.Fatalf("events %v, want the dead node's lease expired once", ev)
	}
	// Silent from 0s, the pause (20s to 80s) not counted: noticed at the
	// first sweep past 60s+30s.
	if at := ev[0].At.Sub(t0); at <= 60*time.Second+hb || at > 60*time.Second+hb+5*time.Second {
		t.Errorf("dead node noticed at %v, want at the first sweep past 60s+%v", at, hb)
	}
	if j.Sets[alive.Index].State != Assigned {
		t.Errorf("live node lost its set: %c", j.Sets[alive.Index].State)
	}
}

// The pause does not count as time without progress either; time without
// progress around it still does.
func TestPauseDoesNotCountAsNoProgress(t *testing.T) {
	hb, lease := 30*time.Second, 10*time.Minute
	j := newJob(1, 1)
	s, _, _ := j.Grant("n", t0)
	beatAndSweep := func(from, to time.Duration) []Event {
		var ev []Event
		for at := from; at <= to; at += 5 * time.Second {
			if j.Sets[0].State == Assigned {
				_ = j.Beat(0, s.Token, 0, 0, t0.Add(at)) // alive, no progress
			}
			ev = append(ev, j.Expire(t0.Add(at), hb, lease)...)
		}
		return ev
	}
	if ev := beatAndSweep(5*time.Second, 5*time.Minute); len(ev) != 0 {
		t.Fatalf("before the pause: %v", ev)
	}
	// Paused for 4 minutes.
	if ev := beatAndSweep(9*time.Minute, 13*time.Minute+55*time.Second); len(ev) != 0 {
		t.Fatalf("the pause counted as no progress: %v", ev)
	}
	ev := beatAndSweep(14*time.Minute, 14*time.Minute+10*time.Second)
	if len(ev) != 1 || !strings.Contains(ev[0].Detail, "no progress") {
		t.Fatalf("10 minutes of running time without progress: events %v, want a no-progress expiry", ev)
	}
}

// Every operation on a set in each state: the legal ones move it as the
// state machine says; the illegal ones (a C set never goes back to B, a
// stale token changes nothing, a failed job hands out nothing) are refused
// and leave the whole job exactly as it was.
func TestEveryTransition(t *testing.T) {
	const stale, current = 0, 1 // which token an operation presents
	hb, lease := 30*time.Second, 10*time.Minute
	// setup returns a 1-set job with set 0 in the given state.
	setup := func(t *testing.T, st State) *Job {
		j := newJob(1, 1)
		switch st {
		case Assigned:
			mustGrant(t, j, "n1")
		case Completed:
			s := mustGrant(t, j, "n1")
			if _, err := j.Complete(0, s.Token, PartInfo{Name: "p", SHA256: "aa", Node: "n1"}, t0); err != nil {
				t.Fatal(err)
			}
		case Failed:
			for _, n := range []string{"n1", "n2", "n3"} {
				s := mustGrant(t, j, n)
				if _, err := j.Release(0, s.Token, "ffmpeg: broken", t0); err != nil {
					t.Fatal(err)
				}
			}
		}
		if j.Sets[0].State != st {
			t.Fatalf("setup: state %c, want %c", j.Sets[0].State, st)
		}
		return j
	}
	ops := []struct {
		name  string
		token int
		do    func(j *Job, tok uint64) error
	}{
		{"grant", current, func(j *Job, _ uint64) error { _, _, err := j.Grant("n4", t0); return err }},
		{"beat", current, func(j *Job, tok uint64) error { return j.Beat(0, tok, 3, 0, t0) }},
		{"beat", stale, func(j *Job, tok uint64) error { return j.Beat(0, tok, 3, 0, t0) }},
		{"complete", current, func(j *Job, tok uint64) error {
			_, err := j.Complete(0, tok, PartInfo{Name: "q", SHA256: "bb", Node: "x"}, t0)
			return err
		}},
		{"complete", stale, func(j *Job, tok uint64) error {
			_, err := j.Complete(0, tok, PartInfo{Name: "q", SHA256: "bb", Node: "x"}, t0)
			return err
		}},
		{"release", current, func(j *Job, tok uint64) error { _, err := j.Release(0, tok, "", t0); return err }},
		{"release", stale, func(j *Job, tok uint64) error { _, err := j.Release(0, tok, "", t0); return err }},
		{"fail", current, func(j *Job, tok uint64) error { _, err := j.Release(0, tok, "boom", t0); return err }},
		{"fail", stale, func(j *Job, tok uint64) error { _, err := j.Release(0, tok, "boom", t0); return err }},
		{"expire", current, func(j *Job, _ uint64) error { sweep(j, 5*time.Second, time.Hour, 5*time.Second, hb, lease); return nil }},
	}
	type want struct {
		state State
		err   error
	}
	// The expected outcome of each op (name/token) from each state.
	table := map[State]map[string]want{
		Available: {
			"grant/current": {Assigned, nil}, "beat/current": {Available, ErrStaleToken}, "beat/stale": {Available, ErrStaleToken},
			"complete/current": {Available, ErrStaleToken}, "complete/stale": {Available, ErrStaleToken},
			"release/current": {Available, ErrStaleToken}, "release/stale": {Available, ErrStaleToken},
			"fail/current": {Available, ErrStaleToken}, "fail/stale": {Available, ErrStaleToken},
			"expire/current": {Available, nil},
		},
		Assigned: {
			"grant/current": {Assigned, ErrNoWork}, "beat/current": {Assigned, nil}, "beat/stale": {Assigned, ErrStaleToken},
			"complete/current": {Completed, nil}, "complete/stale": {Assigned, ErrStaleToken},
			"release/current": {Available, nil}, "release/stale": {Assigned, ErrStaleToken},
			"fail/current": {Available, nil}, "fail/stale": {Assigned, ErrStaleToken},
			"expire/current": {Available, nil},
		},
		Completed: {
			// A beat of the lease the set completed under crossed its
			// upload's answer: kept (nothing changes), not "lease lost".
			"grant/current": {Completed, ErrJobFinished}, "beat/current": {Completed, nil}, "beat/stale": {Completed, ErrStaleToken},
			"complete/current": {Completed, ErrStaleToken}, "complete/stale": {Completed, ErrStaleToken},
			"release/current": {Completed, ErrStaleToken}, "release/stale": {Completed, ErrStaleToken},
			"fail/current": {Completed, ErrStaleToken}, "fail/stale": {Completed, ErrStaleToken},
			"expire/current": {Completed, nil},
		},
		Failed: {
			"grant/current": {Failed, ErrJobFailed}, "beat/current": {Failed, ErrStaleToken}, "beat/stale": {Failed, ErrStaleToken},
			"complete/current": {Failed, ErrStaleToken}, "complete/stale": {Failed, ErrStaleToken},
			"release/current": {Failed, ErrStaleToken}, "release/stale": {Failed, ErrStaleToken},
			"fail/current": {Failed, ErrStaleToken}, "fail/stale": {Failed, ErrStaleToken},
			"expire/current": {Failed, nil},
		},
	}
	for _, st := range []State{Available, Assigned, Completed, Failed} {
		for _, op := range ops {
			key := op.name + "/" + map[int]string{stale: "stale", current: "current"}[op.token]
			w, ok := table[st][key]
			if !ok {
				t.Fatalf("no expectation for %c %s", st, key)
			}
			t.Run(fmt.Sprintf("%c/%s", st, key), func(t *testing.T) {
				j := setup(t, st)
				tok := j.Sets[0].Token
				if op.token == stale {
					tok-- // the token of an earlier lease (0: never granted)
				}
				before := j.clone()
				err := op.do(j, tok)
				if !errors.Is(err, w.err) || (w.err == nil && err != nil) {
					t.Fatalf("err = %v, want %v", err, w.err)
				}
				if got := j.Sets[0].State; got != w.state {
					t.Fatalf("state %c, want %c", got, w.state)
				}
				if err != nil && !reflect.DeepEqual(before, j) {
					t.Errorf("a refused %s changed the job:\nbefore %+v\nafter  %+v", key, before, j)
				}
				if st == Completed && (j.Sets[0].Part.Name != "p" || j.Sets[0].Part.SHA256 != "aa") {
					t.Errorf("the stored part of a C set changed: %+v", j.Sets[0].Part)
				}
			})
		}
	}
}

func mustGrant(t *testing.T, j *Job, node string) *Set {
	t.Helper()
	s, _, err := j.Grant(node, t0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A clean give-back (a node stopping) is not a failure.
func TestCleanReleaseIsNoFailure(t *testing.T) {
	j := newJob(1, 1)
	s := mustGrant(t, j, "n1")
	ev, err := j.Release(0, s.Token, "", t0)
	if err != nil || len(ev) != 1 || ev[0].Kind != "set_released" {
		t.Fatalf("events %v, err %v", ev, err)
	}
	if len(j.Sets[0].FailedOn) != 0 || j.NodeFailures["n1"] != 0 {
		t.Errorf("a clean release counted as a failure: %v", j.Sets[0].FailedOn)
	}
}

func TestOneNodeFailingASetEndsTheJob(t *testing.T) {
	j := newJob(1, 1)
	for i := 0; i < MaxFailures; i++ {
		s, _, err := j.Grant("only", t0)
		if err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
		if _, err := j.Release(s.Index, s.Token, "ffmpeg: Invalid data", t0); err != nil {
			t.Fatal(err)
		}
	}
	if j.State != JobFailed || j.Sets[0].State != Failed || !strings.Contains(j.Reason, "Invalid data") {
		t.Fatalf("job %s (%s), set %c: want failed with ffmpeg's words", j.State, j.Reason, j.Sets[0].State)
	}
	if j.NodeFailures["only"] != 1 {
		t.Fatalf("node failures %d, want 1 (one distinct set)", j.NodeFailures["only"])
	}
}

// A job fails once: a set failing for the third time after another set
// failed the job goes to F, but the job keeps its first reason and its one
// job_failed event.
func TestJobFailsOnce(t *testing.T) {
	j := newJob(2, 2)
	a := mustGrant(t, j, "a") // holds set 0
	for _, n := range []string{"p", "q"} {
		s := mustGrant(t, j, n)
		if _, err := j.Release(s.Index, s.Token, "err1", t0); err != nil || s.Index != 1 {
			t.Fatalf("set %d: %v", s.Index, err)
		}
	}
	r := mustGrant(t, j, "r") // holds set 1, failed twice
	if r.Index != 1 {
		t.Fatalf("r got set %d", r.Index)
	}
	if _, err := j.Release(0, a.Token, "err0", t0); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"x", "y"} {
		s := mustGrant(t, j, n)
		if _, err := j.Release(s.Index, s.Token, "err0", t0); err != nil {
			t.Fatal(err)
		}
	}
	if j.State != JobFailed || !strings.HasPrefix(j.Reason, "set 0 ") {
		t.Fatalf("job %s: %q, want failed by set 0", j.State, j.Reason)
	}
	reason := j.Reason
	ev, err := j.Release(1, r.Token, "err1", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev {
		if e.Kind == "job_failed" {
			t.Errorf("a second job_failed event: %v", e)
		}
	}
	if j.Reason != reason || j.Sets[1].State != Failed {
		t.Errorf("job reason %q (was %q), set 1 %c", j.Reason, reason, j.Sets[1].State)
	}
}

// A pause before the coordinator's first sweep (it was stopped right after
// granting) is a pause too: the grant shows when it last ran.
func TestPauseBeforeTheFirstSweep(t *testing.T) {
	hb, lease := 10*time.Second, 10*time.Minute
	j := newJob(1, 1)
	s := mustGrant(t, j, "n")
	if err := j.Beat(0, s.Token, 1, 0, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if ev := j.Expire(t0.Add(35*time.Second), hb, lease); len(ev) != 0 {
		t.Fatalf("first sweep after a pause expired %v", ev)
	}
	if ev := sweep(j, 37500*time.Millisecond, 47500*time.Millisecond, 2500*time.Millisecond, hb, lease); len(ev) != 1 {
		t.Fatalf("a node silent after the pause: events %v, want its lease expired", ev)
	}
}

// After a pause, a heartbeat may be handled before the first sweep: the
// other leases are still spared the pause.
func TestPauseNoticedByAHeartbeatFirst(t *testing.T) {
	hb, lease := 10*time.Second, 10*time.Minute
	j := newJob(2, 2)
	a, b := mustGrant(t, j, "a"), mustGrant(t, j, "b")
	sweep(j, 2500*time.Millisecond, 5*time.Second, 2500*time.Millisecond, hb, lease)
	// Paused from 5s to 40s; a's heartbeat, queued meanwhile, comes first.
	if err := j.Beat(a.Index, a.Token, 1, 0, t0.Add(40*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ev := j.Expire(t0.Add(40*time.Second+time.Millisecond), hb, lease); len(ev) != 0 {
		t.Fatalf("b's lease was charged the pause: %v", ev)
	}
	if err := j.Beat(b.Index, b.Token, 1, 0, t0.Add(41*time.Second)); err != nil {
		t.Fatalf("b after the pause: %v", err)
	}
}

// clone copies the job deeply enough to compare it after a refused transition.
func (j *Job) clone() *Job {
	c := *j
	c.Sets = make([]*Set, len(j.Sets))
	for i, s := range j.Sets {
		cs := *s
		cs.FailedOn = append([]string(nil), s.FailedOn...)
		c.Sets[i] = &cs
	}
	if j.idx != nil {
		c.idx = &setIndex{avail: append([]uint64(nil), j.idx.avail...), completed: j.idx.completed}
	}
	c.NodeFailures = make(map[string]int, len(j.NodeFailures))
	for k, v := range j.NodeFailures {
		c.NodeFailures[k] = v
	}
	return &c
}

// The index of sets by state agrees with a scan of the sets after every
// transition, and Grant picks what a scan would: the lowest A set not
// failed on the node, else the lowest A set.
func TestSetIndexMatchesScan(t *testing.T) {
	scanPick := func(j *Job, node string) int {
		pick := -1
		for _, s := range j.Sets {
			if s.State != Available {
				continue
			}
			if !slices.Contains(s.FailedOn, node) {
				return s.Index
			}
			if pick < 0 {
				pick = s.Index
			}
		}
		return pick
	}
	check := func(t *testing.T, j *Job, after string) {
		t.Helper()
		fresh := &Job{Sets: j.Sets}
		if !reflect.DeepEqual(fresh.index(), j.index()) {
			t.Fatalf("after %s: index %+v, a scan gives %+v", after, *j.index(), *fresh.index())
		}
	}
	type op struct {
		name string
		do   func(t *testing.T, j *Job)
	}
	grant := func(node string) op {
		return op{"grant to " + node, func(t *testing.T, j *Job) {
			want := scanPick(j, node)
			s, _, err := j.Grant(node, t0)
			if want < 0 {
				if !errors.Is(err, ErrNoWork) && !errors.Is(err, ErrJobFinished) {
					t.Fatalf("grant with no A set: %v", err)
				}
				return
			}
			if err != nil || s.Index != want {
				t.Fatalf("granted %v (%v), a scan picks set %d", s, err, want)
			}
		}}
	}
	release := func(index int, reason string) op {
		return op{fmt.Sprintf("release %d %q", index, reason), func(t *testing.T, j *Job) {
			if _, err := j.Release(index, j.Sets[index].Token, reason, t0); err != nil {
				t.Fatal(err)
			}
		}}
	}
	complete := func(index int) op {
		return op{fmt.Sprintf("complete %d", index), func(t *testing.T, j *Job) {
			if _, err := j.Complete(index, j.Sets[index].Token, PartInfo{Name: "p"}, t0); err != nil {
				t.Fatal(err)
			}
		}}
	}
	expire := op{"expire", func(t *testing.T, j *Job) { j.Expire(t0.Add(time.Hour), time.Minute, time.Hour) }}
	tests := []struct {
		name        string
		frames, sps int
		ops         []op
	}{
		{"in order across words", 200, 130, []op{grant("a"), grant("b"), complete(0), release(1, ""), grant("c"), grant("c")}},
		{"a set failed on the node goes to another first", 10, 3, []op{
			grant("a"), release(0, "boom"), grant("a"), grant("b"), grant("a"), grant("a")}},
		{"expired leases come back", 100, 70, []op{grant("a"), grant("b"), grant("c"), complete(1), expire, grant("d")}},
		{"the last completion", 2, 2, []op{grant("a"), grant("b"), complete(0), complete(1), grant("c")}},
		{"a set failing three times", 4, 1, []op{grant("a"), release(0, "x"), grant("b"), release(0, "y"), grant("c"), release(0, "z")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := newJob(tc.frames, tc.sps)
			check(t, j, "start")
			for _, o := range tc.ops {
				o.do(t, j)
				check(t, j, o.name)
			}
			if got, want := j.AllCompleted(), !slices.ContainsFunc(j.Sets, func(s *Set) bool { return s.State != Completed }); got != want {
				t.Fatalf("allCompleted %t, a scan says %t", got, want)
			}
		})
	}
}

// Both at once: paused before the first sweep, and a heartbeat handled
// before the first sweep after it (TestFaultCoordinatorOutage saw this in
// CI: the coordinator was stopped 1s after its grants). The heartbeat must
// not hide the pause from the sweep: the coordinator tells the job, when it
// takes it on, how long a silence is a pause.
func TestPauseBeforeTheFirstSweepNoticedByAHeartbeat(t *testing.T) {
	hb, lease := 10*time.Second, 10*time.Minute
	j := newJob(2, 2)
	j.WatchForPauses(hb)
	a, b := mustGrant(t, j, "a"), mustGrant(t, j, "b")
	// Paused from 1s to 31s; a's heartbeat, queued meanwhile, comes first.
	if err := j.Beat(a.Index, a.Token, 1, 0, t0.Add(31*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ev := j.Expire(t0.Add(31*time.Second+10*time.Millisecond), hb, lease); len(ev) != 0 {
		t.Fatalf("b's lease was charged the pause: %v", ev)
	}
	if err := j.Beat(b.Index, b.Token, 1, 0, t0.Add(32*time.Second)); err != nil {
		t.Fatalf("b after the pause: %v", err)
	}
}

// TestForgive: an operator forgives a node excluded from a job: its
// failures go, the other nodes' stay, and it gets sets again.
func TestForgive(t *testing.T) {
	j := newJob(40, 4)
	for i := range MaxFailures {
		s, _, err := j.Grant("bad", t0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.Release(s.Index, s.Token, "its disk was full", t0); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			o, _, _ := j.Grant("other", t0)
			if _, err := j.Release(o.Index, o.Token, "ffmpeg failed", t0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !j.Excluded("bad") {
		t.Fatal("bad is not excluded after failing 3 sets")
	}
	dirty, ev, n := j.Forgive("bad", t0)
	if n != MaxFailures || len(dirty) != MaxFailures || len(ev) != 1 || ev[0].Kind != EvNodeForgiven {
		t.Fatalf("Forgive: %d failures, %d sets, events %v", n, len(dirty), ev)
	}
	if j.Excluded("bad") || j.NodeFailures["bad"] != 0 || j.NodeFailures["other"] != 1 {
		t.Fatalf("after Forgive: failures %v", j.NodeFailures)
	}
	if _, _, err := j.Grant("bad", t0); err != nil {
		t.Fatalf("a forgiven node gets no set: %v", err)
	}
	if _, ev, n := j.Forgive("bad", t0); n != 0 || ev != nil {
		t.Fatalf("forgiving again: %d, %v", n, ev)
	}
}

// TestSlackAllowsTheLinksRoundTrip: a beat that says its link's round trip
// lets the next one come that much after the heartbeat timeout.
func TestSlackAllowsTheLinksRoundTrip(t *testing.T) {
	hb := 3 * time.Second
	j := newJob(2, 2)
	slow, _, _ := j.Grant("slow", t0)
	fast, _, _ := j.Grant("fast", t0)
	if err := j.Beat(slow.Index, slow.Token, 0, 2*time.Second, t0); err != nil {
		t.Fatal(err)
	}
	if err := j.Beat(fast.Index, fast.Token, 0, 0, t0); err != nil {
		t.Fatal(err)
	}
	step := 500 * time.Millisecond
	ev := sweep(j, step, 4*time.Second, step, hb, time.Hour)
	if len(ev) != 1 || ev[0].Node != "fast" {
		t.Fatalf("by 4s: %v, want only the fast node's lease expired", ev)
	}
	if ev := sweep(j, 4*time.Second+step, 5500*time.Millisecond, step, hb, time.Hour); len(ev) != 1 || ev[0].Node != "slow" {
		t.Fatalf("by 5.5s: %v, want the slow node's lease expired", ev)
	}
}
