package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
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
	events []Event
	// sets holds each changed set's row as of its last change, in the order
	// the sets were first changed.
	sets  []setRow
	where map[int]int
	job   jobRow
	// dirs are fsynced before the transaction: a part renamed into place
	// must be there before the set that names it is C.
	dirs []string
	// done is closed once the batch is written or failed (err).
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{where: map[int]int{}, done: make(chan struct{})} }

// jobRow is what the jobs row holds of a job's changing state.
type jobRow struct {
	State, Reason      string
	NextToken, LastSeq uint64
}

// setRow is what the sets row holds of a set's state, encoded.
type setRow struct {
	Index     int
	State     State
	Node      string
	Token     uint64
	FailedOn  string
	LastError string
	Part      string
}

func rowOf(s *Set) setRow {
	r := setRow{Index: s.Index, State: s.State, Node: s.Node, Token: s.Token, LastError: s.LastError, FailedOn: "[]", Part: "{}"}
	// Most sets never fail and only C sets have a part: skip the JSON then.
	if len(s.FailedOn) > 0 {
		b, _ := json.Marshal(s.FailedOn)
		r.FailedOn = string(b)
	}
	if s.Part != (PartInfo{}) {
		b, _ := json.Marshal(s.Part)
		r.Part = string(b)
	}
	return r
}

// add records a change of job: it numbers the events (so their order is the
// order the changes were applied in) and snapshots the dirty sets. The
// caller holds the job's lock.
func (b *batch) add(job *Job, dirty []*Set, events []Event) {
	for i := range events {
		job.LastSeq++
		events[i].Seq = job.LastSeq
	}
	b.events = append(b.events, events...)
	for _, s := range dirty {
		if k, ok := b.where[s.Index]; ok {
			b.sets[k] = rowOf(s)
			continue
		}
		b.where[s.Index] = len(b.sets)
		b.sets = append(b.sets, rowOf(s))
	}
	b.job = jobRow{State: job.State, Reason: job.Reason, NextToken: job.NextToken, LastSeq: job.LastSeq}
}

// syncBeforeCommit has the batch of the change being made fsync dir before
// it commits. Call it from a change's function (under c.mu).
func (c *Coordinator) syncBeforeCommit(dir string) {
	for _, d := range c.open.dirs {
		if d == dir {
			return
		}
	}
	c.open.dirs = append(c.open.dirs, dir)
}

// change applies fn to the job under the lock, then waits until the change,
// and every change before it, is durable. fn may refuse (an error): the
// refusal too waits for the changes it saw, since it may depend on them.
func (c *Coordinator) change(ctx context.Context, fn func(j *Job) ([]*Set, []Event, error)) error {
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return c.broken
	}
	dirty, events, err := fn(c.job)
	if err == nil && (len(dirty) > 0 || len(events) > 0) {
		c.open.add(c.job, dirty, events)
		c.last = c.open
	}
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
	err := c.store.write(context.WithoutCancel(ctx), c.rec.ID, w)

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
	} else if w.job.State == JobJoining {
		c.requestJoin()
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()

	if err != nil {
		c.log.Error("saving state failed; the coordinator stops, and resumes from its data folder when started again",
			"job", c.rec.ID, "changes_lost", len(w.events), "err", err)
	}
	if err == nil {
		for _, e := range w.events {
			c.log.Info(e.Kind, "job", c.rec.ID, "set", e.Set, "node", e.Node, "seq", e.Seq, "detail", e.Detail)
		}
	}
	w.err = err
	close(w.done)
	return err
}
