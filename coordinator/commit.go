package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/text"
)

// Group commit. A change is applied to the job in memory under c.mu and
// added to the open batch; whoever then waits for it and finds no commit in
// progress writes the whole batch in one SQLite transaction, so one fsync
// covers every change that arrived while the previous one was written.
// Nothing is answered before the batch holding its change is durable, and
// batches are written in order, so every earlier change is durable too.
//
// A failed commit stops the coordinator instead of undoing the batch: the
// changes after it (tokens, event numbers, sets granted from the freed
// queue) were built on it, and after a failed fsync the file's state is
// unknown. The data folder holds the last good state, and a restart resumes
// from it, as it does after a kill.

// batch is a group of changes committed in one transaction.
type batch struct {
	// events are numbered in each job (Seq) and across the farm (FSeq) in
	// the order their changes were applied.
	events []job.Event
	// jobs holds each changed job's rows, in the order they first changed.
	jobs    map[string]*jobBatch
	order   []string
	created []*jobRun
	removed []string
	// dirs are fsynced before the transaction: a part renamed into place
	// must be there before the set that names it is C.
	dirs []string
	// done is closed once the batch is written or failed (err).
	done chan struct{}
	err  error
}

// jobBatch is what a batch changes of one job.
type jobBatch struct {
	// sets holds each changed set's row as of its last change, in the order
	// the sets were first changed.
	sets  []setRow
	where map[int]int
	job   jobRow
	// frames are frame rows to rewrite (a reset after frames were fixed),
	// with the fingerprint they make.
	frames      []frameRow
	fingerprint string
}

// frameRow is a frame's recorded size and time, at its position.
type frameRow struct {
	Pos int
	frameRecord
}

func newBatch() *batch { return &batch{jobs: map[string]*jobBatch{}, done: make(chan struct{})} }

// jobRow is what the jobs row holds of a job's changing state.
type jobRow struct {
	State              job.JobState
	Reason             string
	NextToken, LastSeq uint64
	Priority           int
	FinishedMS         int64
}

// setRow is what the sets row holds of a set's state, encoded.
type setRow struct {
	Index     int
	State     job.State
	Node      string
	Token     uint64
	FailedOn  string
	LastError string
	Part      string
}

func rowOf(s *job.Set) setRow {
	r := setRow{Index: s.Index, State: s.State, Node: s.Node, Token: s.Token, LastError: s.LastError, FailedOn: "[]", Part: "{}"}
	// Most sets never fail and only C sets have a part: skip the JSON then.
	if len(s.FailedOn) > 0 {
		b, _ := json.Marshal(s.FailedOn)
		r.FailedOn = string(b)
	}
	if s.Part != (job.PartInfo{}) {
		b, _ := json.Marshal(s.Part)
		r.Part = string(b)
	}
	return r
}

// changes is what a change's function records its changes with.
type changes struct{ c *Coordinator }

// add records a change of a job: it numbers the events (so their order is
// the order the changes were applied in) and snapshots the dirty sets.
func (x changes) add(jr *jobRun, dirty []*job.Set, events []job.Event) {
	if len(dirty) == 0 && len(events) == 0 {
		return
	}
	c, b, j := x.c, x.c.open, jr.job
	at := c.cfg.Now()
	for i := range events {
		j.LastSeq++
		c.lastFSeq++
		events[i].Seq, events[i].FSeq, events[i].JobID = j.LastSeq, c.lastFSeq, j.ID
		at = events[i].At
	}
	switch {
	case !j.State.Finished():
		jr.rec.Finished = time.Time{}
	case jr.rec.Finished.IsZero():
		jr.rec.Finished = at
	}
	b.events = append(b.events, events...)
	jb := b.jobs[j.ID]
	if jb == nil {
		jb = &jobBatch{where: map[int]int{}}
		b.jobs[j.ID] = jb
		b.order = append(b.order, j.ID)
	}
	for _, s := range dirty {
		if k, ok := jb.where[s.Index]; ok {
			jb.sets[k] = rowOf(s)
			continue
		}
		jb.where[s.Index] = len(jb.sets)
		jb.sets = append(jb.sets, rowOf(s))
	}
	var finished int64
	if !jr.rec.Finished.IsZero() {
		finished = jr.rec.Finished.UnixMilli()
	}
	jb.job = jobRow{State: j.State, Reason: j.Reason, NextToken: j.NextToken, LastSeq: j.LastSeq, Priority: j.Priority, FinishedMS: finished}
	c.last = b
}

