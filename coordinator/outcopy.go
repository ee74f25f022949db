package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/storage"
)

// A copy to an --out URL is retried with doubling waits, from
// outRetryFirst up to outRetryMax, until outRetryFor has passed: a storage
// server restarted or briefly unreachable costs the copy a few seconds, and
// one down for longer is given up with an event, never failing the job
// (its final stays in the data folder, for fetch). An error that waiting
// cannot cure (no such bucket, wrong or unauthorised keys) ends the copy at
// once, saying what to change.
const (
	outRetryFirst = time.Second
	outRetryMax   = 30 * time.Second
	outRetryFor   = 5 * time.Minute
)

// copyOut puts a copy of a done job's final at its --out URL.
func (c *Coordinator) copyOut(ctx context.Context, jr *jobRun, final, raw string) {
	where := storage.Redact(raw)
	log := c.log.With("job", jr.rec.ID, "out", where)
	loc, err := storage.Parse(raw)
	if err != nil {
		// Checked at submit; only a record changed under us lands here.
		c.outCopyDone(ctx, jr, job.EvOutFailed, fmt.Sprintf("not copied to %s: %v", where, err))
		return
	}
	start := c.cfg.Now()
	wait := outRetryFirst
	for attempt := 1; ; attempt++ {
		c.mu.Lock()
		deleted := c.jobs[jr.rec.ID] != jr
		c.mu.Unlock()
		if deleted {
			log.Info("job deleted before its final was copied to --out", "attempt", attempt)
			return
		}
		t0 := time.Now()
		err := storage.PutFile(ctx, final, loc)
		if err == nil {
			log.Info("copied the final video to --out", "attempt", attempt, "took", time.Since(t0).Round(time.Millisecond))
			c.outCopyDone(ctx, jr, job.EvOutCopied, fmt.Sprintf("copied to %s (attempt %d, %s)", loc, attempt, time.Since(t0).Round(time.Millisecond)))
			return
		}
		if ctx.Err() != nil {
			log.Warn("stopped before the final video was copied to --out; fetch it from the data folder", "attempt", attempt)
			return
		}
		if storage.Permanent(err) {
			hint := storage.Hint(err)
			log.Error("the final video cannot be copied to --out until the storage is fixed; it stays in the data folder",
				"attempt", attempt, "fix", hint, "err", err)
			c.outCopyDone(ctx, jr, job.EvOutFailed, fmt.Sprintf("not copied to %s: %s (the storage answered %s); the final stays in the data folder, for fetch",
				loc, hint, storage.Answer(err)))
			return
		}
		if c.cfg.Now().Sub(start)+wait > outRetryFor {
			log.Error("gave up copying the final video to --out; it stays in the data folder", "attempts", attempt, "err", err)
			c.outCopyDone(ctx, jr, job.EvOutFailed, fmt.Sprintf("gave up copying to %s after %d attempts over %s: %v",
				loc, attempt, c.cfg.Now().Sub(start).Round(time.Second), err))
			return
		}
		log.Warn("copying the final video to --out failed; retrying", "attempt", attempt, "retry_in", wait, "err", err)
		c.mu.Lock()
		jr.outCopy = fmt.Sprintf("retrying: attempt %d failed: %v", attempt, err)
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			log.Warn("stopped before the final video was copied to --out; fetch it from the data folder", "attempt", attempt)
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, outRetryMax)
	}
}

// outCopyDone records how the copy ended, unless the job was deleted
// meanwhile.
func (c *Coordinator) outCopyDone(ctx context.Context, jr *jobRun, kind job.EventKind, detail string) {
	if err := c.change(ctx, func(x changes) error {
		if c.jobs[jr.rec.ID] != jr {
			return nil
		}
		jr.outCopy = detail
		x.add(jr, nil, []job.Event{{At: c.cfg.Now(), Kind: kind, Set: -1, Detail: detail}})
		return nil
	}); err != nil {
		c.log.Error("recording the copy to --out failed", "job", jr.rec.ID, "err", err)
	}
}
