// Package job is a job's state machine, pure: its sets (A available, B
// assigned under a lease and a fencing token, C completed, F failed), its
// states (queued, running, joining, done, failed, cancelled) and the
// transitions, which validate first and only then mutate, and return the
// events to record with the change. Time comes in as arguments; nothing here
// does I/O.
package job

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"
)

// State of a set: the seed's A/B/C machine, plus F for a set that failed on
// too many nodes.
type State byte

const (
	Available State = 'A'
	Assigned  State = 'B'
	Completed State = 'C'
	Failed    State = 'F'
)

// JobState is where a job is in the farm's queue.
type JobState string

// Job states. A job is queued until its first set is granted; done, failed
// and cancelled are the ends a reset can take it back from (not done).
const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobJoining   JobState = "joining"
	JobDone      JobState = "done"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Finished reports whether the job will change no more by itself.
func (s JobState) Finished() bool { return s == JobDone || s == JobFailed || s == JobCancelled }

// MaxFailures is how many different nodes may fail a set, and how many sets
// one node may fail, before the job (or the node) is stopped.
const MaxFailures = 3

// Set is one contiguous range of frames.
type Set struct {
	Index int
	// First is the position of the set's first frame in the job's frames;
	// Count how many frames it has.
	First, Count int
	State        State
	Node         string
	Token        uint64
	// Lease bookkeeping (B only). Not persisted: a restarted coordinator
	// gives every B set a fresh heartbeat window.
	LastBeat, LastProgress time.Time
	FramesDone             int
	// Slack is how much later than the heartbeat timeout the next beat may
	// come: the round trip of the holder's link, over which a beat sent in
	// time arrives late.
	Slack time.Duration
	// FailedOn lists the node of each failure of this set, in order.
	FailedOn  []string
	LastError string
	Part      PartInfo
}

// PartInfo describes a stored, verified part.
type PartInfo struct {
	Name     string // file name inside the job's parts folder
	Size     int64
	SHA256   string
	EncodeMS uint64
	Node     string
}

// EventKind says what an event records.
type EventKind string

// The event kinds, as stored and streamed.
const (
	EvJobCreated   EventKind = "job_created"
	EvSetGranted   EventKind = "set_granted"
	EvSetReleased  EventKind = "set_released"
	EvSetFailed    EventKind = "set_failed"
	EvLeaseExpired EventKind = "lease_expired"
	EvPartAccepted EventKind = "part_accepted"
	EvNodeExcluded EventKind = "node_excluded"
	EvJobJoining   EventKind = "job_joining"
	EvJobDone      EventKind = "job_done"
	EvJobFailed    EventKind = "job_failed"
	EvJobCancelled EventKind = "job_cancelled"
	EvJobReset     EventKind = "job_reset"
	EvJobPriority  EventKind = "job_priority"
	EvNodeForgiven EventKind = "node_forgiven"
	// EvOutCopied and EvOutFailed end the copy of a done job's final to an
	// --out URL: it landed, or the retries were given up (the final stays
	// in the data folder either way).
	EvOutCopied EventKind = "out_copied"
	EvOutFailed EventKind = "out_failed"
	// EvFinalStored and EvFinalNotStored end the copy of a done job's final
	// into the coordinator's --storage bucket, the same way.
	EvFinalStored    EventKind = "final_stored"
	EvFinalNotStored EventKind = "final_not_stored"
	// EvJobDeleted is the one event of a job kept after it is deleted: the
	// farm's stream says what became of it, and its number stays taken.
	EvJobDeleted EventKind = "job_deleted"
)

// Event is one entry of a job's ordered event stream.
type Event struct {
	JobID string
	// Seq numbers the job's events, FSeq the farm's.
	Seq    uint64
	FSeq   uint64
	At     time.Time
	Kind   EventKind
	Set    int // -1 when the event is about the job
	Node   string
	Detail string
}