// reframe records that frames at positions of jr were read again, and the
// job's new fingerprint. Call it after add, which makes the job's batch.
func (x changes) reframe(jr *jobRun, positions []int) {
	jb := x.c.open.jobs[jr.rec.ID]
	for _, p := range positions {
		jb.frames = append(jb.frames, frameRow{Pos: p, frameRecord: jr.frames[p]})
	}
	jb.fingerprint = jr.rec.Fingerprint
}

// create records a new job; its rows are written before the batch's changes.
func (x changes) create(jr *jobRun) {
	x.c.open.created = append(x.c.open.created, jr)
	x.c.addJob(jr)
	x.c.last = x.c.open
}

// remove records the deletion of a job's rows.
func (x changes) remove(id string) {
	x.c.open.removed = append(x.c.open.removed, id)
	x.c.last = x.c.open
}

// syncBeforeCommit has the batch of the change being made fsync dir before
// it commits.
func (x changes) syncBeforeCommit(dir string) {
	if !slices.Contains(x.c.open.dirs, dir) {
		x.c.open.dirs = append(x.c.open.dirs, dir)
	}
}

// change applies fn under the lock, then waits until its changes, and every
// change before them, are durable. fn may refuse (an error): the refusal
// too waits for the changes it saw, since it may depend on them; a refusing
// fn records nothing.
func (c *Coordinator) change(ctx context.Context, fn func(x changes) error) error {
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return c.broken
	}
	err := fn(changes{c})
	c.dispatch(changes{c})
	b := c.last
	c.mu.Unlock()
	if werr := c.await(ctx, b); werr != nil {
		return werr
	}
	return err
}

// pending returns the newest batch not yet durable, or nil. Call it under
// c.mu after reading the job for an answer, then await it before answering.
func (c *Coordinator) pending() *batch { return c.last }

// await returns once b is durable (nil b: at once). The first waiter to find
// no write in progress writes the open batch, which then holds b: batches
// are sealed only by a writer, which finishes them before the next writer
// starts.
func (c *Coordinator) await(ctx context.Context, b *batch) error {
	if b == nil {
		return nil
	}
	select {
	case <-b.done:
		return b.err
	default:
	}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	select {
	case <-b.done:
		return b.err
	default:
	}
	c.mu.Lock()
	w := c.open
	c.open = newBatch()
	c.mu.Unlock()
	start := c.cfg.Now()
	err := c.store.write(context.WithoutCancel(ctx), w)
	if err == nil {
		c.metrics.committed(len(w.events), c.cfg.Now().Sub(start))
	}

	c.mu.Lock()
	if c.last == w {
		c.last = nil
	}
	if err != nil {
		c.broken = fmt.Errorf("%w: %w", ErrStopped, err)
		err = c.broken
		select {
		case c.fatal <- err:
		default:
		}
		// The open batch was built on this one: it fails with it.
		failed := c.open
		c.open, c.last = newBatch(), nil
		failed.err = err
		close(failed.done)
	} else {
		for id, jb := range w.jobs {
			if jb.job.State == job.JobJoining {
				c.requestJoin(id)
			}
		}
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()

	if err != nil {
		c.log.Error("saving state failed; the coordinator stops, and resumes from its data folder when started again",
			"changes_lost", len(w.events), "err", err)
	}
	if err == nil {
		for _, e := range w.events {
			// A detail may hold a node's text (why it gave a set back): cut for the log.
			c.log.Info(string(e.Kind), "job", e.JobID, "set", e.Set, "node", e.Node, "seq", e.Seq, "detail", text.Truncate(e.Detail, maxLoggedDetail))
		}
	}
	w.err = err
	close(w.done)
	return err
}
