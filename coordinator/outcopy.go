package coordinator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/storage"
)

// A copy of a final (to an --out URL, or into the --storage bucket) is
// retried with doubling waits, from outRetryFirst up to outRetryMax, until
// outRetryFor has passed: a storage server restarted or briefly unreachable
// costs the copy a few seconds, and one down for longer is given up with an
// event, never failing the job (its final stays in the data folder, for
// fetch). An error that waiting cannot cure (no such bucket, wrong or
// unauthorised keys) ends the copy at once, saying what to change.
const (
	outRetryFirst = time.Second
	outRetryMax   = 30 * time.Second
	outRetryFor   = 5 * time.Minute
)

// finalCopy is one place a done job's final is copied to.
type finalCopy struct {
	// flag names the copy in messages ("--out", "--storage"); where is the
	// object's URL, redacted.
	flag, where string
	// verb and failVerb say what was done or not: "copied to", "stored at".
	verb, failVerb string
	put            func(ctx context.Context, local string) error
	// farms: the object is the farm's (in --storage), which a delete of
	// the job removes, not the user's (--out).
	farms          bool
	copied, failed job.EventKind
	// status is the job's field that shows how the copy stands.
	status func(jr *jobRun) *string
	// fin is when the join whose final this copies finished (see current).
	fin time.Time
}

// outTarget is the copy to a job's --out URL; ok is false (after recording
// why) when the URL no longer parses.
func (c *Coordinator) outTarget(ctx context.Context, jr *jobRun, raw string) (finalCopy, bool) {
	fc := finalCopy{
		flag: "--out", where: storage.Redact(raw), verb: "copied to", failVerb: "not copied to",
		copied: job.EvOutCopied, failed: job.EvOutFailed,
		status: func(jr *jobRun) *string { return &jr.outCopy },
	}
	loc, err := storage.Parse(raw)
	if err != nil {
		// Checked at submit; only a record changed under us lands here.
		c.copyDone(ctx, jr, fc, fc.failed, fmt.Sprintf("not copied to %s: %v", fc.where, err))
		return fc, false
	}
	fc.where = loc.String()
	fc.put = func(ctx context.Context, local string) error { return storage.PutFile(ctx, local, loc) }
	return fc, true
}

// storageTarget is the copy of a job's final into the --storage bucket, at
// finals/JOB/final.EXT beside the parts' folder: where a farm in the cloud
// keeps its results, for people and programs that read the bucket rather
// than ask the coordinator.
func (c *Coordinator) storageTarget(jr *jobRun, name string) finalCopy {
	key := c.finalKey(jr.rec.ID, name)
	return finalCopy{
		flag: "--storage", where: c.parts.Where(key), verb: "stored at", failVerb: "not stored at",
		put: func(ctx context.Context, local string) error {
			f, err := os.Open(local)
			if err != nil {
				return err
			}
			defer f.Close()
			return c.parts.Put(ctx, key, f)
		},
		farms:  true,
		copied: job.EvFinalStored, failed: job.EvFinalNotStored,
		status: func(jr *jobRun) *string { return &jr.stored },
	}
}

// finalKey is where a job's final is kept in the --storage bucket.
func (c *Coordinator) finalKey(jobID, name string) string {
	return fmt.Sprintf("%sfinals/%s/%s", c.partsPrefix, jobID, name)
}

// runningCopy is a copy of a final under way.
type runningCopy struct {
	stop  context.CancelFunc
	farms bool          // its finalCopy's
	done  chan struct{} // closed when it has ended
}

// startCopies starts the copies of a done job's final, each under a
// context that a reset or delete of the job may cancel (stopCopiesLocked).
func (c *Coordinator) startCopies(ctx context.Context, jr *jobRun, final string, fcs []finalCopy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	jr.stopCopiesLocked(true)
	for _, fc := range fcs {
		fc.fin = jr.rec.Finished
		cctx, stop := context.WithCancel(ctx)
		rc := runningCopy{stop: stop, farms: fc.farms, done: make(chan struct{})}
		jr.copying = append(jr.copying, rc)
		c.copies.Go(func() {
			defer close(rc.done)
			defer stop()
			c.copyFinal(cctx, jr, final, fc)
		})
	}
}