// Job is the in-memory state of one job. Its methods are the state machine:
// they validate first and only then mutate, so a refused transition changes
// nothing; they return the events to record with the change.
type Job struct {
	ID     string
	State  JobState
	Reason string
	// Priority orders the farm's queue: higher first, then the earlier
	// submitted.
	Priority  int
	NextToken uint64
	Sets      []*Set
	// NodeFailures counts the distinct sets each node failed in this job
	// (derived from the sets' FailedOn).
	NodeFailures map[string]int
	// LastSeq is the number of the job's last recorded event.
	LastSeq uint64
	// lastRun is the latest moment the state machine is known to have run
	// (a sweep, or a grant, beat, completion or release), and pauseAfter
	// the silence after which it must have been paused (set by Expire):
	// see Expire.
	lastRun    time.Time
	pauseAfter time.Duration
	// idx is built from Sets on first use; every state change of a set
	// after that goes through setState, which keeps it true.
	idx *setIndex
}

// setIndex answers Grant's and Complete's questions without a scan of
// every set on every call: which sets are A, in index order, and how many
// are C.
type setIndex struct {
	avail     []uint64 // bit i%64 of word i/64: set i is A
	completed int
}

func (j *Job) index() *setIndex {
	if j.idx == nil {
		x := &setIndex{avail: make([]uint64, (len(j.Sets)+63)/64)}
		for _, s := range j.Sets {
			switch s.State {
			case Available:
				x.avail[s.Index/64] |= 1 << (s.Index % 64)
			case Completed:
				x.completed++
			}
		}
		j.idx = x
	}
	return j.idx
}

// setState moves s to st, keeping the index.
func (j *Job) setState(s *Set, st State) {
	x := j.index()
	switch s.State {
	case Available:
		x.avail[s.Index/64] &^= 1 << (s.Index % 64)
	case Completed:
		x.completed--
	}
	switch st {
	case Available:
		x.avail[s.Index/64] |= 1 << (s.Index % 64)
	case Completed:
		x.completed++
	}
	s.State = st
}

// HasAvailable reports whether the job has an A set.
func (j *Job) HasAvailable() bool {
	for _, w := range j.index().avail {
		if w != 0 {
			return true
		}
	}
	return false
}

// available calls fn on every A set in index order until fn returns false.
func (j *Job) available(fn func(s *Set) bool) {
	for w, word := range j.index().avail {
		for word != 0 {
			i := w*64 + bits.TrailingZeros64(word)
			word &= word - 1
			if !fn(j.Sets[i]) {
				return
			}
		}
	}
}

// Partition splits n frames into k contiguous sets of near-equal size
// (sizes differ by at most one, the larger ones first). k is capped at n.
func Partition(n, k int) []*Set {
	if k > n {
		k = n
	}
	sets := make([]*Set, k)
	base, extra := n/k, n%k
	pos := 0
	for i := range sets {
		c := base
		if i < extra {
			c++
		}
		sets[i] = &Set{Index: i, First: pos, Count: c, State: Available}
		pos += c
	}
	return sets
}

// Excluded reports whether node failed too many sets of this job.
func (j *Job) Excluded(node string) bool { return j.NodeFailures[node] >= MaxFailures }

// Grant assigns an available set to node under a new fencing token. It
// prefers sets that have not already failed on this node.
func (j *Job) Grant(node string, now time.Time) (*Set, []Event, error) {
	switch {
	case j.State == JobFailed:
		return nil, nil, fmt.Errorf("%w: %s", ErrJobFailed, j.Reason)
	case j.State != JobRunning && j.State != JobQueued:
		return nil, nil, ErrJobFinished
	case j.Excluded(node):
		return nil, nil, fmt.Errorf("%w: node %s failed %d sets of job %s", ErrNodeExcluded, node, j.NodeFailures[node], j.ID)
	}
	var pick *Set
	j.available(func(s *Set) bool {
		if pick == nil {
			pick = s
		}
		if !slices.Contains(s.FailedOn, node) {
			pick = s
			return false
		}
		return true
	})
	if pick == nil {
		return nil, nil, ErrNoWork
	}
	j.ran(now)
	j.State = JobRunning
	j.NextToken++
	j.setState(pick, Assigned)
	pick.Node, pick.Token = node, j.NextToken
	pick.LastBeat, pick.LastProgress, pick.FramesDone, pick.Slack = now, now, 0, 0
	return pick, []Event{{At: now, Kind: EvSetGranted, Set: pick.Index, Node: node,
		Detail: fmt.Sprintf("token %d, frames %d", pick.Token, pick.Count)}}, nil
}

