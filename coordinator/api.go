package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/grpc/status"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/atomicfile"
	farmpb "github.com/framefarm/framefarm/proto"
)

// The farm's calls for its front ends. The gRPC FarmService and the web
// app (coordinator/web) both answer with these, so that the two never
// disagree; each is durable before it returns, as every answer is.

// Job is one job's status with its sets and nodes, as GetJob answers it.
func (c *Coordinator) Job(ctx context.Context, id string) (*farmpb.JobStatus, error) {
	c.mu.Lock()
	jr, err := c.lookup(id)
	var js *farmpb.JobStatus
	if err == nil {
		js = c.statusLocked(jr)
	}
	b := c.pending()
	c.mu.Unlock()
	// What is shown must be durable; after a failed commit it is not, but
	// the coordinator is stopping and its last state is still the best
	// answer.
	_ = c.await(ctx, b)
	return js, err
}

// Submit checks spec's frames and settings as `framefarm submit` has them
// checked, and queues the job.
func (c *Coordinator) Submit(ctx context.Context, spec JobSpec) (*farmpb.JobSummary, error) {
	return c.summary(c.submit(ctx, spec))
}

// Cancel stops a job.
func (c *Coordinator) Cancel(ctx context.Context, id string) (*farmpb.JobSummary, error) {
	return c.summary(c.cancel(ctx, id))
}

// Reset puts a failed or cancelled job back in the queue (all: every set
// is rendered again).
func (c *Coordinator) Reset(ctx context.Context, id string, all bool) (*farmpb.JobSummary, error) {
	return c.summary(c.reset(ctx, id, all))
}

// SetPriority moves a job in the queue.
func (c *Coordinator) SetPriority(ctx context.Context, id string, p int) (*farmpb.JobSummary, error) {
	return c.summary(c.setPriority(ctx, id, p))
}

// Delete removes a finished job, its files and its uploaded frames.
func (c *Coordinator) Delete(ctx context.Context, id string) error {
	if id == "" {
		// Never "the only job": deleting is for good.
		return fmt.Errorf("%w: say which job to delete", ErrInvalid)
	}
	return c.deleteJob(ctx, id)
}

// Events calls send with the events after seq, in order, and then with
// each one as it is committed, until ctx ends or send fails. With id ""
// they are the farm's, numbered by FarmSeq; else job id's, by Seq.
func (c *Coordinator) Events(ctx context.Context, id string, after uint64, send func(*farmpb.Event) error) error {
	if id != "" {
		c.mu.Lock()
		_, err := c.lookup(id)
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	// SQLite integers are signed, and no event is numbered that high.
	after = min(after, math.MaxInt64)
	for {
		c.mu.Lock()
		wake := c.changed
		c.mu.Unlock()
		events, err := c.store.events(ctx, id, after, 500)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := send(&farmpb.Event{JobId: e.JobID, Seq: e.Seq, FarmSeq: e.FSeq, UnixMs: e.At.UnixMilli(), Kind: string(e.Kind),
				SetIndex: int32(e.Set), Node: e.Node, Detail: e.Detail}); err != nil {
				return err
			}
			after = e.Seq
			if id == "" {
				after = e.FSeq
			}
		}
		if len(events) == 500 {
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}

// Final opens a done job's final video, with its name, size and SHA-256.
func (c *Coordinator) Final(ctx context.Context, id string) (f *os.File, name string, size int64, sum string, err error) {
	c.mu.Lock()
	jr, err := c.lookup(id)
	if err != nil {
		c.mu.Unlock()
		return nil, "", 0, "", err
	}
	state, reason := jr.job.State, jr.job.Reason
	name, size, sum = jr.rec.FinalName, jr.rec.FinalSize, jr.rec.FinalSHA
	b := c.pending()
	c.mu.Unlock()
	if err := c.await(ctx, b); err != nil {
		return nil, "", 0, "", err
	}
	if state == job.JobFailed {
		return nil, "", 0, "", fmt.Errorf("%w: job %s: %s", job.ErrJobFailed, jr.rec.ID, reason)
	}
	if state != job.JobDone || name == "" {
		return nil, "", 0, "", fmt.Errorf("%w: job %s is %s", ErrNotReady, jr.rec.ID, state)
	}
	f, err = os.Open(filepath.Join(jr.dir, name))
	if err != nil {
		return nil, "", 0, "", fmt.Errorf("opening the final video: %w", err)
	}
	return f, name, size, sum, nil
}

// thumbWidth is a thumbnail's width in pixels: a grid cell's preview.
const thumbWidth = 160

// Thumbnail returns the path of a small JPEG of set index's middle frame,
// made with ffmpeg the first time it is asked for and kept in the job's
// folder (removed with the job).
func (c *Coordinator) Thumbnail(ctx context.Context, id string, index int) (string, error) {
	c.mu.Lock()
	jr, err := c.lookup(id)
	var frame frameRecord
	if err == nil {
		if index < 0 || index >= len(jr.job.Sets) {
			err = fmt.Errorf("%w: job %s has no set %d", job.ErrNotFound, jr.rec.ID, index)
		} else {
			s := jr.job.Sets[index]
			frame = jr.frames[s.First+s.Count/2]
		}
	}
	c.mu.Unlock()
	if err != nil {
		return "", err
	}
	// Named by the frame and its record, so that a frame changed and reset
	// gets a new thumbnail.
	path := filepath.Join(jr.dir, "thumbs", strconv.Itoa(index)+"-"+strconv.FormatInt(frame.ModTime.UnixNano(), 36)+".jpg")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	src, err := c.openJobFrame(ctx, jr.rec.FramesDir, frame)
	if err != nil {
		return "", err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("%w: %w", errOwnFault, err)
	}
	// ffmpeg reads the frame opened and checked above (as nodes get it),
	// never a path a changed folder could point elsewhere.
	err = atomicfile.Write(path, 0o644, func(f *os.File) error {
		return c.cfg.FFmpeg.Pipe(ctx, []string{"-v", "error", "-i", "pipe:0", "-frames:v", "1",
			"-vf", fmt.Sprintf("scale=%d:-2", thumbWidth), "-q:v", "5", "-f", "mjpeg", "pipe:1"}, src, f)
	})
	if err != nil {
		return "", fmt.Errorf("making set %d's thumbnail from frame %d (%s): %w", index, frame.Number, frame.Name, err)
	}
	return path, nil
}

// UploadDir is the folder of upload name (data/uploads/NAME), after
// checking the name.
func (c *Coordinator) UploadDir(name string) (string, error) { return c.uploadDir(name) }

// CheckFileName refuses a name that is not a plain file name an upload may
// hold.
func CheckFileName(name string) error { return checkFileName(name) }

// MaxUploadFile bounds one uploaded file.
const MaxUploadFile = maxUploadFile

// Status is err as the farm's front ends answer it: a gRPC status whose
// code (and reason) say what kind of error it is. The coordinator's own
// faults are noted for status, as the gRPC service notes them.
func (c *Coordinator) Status(err error) *status.Status {
	s, _ := status.FromError(c.answer(err))
	return s
}

// IsNotFound says whether err names a job or set the farm does not have.
func IsNotFound(err error) bool { return errors.Is(err, job.ErrNotFound) }

// Broken is the failed commit that stops the coordinator, or nil while its
// state is being saved.
func (c *Coordinator) Broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}