// stopCopiesLocked stops copies of jr's final under way and returns what
// ends when they have ended; c.mu is held. A reset (all) stops every
// copy: one of the old final must not land after the new one, over it. A
// delete stops the put into the bucket, whose object its sweep removes,
// but lets a copy to --out finish the attempt under way: that copy is the
// user's, and it tries no more once the job is gone.
func (jr *jobRun) stopCopiesLocked(all bool) []chan struct{} {
	var stopped []chan struct{}
	for _, rc := range jr.copying {
		if all || rc.farms {
			rc.stop()
			stopped = append(stopped, rc.done)
		}
	}
	jr.copying = nil
	return stopped
}

// copyFinal puts a copy of a done job's final (a file in its folder) where
// fc says, retrying as the constants above say, until it is put, given up,
// or the job is reset or deleted (which cancels ctx).
func (c *Coordinator) copyFinal(ctx context.Context, jr *jobRun, final string, fc finalCopy) {
	log := c.log.With("job", jr.rec.ID, "to", fc.where)
	start := c.cfg.Now()
	wait := outRetryFirst
	// gone says so when the job was reset or deleted: no copy is wanted.
	gone := func(attempt int) bool {
		if c.current(jr, fc.fin) {
			return false
		}
		log.Info("job reset or deleted before its final was copied to "+fc.flag+"; the copy stopped", "attempt", attempt)
		return true
	}
	for attempt := 1; ; attempt++ {
		if gone(attempt) {
			return
		}
		t0 := time.Now()
		err := fc.put(ctx, final)
		if err == nil {
			took := time.Since(t0).Round(time.Millisecond)
			if fc.farms && !c.current(jr, fc.fin) {
				log.Info("job reset or deleted while its final was put into --storage: a delete's sweep removes it, a reset job's next final goes over it", "attempt", attempt)
				return
			}
			log.Info("copied the final video to "+fc.flag, "attempt", attempt, "took", took)
			c.copyDone(ctx, jr, fc, fc.copied, fmt.Sprintf("%s %s (attempt %d, %s)", fc.verb, fc.where, attempt, took))
			return
		}
		if gone(attempt) {
			return
		}
		if ctx.Err() != nil {
			log.Warn("stopped before the final video was copied to "+fc.flag+"; fetch it from the data folder", "attempt", attempt)
			return
		}
		if storage.Permanent(err) {
			hint := storage.Hint(err, fc.flag)
			log.Error("the final video cannot be copied to "+fc.flag+" until the storage is fixed; it stays in the data folder",
				"attempt", attempt, "fix", hint, "err", err)
			c.copyDone(ctx, jr, fc, fc.failed, fmt.Sprintf("%s %s: %s (the storage answered %s); the final stays in the data folder, for fetch",
				fc.failVerb, fc.where, hint, storage.Answer(err)))
			return
		}
		if c.cfg.Now().Sub(start)+wait > outRetryFor {
			log.Error("gave up copying the final video to "+fc.flag+"; it stays in the data folder", "attempts", attempt, "err", err)
			c.copyDone(ctx, jr, fc, fc.failed, fmt.Sprintf("gave up: %s %s after %d attempts over %s: %v",
				fc.failVerb, fc.where, attempt, c.cfg.Now().Sub(start).Round(time.Second), err))
			return
		}
		log.Warn("copying the final video to "+fc.flag+" failed; retrying", "attempt", attempt, "retry_in", wait, "err", err)
		c.mu.Lock()
		*fc.status(jr) = fmt.Sprintf("retrying: attempt %d failed: %v", attempt, err)
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			if !gone(attempt) {
				log.Warn("stopped before the final video was copied to "+fc.flag+"; fetch it from the data folder", "attempt", attempt)
			}
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, outRetryMax)
	}
}