// lease returns the set if node holds it under token.
func (j *Job) lease(index int, token uint64) (*Set, error) {
	if index < 0 || index >= len(j.Sets) {
		return nil, fmt.Errorf("%w: job %s has no set %d", ErrNotFound, j.ID, index)
	}
	s := j.Sets[index]
	if s.State != Assigned || s.Token != token {
		if j.State == JobCancelled {
			// What the node holding it is told at its next heartbeat.
			return nil, fmt.Errorf("%w: job %s was cancelled: drop set %d and ask for other work", ErrStaleToken, j.ID, index)
		}
		return nil, fmt.Errorf("%w: set %d is %c under token %d, not assigned under token %d", ErrStaleToken, index, s.State, s.Token, token)
	}
	return s, nil
}

// Beat keeps a lease alive. Progress (more frames done) also renews the
// no-progress lease, so long sets on slow nodes are not taken away. rtt is
// the holder's link's round trip, allowed on top of the heartbeat timeout
// until the next beat.
//
// A beat for a set completed under the same token is answered as kept: the
// node's part was taken while its answer was still on the way, and "lease
// lost" would make the node drop a set that counted.
func (j *Job) Beat(index int, token uint64, framesDone int, rtt time.Duration, now time.Time) error {
	if index >= 0 && index < len(j.Sets) && j.Sets[index].State == Completed && j.Sets[index].Token == token {
		return nil
	}
	s, err := j.lease(index, token)
	if err != nil {
		return err
	}
	j.ran(now)
	s.LastBeat, s.Slack = now, rtt
	// A node cannot have done more frames than the set has.
	framesDone = min(framesDone, s.Count)
	if framesDone > s.FramesDone {
		s.FramesDone = framesDone
		s.LastProgress = now
	}
	return nil
}

// CheckLease reports whether token is the current lease of set index.
func (j *Job) CheckLease(index int, token uint64) error {
	_, err := j.lease(index, token)
	return err
}

// Complete marks a set C with its verified part. The job moves to joining
// when it was the last one.
func (j *Job) Complete(index int, token uint64, part PartInfo, now time.Time) ([]Event, error) {
	s, err := j.lease(index, token)
	if err != nil {
		return nil, err
	}
	j.ran(now)
	j.setState(s, Completed)
	s.Part, s.FramesDone = part, s.Count
	ev := []Event{{At: now, Kind: EvPartAccepted, Set: index, Node: part.Node,
		Detail: fmt.Sprintf("%d bytes, sha256 %s, encoded in %d ms", part.Size, part.SHA256, part.EncodeMS)}}
	if j.AllCompleted() {
		j.State = JobJoining
		ev = append(ev, Event{At: now, Kind: EvJobJoining, Set: -1, Detail: fmt.Sprintf("all %d sets rendered", len(j.Sets))})
	}
	return ev, nil
}

// AllCompleted reports whether every set is C.
func (j *Job) AllCompleted() bool { return j.index().completed == len(j.Sets) }

// Release gives a set back to A. A non-empty reason is a failure of the set
// on the node holding it: after MaxFailures distinct nodes the set goes to
// F and the job fails.
func (j *Job) Release(index int, token uint64, reason string, now time.Time) ([]Event, error) {
	s, err := j.lease(index, token)
	if err != nil {
		return nil, err
	}
	j.ran(now)
	node := s.Node
	j.setState(s, Available)
	s.Node, s.FramesDone = "", 0
	if reason == "" {
		return []Event{{At: now, Kind: EvSetReleased, Set: index, Node: node, Detail: "given back"}}, nil
	}
	s.LastError = reason
	ev := []Event{{At: now, Kind: EvSetFailed, Set: index, Node: node, Detail: reason}}
	if j.NodeFailures == nil {
		j.NodeFailures = map[string]int{}
	}
	if !slices.Contains(s.FailedOn, node) {
		j.NodeFailures[node]++
		if j.NodeFailures[node] == MaxFailures {
			ev = append(ev, Event{At: now, Kind: EvNodeExcluded, Set: -1, Node: node,
				Detail: fmt.Sprintf("failed %d sets; it gets no more sets of this job", MaxFailures)})
		}
	}
	// Every failure counts, so a farm of one node also gets a clear answer;
	// Grant gives a failed set to another node first when it can.
	s.FailedOn = append(s.FailedOn, node)
	if len(s.FailedOn) >= MaxFailures {
		j.setState(s, Failed)
		if j.State == JobFailed {
			// Another set failed the job first: that stays its reason,
			// with one job_failed event.
			return ev, nil
		}
		j.State = JobFailed
		j.Reason = fmt.Sprintf("set %d failed %d times (on %s); last error: %s", index, len(s.FailedOn), strings.Join(Distinct(s.FailedOn), ", "), reason)
		ev = append(ev, Event{At: now, Kind: EvJobFailed, Set: -1, Detail: j.Reason})
	}
	return ev, nil
}

