package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/framefarm/framefarm/internal/atomicfile"
	farmpb "github.com/framefarm/framefarm/proto"
)

// waitPoll is how long fetch --wait waits before asking again when it cannot
// follow the job's events (an older coordinator, a broken stream), and
// waitRecheck how long it trusts an event stream that says nothing.
const (
	waitPoll    = 500 * time.Millisecond
	waitRecheck = 30 * time.Second
)

func runFetch(ctx context.Context, e *env, args []string) error {
	f := newFlags("fetch", "-o FILE [flags]",
		`Downloads a job's final video, checks its size and SHA-256 against what the
coordinator stored, and moves it into place atomically: FILE is either the
whole video or untouched.`)
	var cc clientCreds
	cc.register(f)
	addr := f.String("coordinator", "127.0.0.1:5555", "the coordinator's `ADDR`")
	job := f.String("job", "", "job `ID` (default: the farm's only job; framefarm jobs lists them)")
	out := f.String("o", "", "write the video to `FILE` (required; an existing folder keeps the coordinator's file name)")
	wait := f.Bool("wait", false, "block until the video is ready; fail with the reason if the job fails")
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.require("o"); err != nil {
		return err
	}
	c, err := dialFarm(*addr, &cc)
	if err != nil {
		return err
	}
	defer c.Close()

	st, err := waitForVideo(ctx, e, c, *job, *wait)
	if err != nil {
		return interrupted(ctx, err)
	}
	path, size, sum, err := download(ctx, c, st.JobId, *out)
	if err != nil {
		return interrupted(ctx, err)
	}
	fmt.Fprintf(e.stdout, "wrote %s (%d bytes, sha256 %s)\n", path, size, sum)
	return nil
}

// interrupted keeps a Ctrl-C from exiting 0: unlike a server's shutdown, a
// fetch that stops early has not done its job.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.New("interrupted; nothing written")
	}
	return err
}

// waitForVideo returns the job's status once it is done.
func waitForVideo(ctx context.Context, e *env, c *farmClient, job string, wait bool) (*farmpb.JobStatus, error) {
	lastSaid := ""
	for {
		st, err := c.getJob(ctx, job)
		var le *linkError
		switch {
		case err != nil && wait && errors.As(err, &le) && ctx.Err() == nil:
			// The coordinator may be restarting; it resumes the job.
			if said := err.Error(); said != lastSaid {
				fmt.Fprintf(e.stderr, "framefarm fetch: %v; trying again\n", err)
				lastSaid = said
			}
		case err != nil:
			return nil, err
		case st.State == jobDone:
			return st, nil
		case st.State == jobFailed:
			return nil, fmt.Errorf("job %s failed: %s", st.JobId, st.Reason)
		case st.State == jobCancelled:
			return nil, fmt.Errorf("job %s was cancelled: framefarm reset %s puts it back in the queue", st.JobId, st.JobId)
		case !wait:
			return nil, fmt.Errorf("job %s is %s (%d/%d frames): no video yet; use --wait to block until it is ready",
				st.JobId, st.State, st.FramesDone, st.TotalFrames)
		default:
			job = st.JobId
			if said := "job " + st.State; said != lastSaid {
				fmt.Fprintf(e.stderr, "framefarm fetch: job %s is %s (%d/%d frames); waiting for the video\n",
					st.JobId, st.State, st.FramesDone, st.TotalFrames)
				lastSaid = said
			}
		}
		if !untilJobEvent(ctx, c, st) {
			return nil, ctx.Err()
		}
	}
}

// untilJobEvent follows the job's events from where st left off until one is
// about the whole job (joining, done, failed), so that fetch --wait starts
// the download as soon as the video is stored rather than up to a poll
// interval later. It reports whether to go on.
func untilJobEvent(ctx context.Context, c *farmClient, st *farmpb.JobStatus) bool {
	if st == nil {
		return pause(ctx, waitPoll)
	}
	wctx, cancel := context.WithTimeout(ctx, waitRecheck)
	defer cancel()
	stream, err := c.WatchEvents(wctx, &farmpb.WatchEventsRequest{JobId: st.JobId, AfterSeq: st.LastEventSeq})
	if err != nil {
		return pause(ctx, waitPoll)
	}
	for {
		ev, err := stream.Recv()
		switch {
		case err != nil && ctx.Err() != nil:
			return false
		case err != nil && wctx.Err() != nil:
			return true // quiet for a while: ask again
		case err != nil:
			return pause(ctx, waitPoll)
		case ev.SetIndex < 0:
			return true
		}
	}
}

// download streams the video into a temp file beside out and renames it
// into place only once size and checksum match what the coordinator stored.
func download(ctx context.Context, c *farmClient, job, out string) (path string, size int64, sum string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.DownloadVideo(ctx, &farmpb.DownloadVideoRequest{JobId: job})
	if err != nil {
		return "", 0, "", c.explain(ctx, err)
	}
	msg, err := stream.Recv()
	if err == io.EOF {
		return "", 0, "", errors.New("the coordinator sent no video")
	}
	if err != nil {
		return "", 0, "", c.explain(ctx, err)
	}
	size, want := msg.Size, strings.ToLower(msg.Sha256)
	if size < 0 || len(want) != sha256.Size*2 {
		return "", 0, "", fmt.Errorf("the coordinator announced a video of %d bytes with sha256 %q: refusing it", size, msg.Sha256)
	}
	path = out
	if fi, err := os.Stat(out); err == nil && fi.IsDir() {
		name := filepath.Base(msg.Name)
		if name == "." || name == ".." || name == string(filepath.Separator) {
			return "", 0, "", fmt.Errorf("%s is a folder and the coordinator gave no file name: give -o a file name", out)
		}
		path = filepath.Join(out, name)
	}
	err = atomicfile.Write(path, 0o644, func(tmp *os.File) error {
		h := sha256.New()
		w := io.MultiWriter(tmp, h)
		var n int64
		for {
			if n+int64(len(msg.Data)) > size {
				return fmt.Errorf("the coordinator sent more than the %d bytes it announced; nothing written", size)
			}
			if _, err := w.Write(msg.Data); err != nil {
				return fmt.Errorf("writing %s: %w", tmp.Name(), err)
			}
			n += int64(len(msg.Data))
			var err error
			msg, err = stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return c.explain(ctx, err)
			}
		}
		if n != size {
			return fmt.Errorf("the download ended after %d of %d bytes; nothing written", n, size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("sha256 of the download is %s, the coordinator stored %s; nothing written", got, want)
		}
		return nil
	})
	if err != nil {
		return "", 0, "", err
	}
	return path, size, want, nil
}