// current reports whether jr is still done from the join that finished at
// fin: neither deleted nor reset since (only not deleted for a zero fin,
// a copy that ended before its join was recorded).
func (c *Coordinator) current(jr *jobRun, fin time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.currentLocked(jr, fin)
}

func (c *Coordinator) currentLocked(jr *jobRun, fin time.Time) bool {
	return c.jobs[jr.rec.ID] == jr && (fin.IsZero() || jr.job.State == job.JobDone && jr.rec.Finished.Equal(fin))
}

// copyDone records how a copy ended, unless the job was deleted, or
// reset after the join the copy belongs to, meanwhile.
func (c *Coordinator) copyDone(ctx context.Context, jr *jobRun, fc finalCopy, kind job.EventKind, detail string) {
	if err := c.change(ctx, func(x changes) error {
		if !c.currentLocked(jr, fc.fin) {
			return nil
		}
		*fc.status(jr) = detail
		x.add(jr, nil, []job.Event{{At: c.cfg.Now(), Kind: kind, Set: -1, Detail: detail}})
		return nil
	}); err != nil {
		c.log.Error("recording the copy of the final failed", "job", jr.rec.ID, "flag", fc.flag, "err", err)
	}
}

// resumeCopies starts again the copies of finals that a stop cut off: a
// job done whose join said its final was being copied (to --out) or stored
// (into --storage) there, and no event since that ended the copy. For the
// copies that ended, status shows how, as before the stop.
func (c *Coordinator) resumeCopies(ctx context.Context) {
	evs, err := c.store.eventsOfKinds(ctx, job.EvJobDone, job.EvOutCopied, job.EvOutFailed, job.EvFinalStored, job.EvFinalNotStored)
	if err != nil {
		c.log.Warn("reading how the copies of finals stood failed; copies cut off by the stop are not resumed", "err", err)
		return
	}
	type cut struct {
		jr                *jobRun
		out, store        bool
		outWhere, storeAt string
	}
	var cuts []cut
	c.mu.Lock()
	for _, jr := range c.queue {
		if jr.job.State != job.JobDone || jr.rec.FinalName == "" {
			continue
		}
		var done string // the last join's detail: what it began
		var outEnd, storeEnd *job.Event
		for _, e := range evs[jr.rec.ID] {
			switch e.Kind {
			case job.EvJobDone:
				done, outEnd, storeEnd = e.Detail, nil, nil
			case job.EvOutCopied, job.EvOutFailed:
				outEnd = &e
			case job.EvFinalStored, job.EvFinalNotStored:
				storeEnd = &e
			}
		}
		if outEnd != nil {
			jr.outCopy = outEnd.Detail
		}
		if storeEnd != nil {
			jr.stored = storeEnd.Detail
		}
		k := cut{jr: jr}
		k.out = outEnd == nil && storage.IsURL(jr.rec.OutPath) && strings.Contains(done, ", being copied to ")
		k.store = storeEnd == nil && c.parts != nil && strings.Contains(done, ", being stored at ")
		if k.out || k.store {
			cuts = append(cuts, k)
		}
	}
	c.mu.Unlock()
	for _, k := range cuts {
		final := filepath.Join(k.jr.dir, k.jr.rec.FinalName)
		var fcs []finalCopy
		if k.out {
			if fc, ok := c.outTarget(ctx, k.jr, k.jr.rec.OutPath); ok {
				fcs = append(fcs, fc)
			}
		}
		if k.store {
			fcs = append(fcs, c.storageTarget(k.jr, k.jr.rec.FinalName))
		}
		for _, fc := range fcs {
			c.log.Info("resuming the copy of a final that the stop cut off", "job", k.jr.rec.ID, "flag", fc.flag, "to", fc.where)
			c.mu.Lock()
			*fc.status(k.jr) = "under way again after a restart"
			c.mu.Unlock()
		}
		c.startCopies(ctx, k.jr, final, fcs)
	}
}