// ran notes that the state machine runs at now. If it did not run for
// longer than it can when the coordinator runs (its sweeps are a fraction of
// the heartbeat timeout apart), the coordinator was paused: the pause does
// not count against any lease. Whatever call comes first after the pause
// (a sweep, a heartbeat...) makes the adjustment, so that the order in which
// a resumed coordinator handles them does not matter.
func (j *Job) ran(now time.Time) {
	if gap := now.Sub(j.lastRun); j.pauseAfter > 0 && !j.lastRun.IsZero() && gap > j.pauseAfter {
		for _, s := range j.Sets {
			if s.State == Assigned {
				s.LastBeat = s.LastBeat.Add(gap)
				s.LastProgress = s.LastProgress.Add(gap)
			}
		}
	}
	if now.After(j.lastRun) {
		j.lastRun = now
	}
}

// WatchForPauses has the job treat a silence of half heartbeatTimeout (at
// least 1s) as a pause of the coordinator (see ran). Expire sets it too, but
// a coordinator paused before its first sweep, with a heartbeat handled
// first after it, would otherwise charge the pause to every other lease.
func (j *Job) WatchForPauses(heartbeatTimeout time.Duration) {
	j.pauseAfter = max(heartbeatTimeout/2, time.Second)
}

// Distinct returns names without repeats, in first-seen order.
func Distinct(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Expire returns to A every B set whose node stopped heartbeating for
// heartbeatTimeout or made no progress for lease.
//
// It is called every few seconds (a fraction of heartbeatTimeout). A call
// much later than the previous one, or than the last grant, heartbeat,
// completion or release, means that the coordinator itself did not run in
// between (the process was stopped or suspended, or starved): it heard
// no heartbeat because it was not listening, not because the nodes stopped.
// So the pause counts neither as time without heartbeat nor as time without
// progress (see ran).
func (j *Job) Expire(now time.Time, heartbeatTimeout, lease time.Duration) []Event {
	j.WatchForPauses(heartbeatTimeout)
	j.ran(now)
	var ev []Event
	for _, s := range j.Sets {
		if s.State != Assigned {
			continue
		}
		var why string
		switch {
		case now.Sub(s.LastBeat) > heartbeatTimeout+s.Slack:
			why = fmt.Sprintf("no heartbeat for %s", now.Sub(s.LastBeat).Round(time.Millisecond))
		case now.Sub(s.LastProgress) > lease:
			why = fmt.Sprintf("no progress for %s", now.Sub(s.LastProgress).Round(time.Millisecond))
		default:
			continue
		}
		ev = append(ev, Event{At: now, Kind: EvLeaseExpired, Set: s.Index, Node: s.Node,
			Detail: fmt.Sprintf("token %d: %s", s.Token, why)})
		j.setState(s, Available)
		s.Node, s.FramesDone = "", 0
	}
	return ev
}

// Cancel stops a job that is not finished: its B sets go back to A (their
// nodes learn it at their next heartbeat, whose lease is gone) and no set is
// granted until it is reset. Its parts stay.
func (j *Job) Cancel(now time.Time) ([]*Set, []Event, error) {
	if j.State.Finished() {
		return nil, nil, fmt.Errorf("%w: job %s is %s already", ErrConflict, j.ID, j.State)
	}
	var dirty []*Set
	for _, s := range j.Sets {
		if s.State == Assigned {
			j.setState(s, Available)
			s.Node, s.FramesDone = "", 0
			dirty = append(dirty, s)
		}
	}
	j.State, j.Reason = JobCancelled, "cancelled"
	return dirty, []Event{{At: now, Kind: EvJobCancelled, Set: -1, Detail: fmt.Sprintf("%d sets were being rendered", len(dirty))}}, nil
}

// Reset puts a failed or cancelled job back in the queue: every set that is
// not C goes back to A with its failures forgotten, and so do the nodes'
// exclusions. With all, every set is rendered again (the caller removes the
// parts once the change is durable). A done job can be reset only with all.
//
// redo names C sets to render again even without all: sets whose frames were
// changed (fixed) since they were rendered.
func (j *Job) Reset(all bool, redo map[int]bool, now time.Time) ([]*Set, []Event, error) {
	switch {
	case j.State == JobDone && !all:
		return nil, nil, fmt.Errorf("%w: job %s is done; reset --all renders it again", ErrConflict, j.ID)
	case !j.State.Finished():
		return nil, nil, fmt.Errorf("%w: job %s is %s: cancel it first", ErrConflict, j.ID, j.State)
	}
	var dirty []*Set
	again := 0
	for _, s := range j.Sets {
		if s.State == Completed && !all && !redo[s.Index] {
			continue
		}
		if s.State != Available || len(s.FailedOn) > 0 || s.LastError != "" {
			dirty = append(dirty, s)
		}
		if s.State == Completed {
			again++
		}
		j.setState(s, Available)
		s.Node, s.FramesDone, s.FailedOn, s.LastError, s.Part = "", 0, nil, "", PartInfo{}
	}
	j.NodeFailures = map[string]int{}
	j.State, j.Reason = JobQueued, ""
	detail := "every set not rendered goes back to the queue"
	switch {
	case all:
		detail = fmt.Sprintf("every set is rendered again (%d were done)", again)
	case again > 0:
		detail += fmt.Sprintf(", and %d rendered sets whose frames changed", again)
	}
	return dirty, []Event{{At: now, Kind: EvJobReset, Set: -1, Detail: detail}}, nil
}

// Forgive forgets node's failures in this job, as an operator does once the
// node is fixed: the sets it failed keep their other failures, and it is no
// longer excluded. A failed job stays failed (Reset resumes it). It returns
// the sets changed and how many failures were forgotten.
func (j *Job) Forgive(node string, now time.Time) ([]*Set, []Event, int) {
	var dirty []*Set
	forgot := 0
	for _, s := range j.Sets {
		kept := slices.DeleteFunc(slices.Clone(s.FailedOn), func(n string) bool { return n == node })
		if len(kept) == len(s.FailedOn) {
			continue
		}
		forgot += len(s.FailedOn) - len(kept)
		s.FailedOn = kept
		dirty = append(dirty, s)
	}
	if forgot == 0 {
		return nil, nil, 0
	}
	delete(j.NodeFailures, node)
	return dirty, []Event{{At: now, Kind: EvNodeForgiven, Set: -1, Node: node,
		Detail: fmt.Sprintf("%d failures of %s forgotten; it may get this job's sets again", forgot, node)}}, forgot
}

// SetPriority moves the job in the queue.
func (j *Job) SetPriority(p int, now time.Time) []Event {
	old := j.Priority
	j.Priority = p
	return []Event{{At: now, Kind: EvJobPriority, Set: -1, Detail: fmt.Sprintf("priority %d, was %d", p, old)}}
}

// Finish records the outcome of the join.
func (j *Job) Finish(err error, detail string, now time.Time) []Event {
	if j.State.Finished() {
		// Cancelled (or failed by a changed frame) while it joined.
		return nil
	}
	if err != nil {
		j.State, j.Reason = JobFailed, err.Error()
		return []Event{{At: now, Kind: EvJobFailed, Set: -1, Detail: j.Reason}}
	}
	j.State = JobDone
	return []Event{{At: now, Kind: EvJobDone, Set: -1, Detail: detail}}
}
