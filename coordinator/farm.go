package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/text"
)

// The farm's jobs: the queue sets are granted from, and what people do to
// jobs (submit, cancel, reset, reprioritise, delete). Each is one change of
// the group commit, answered once durable.

// addJob puts jr in the farm. Call it under c.mu (or before Run).
func (c *Coordinator) addJob(jr *jobRun) {
	// Before any grant or heartbeat, so that a pause before the first sweep
	// is noticed whichever call comes first after it.
	jr.job.WatchForPauses(c.cfg.HeartbeatTimeout)
	c.jobs[jr.rec.ID] = jr
	c.queue = append(c.queue, jr)
	c.sortQueue()
}

// sortQueue orders the jobs as sets are granted from them: higher priority
// first, then the earlier submitted.
func (c *Coordinator) sortQueue() {
	slices.SortStableFunc(c.queue, func(a, b *jobRun) int {
		if d := cmp.Compare(b.job.Priority, a.job.Priority); d != 0 {
			return d
		}
		if d := a.rec.Created.Compare(b.rec.Created); d != 0 {
			return d
		}
		return strings.Compare(a.rec.ID, b.rec.ID)
	})
}

func (c *Coordinator) findJob(framesDir, fingerprint string) *jobRun {
	var found *jobRun
	for _, jr := range c.queue {
		if jr.rec.FramesDir == framesDir && jr.rec.Fingerprint == fingerprint && (found == nil || jr.rec.Created.After(found.rec.Created)) {
			found = jr
		}
	}
	return found
}

func (c *Coordinator) jobCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.jobs)
}

// lookup returns the job id names; "" names the farm's only job. Call it
// under c.mu.
func (c *Coordinator) lookup(id string) (*jobRun, error) {
	if id != "" {
		jr := c.jobs[id]
		if jr == nil {
			return nil, fmt.Errorf("%w: the farm has no job %q (framefarm jobs lists them)", job.ErrNotFound, text.Truncate(id, 100))
		}
		return jr, nil
	}
	switch len(c.queue) {
	case 0:
		return nil, fmt.Errorf("%w: the farm has no jobs yet", job.ErrNotFound)
	case 1:
		return c.queue[0], nil
	}
	var names []string
	for _, jr := range c.queue {
		names = append(names, fmt.Sprintf("%s (%s, %s)", jr.rec.ID, jr.rec.Name, jr.job.State))
	}
	return nil, fmt.Errorf("%w: the farm has %d jobs, say which one (--job): %s", ErrInvalid, len(names), strings.Join(names, ", "))
}

// create records a prepared job: its folder first, so that a job in the
// database always has one.
func (c *Coordinator) create(ctx context.Context, jr *jobRun, created []job.Event) error {
	if err := os.MkdirAll(jr.partDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", jr.partDir, err)
	}
	err := c.change(ctx, func(x changes) error {
		x.create(jr)
		x.add(jr, nil, created)
		return nil
	})
	if err != nil {
		os.RemoveAll(jr.dir)
		return err
	}
	c.log.Info("job created", "job", jr.rec.ID, "name", jr.rec.Name, "frames", len(jr.frames), "sets", len(jr.job.Sets),
		"priority", jr.job.Priority, "detail", created[0].Detail)
	return nil
}

// submit checks and adds a job to the queue, and returns it.
func (c *Coordinator) submit(ctx context.Context, spec JobSpec) (*jobRun, error) {
	jr, created, err := c.prepareJob(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errRefused, err)
	}
	if err := c.create(ctx, jr, created); err != nil {
		return nil, err
	}
	return jr, nil
}

// jobChange applies fn to job id as one change.
func (c *Coordinator) jobChange(ctx context.Context, id string, fn func(jr *jobRun) ([]*job.Set, []job.Event, error)) (*jobRun, error) {
	var jr *jobRun
	err := c.change(ctx, func(x changes) error {
		var err error
		if jr, err = c.lookup(id); err != nil {
			return err
		}
		dirty, ev, err := fn(jr)
		if err != nil {
			return err
		}
		x.add(jr, dirty, ev)
		return nil
	})
	return jr, err
}

// cancel stops a job; the nodes rendering its sets learn it at their next
// heartbeat.
func (c *Coordinator) cancel(ctx context.Context, id string) (*jobRun, error) {
	return c.jobChange(ctx, id, func(jr *jobRun) ([]*job.Set, []job.Event, error) {
		return jr.job.Cancel(c.cfg.Now())
	})
}

// reset puts a failed or cancelled job back in the queue (all: every set
// is rendered again). It reads the job's frames again first: a job that
// failed on a bad frame is reset once the frame is fixed, so frames whose
// size or time changed are taken as they are now, and the rendered sets
// that hold them are rendered again. Parts no set names any more are
// removed once the change is durable.
func (c *Coordinator) reset(ctx context.Context, id string, all bool) (*jobRun, error) {
	c.mu.Lock()
	jr, err := c.lookup(id)
	var frames []frameRecord
	if err == nil {
		frames = slices.Clone(jr.frames)
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// Read outside the lock: a folder on a slow mount holds no grant up.
	changed, err := c.rereadJobFrames(ctx, jr.rec.FramesDir, frames)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errRefused, err)
	}
	err = c.change(ctx, func(x changes) error {
		if c.jobs[jr.rec.ID] != jr {
			return fmt.Errorf("%w: job %s was deleted", job.ErrNotFound, jr.rec.ID)
		}
		redo := map[int]bool{}
		var positions []int
		for _, s := range jr.job.Sets {
			for p := s.First; p < s.First+s.Count; p++ {
				if f, ok := changed[p]; ok {
					redo[s.Index] = true
					positions = append(positions, p)
					jr.frames[p] = f
				}
			}
		}
		dirty, ev, err := jr.job.Reset(all, redo, c.cfg.Now())
		if err != nil {
			return err
		}
		jr.stopCopiesLocked(true)
		x.add(jr, dirty, ev)
		if len(positions) > 0 {
			st := jr.rec.Settings
			st.FilterThreads = 0 // as the fingerprint was made (see prepareJob)
			jr.rec.Fingerprint = fingerprint(st, jr.frames, len(jr.job.Sets))
			x.reframe(jr, positions)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.removeStaleParts(jr)
	return jr, nil
}

// rereadFrames returns, by position, the frames whose size or modification
// time differ from the record, as they are now. A frame that cannot be read
// as a plain file is an error naming it.
func rereadFrames(dir string, frames []frameRecord) (map[int]frameRecord, error) {
	now := map[string]frameRecord{}
	changed := map[int]frameRecord{}
	for p, f := range frames {
		cur, ok := now[f.Name]
		if !ok {
			fi, err := os.Stat(filepath.Join(dir, f.Name))
			if err != nil {
				return nil, fmt.Errorf("frame %d (%s) cannot be read (%v): restore it, then reset the job again", f.Number, f.Name, err)
			}
			if !fi.Mode().IsRegular() {
				return nil, fmt.Errorf("frame %d (%s) is not a regular file: put the image back, then reset the job again", f.Number, f.Name)
			}
			cur = frameRecord{Name: f.Name, Size: fi.Size(), ModTime: fi.ModTime()}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				cur.Dev, cur.Ino = uint64(st.Dev), st.Ino
			}
			now[f.Name] = cur
		}
		if cur.Size != f.Size || !cur.ModTime.Equal(f.ModTime) || cur.Dev != f.Dev || cur.Ino != f.Ino {
			changed[p] = frameRecord{Number: f.Number, Name: f.Name, Size: cur.Size, ModTime: cur.ModTime, Dev: cur.Dev, Ino: cur.Ino}
		}
	}
	return changed, nil
}

// removeStaleParts deletes the files in the job's parts folder that no set
// names: parts of sets rendered again, and uploads refused after they were
// moved in.
func (c *Coordinator) removeStaleParts(jr *jobRun) {
	keep := map[string]bool{}
	c.mu.Lock()
	for _, s := range jr.job.Sets {
		if s.Part.Name != "" {
			keep[s.Part.Name] = true
		}
	}
	c.mu.Unlock()
	entries, _ := os.ReadDir(jr.partDir)
	for _, e := range entries {
		if !keep[e.Name()] {
			_ = os.Remove(filepath.Join(jr.partDir, e.Name()))
		}
	}
}

// setPriority moves a job in the queue.
func (c *Coordinator) setPriority(ctx context.Context, id string, p int) (*jobRun, error) {
	return c.jobChange(ctx, id, func(jr *jobRun) ([]*job.Set, []job.Event, error) {
		ev := jr.job.SetPriority(p, c.cfg.Now())
		c.sortQueue()
		return nil, ev, nil
	})
}

// deleteJob removes a finished job: its state, then its folder.
func (c *Coordinator) deleteJob(ctx context.Context, id string) error {
	var dir, frames string
	var stopped []chan struct{}
	shared := false
	err := c.change(ctx, func(x changes) error {
		jr, err := c.lookup(id)
		if err != nil {
			return err
		}
		if !jr.job.State.Finished() {
			return fmt.Errorf("%w: job %s is %s: cancel it first", job.ErrConflict, jr.rec.ID, jr.job.State)
		}
		x.add(jr, nil, []job.Event{{At: c.cfg.Now(), Kind: job.EvJobDeleted, Set: -1, Detail: "its parts, final video (also from --storage) and state removed"}})
		delete(c.jobs, jr.rec.ID)
		c.queue = slices.DeleteFunc(c.queue, func(q *jobRun) bool { return q == jr })
		x.remove(jr.rec.ID)
		stopped = jr.stopCopiesLocked(false)
		dir, frames = jr.dir, jr.rec.FramesDir
		shared = slices.ContainsFunc(c.queue, func(q *jobRun) bool { return q.rec.FramesDir == frames })
		return nil
	})
	if err != nil {
		return err
	}
	c.log.Info("job deleted", "job", id)
	c.copies.Go(func() { c.sweepDeleted(context.WithoutCancel(ctx), id, stopped) })
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	// Frames uploaded for the job go with it, unless another job renders
	// them too.
	if shared {
		return nil
	}
	if filepath.Dir(frames) == filepath.Join(c.cfg.Data, "uploads") {
		return os.RemoveAll(frames)
	}
	name := jobName(frames)
	at, _, err := c.uploadedFrames(name)
	if err != nil || at != frames || c.parts == nil {
		return nil
	}
	local, err := c.uploadDir(name)
	if err != nil {
		return nil
	}
	// Swept before the answer: a submit --upload of the same folder right
	// after (its upload has the same name) must not find frames that are
	// about to go and send nothing. Not if a job submitted meanwhile renders
	// them, or renders the upload's local folder (submitted before the
	// coordinator had --storage).
	c.mu.Lock()
	inUse := slices.ContainsFunc(c.queue, func(q *jobRun) bool { return q.rec.FramesDir == frames || q.rec.FramesDir == local })
	if inUse || c.sweepingUploads[name] != nil {
		c.mu.Unlock()
		return nil
	}
	if c.sweepingUploads == nil {
		c.sweepingUploads = map[string]chan struct{}{}
	}
	swept := make(chan struct{})
	c.sweepingUploads[name] = swept
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.sweepingUploads, name)
		c.mu.Unlock()
		close(swept)
	}()
	c.sweepBucket(context.WithoutCancel(ctx), name, "uploads")
	// The web app's audio, kept on disk beside frames kept in the bucket.
	return os.RemoveAll(local)
}
