package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/atomicfile"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/mp4"
	"github.com/framefarm/framefarm/internal/storage"
)

// joiner joins the parts of every job that reaches the joining state, one
// job at a time, outside the lock: grants of other jobs go on meanwhile.
func (c *Coordinator) joiner(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.joinReq:
		}
		for {
			c.mu.Lock()
			var jr *jobRun
			for _, q := range c.queue {
				if c.joinWant[q.rec.ID] {
					delete(c.joinWant, q.rec.ID)
					if q.job.State == job.JobJoining {
						jr = q
						break
					}
				}
			}
			c.mu.Unlock()
			if jr == nil {
				break
			}
			c.joinJob(ctx, jr)
			if ctx.Err() != nil {
				// Stopped mid-join: the next start joins again from the parts.
				return
			}
		}
	}
}

func (c *Coordinator) joinJob(ctx context.Context, jr *jobRun) {
	start := time.Now()
	log := c.log.With("job", jr.rec.ID)
	name, size, sum, how, err := c.join(ctx, jr)
	if ctx.Err() != nil {
		return
	}
	detail := ""
	var copies []finalCopy
	if err == nil {
		if err = c.store.setFinal(ctx, jr.rec.ID, name, size, sum); err == nil {
			c.mu.Lock()
			jr.rec.FinalName, jr.rec.FinalSize, jr.rec.FinalSHA = name, size, sum
			out := jr.rec.OutPath
			c.mu.Unlock()
			detail = fmt.Sprintf("%s, %d bytes, sha256 %s, joined in %s %s", name, size, sum, time.Since(start).Round(time.Millisecond), how)
			switch {
			case storage.IsURL(out):
				if fc, ok := c.outTarget(ctx, jr, out); ok {
					copies = append(copies, fc)
					detail += ", being copied to " + fc.where
				}
			case out != "":
				if cerr := copyAtomic(filepath.Join(jr.dir, name), out); cerr != nil {
					log.Error("copying the final video to --out failed; it stays in the data folder", "err", cerr)
				} else {
					detail += ", copied to " + out
				}
			}
			if c.parts != nil {
				fc := c.storageTarget(jr, name)
				copies = append(copies, fc)
				detail += ", being stored at " + fc.where
			}
		}
	}
	done := false
	if cerr := c.change(ctx, func(x changes) error {
		x.add(jr, nil, jr.job.Finish(err, detail, c.cfg.Now()))
		done = jr.job.State == job.JobDone
		for _, fc := range copies {
			if done { // else a job cancelled while it joined: nothing to copy
				*fc.status(jr) = "under way"
			}
		}
		return nil
	}); cerr != nil {
		log.Error("recording the join failed", "err", cerr)
		return
	}
	if done {
		c.startCopies(ctx, jr, filepath.Join(jr.dir, name), copies)
	}
	c.copies.Go(func() { c.sweepBucket(ctx, jr.rec.ID, "parts") })
	if err == nil && !c.cfg.KeepParts {
		for _, s := range c.snapshotSets(jr) {
			_ = os.Remove(filepath.Join(jr.partDir, s.Part.Name))
		}
	}
}

func (c *Coordinator) snapshotSets(jr *jobRun) []job.Set {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]job.Set, len(jr.job.Sets))
	for i, s := range jr.job.Sets {
		out[i] = *s
	}
	return out
}

// join concatenates the parts in set order with stream copy, verifies the
// result and moves it into place.
func (c *Coordinator) join(ctx context.Context, jr *jobRun) (name string, size int64, sum, how string, err error) {
	st := jr.rec.Settings
	rate := st.rate()
	var parts []ffmpeg.ConcatPart
	var total int64
	for _, s := range c.snapshotSets(jr) {
		parts = append(parts, ffmpeg.ConcatPart{Path: filepath.Join(jr.partDir, s.Part.Name), Frames: int64(s.Count)})
		total += int64(s.Count)
	}
	name = "final." + st.FinalExt
	tmp := filepath.Join(jr.dir, ".tmp-"+name)
	defer os.Remove(tmp)
	how, err = c.concat(ctx, jr, parts, tmp)
	if err != nil {
		return "", 0, "", "", fmt.Errorf("joining the parts: %w", err)
	}
	// Verifying the video, hashing it and waiting for it to reach the disk
	// are independent: together they cost the longest of the three rather
	// than their sum (for 149 MB of FFV1: ffprobe ~190 ms, or a few ms for
	// MP4/MOV and Matroska read in Go; SHA-256 ~120 ms; fsync ~250 ms).
	// The file is renamed only once all three have succeeded.
	var verr, serr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if verr = verifyFinal(ctx, c.cfg.FFmpeg, tmp, rate, total); verr != nil {
			verr = fmt.Errorf("%w (joined %s)", verr, how)
		}
	})
	wg.Go(func() { serr = syncFile(tmp) })
	size, sum, herr := hashFile(tmp)
	wg.Wait()
	if err := errors.Join(verr, serr, herr); err != nil {
		return "", 0, "", "", err
	}
	if st.Audio != "" {
		var with string
		if size, sum, with, err = c.addAudio(ctx, jr, tmp, total); err != nil {
			return "", 0, "", "", err
		}
		how += ", " + with
	}
	if err := os.Rename(tmp, filepath.Join(jr.dir, name)); err != nil {
		return "", 0, "", "", err
	}
	return name, size, sum, how, atomicfile.SyncDir(jr.dir)
}

// concat joins the parts into out, exactly: in Go (mp4.Concat), by laying
// the parts' samples end to end and rewriting their tables, in ffmpeg's own
// time scale for the rate and with the index first unless NoFastStart. A
// final in another container than the parts' (.mkv, .webm, x264 in .mov)
// is then remuxed from that exact file by ffmpeg with stream copy, which
// rounds every timestamp once, as one plain ffmpeg run does. The concat
// demuxer is the last resort, for parts mp4.Concat cannot join: it adds up
// part durations in whole microseconds, so at NTSC rates with many parts
// its timing drifts, and the final check refuses it. It returns how the
// parts were joined.
func (c *Coordinator) concat(ctx context.Context, jr *jobRun, parts []ffmpeg.ConcatPart, out string) (string, error) {
	st := jr.rec.Settings
	paths := make([]string, len(parts))
	for i, p := range parts {
		paths[i] = p.Path
	}
	joined := out
	if st.FinalExt != st.PartExt {
		joined = out + ".joined." + st.PartExt
		defer os.Remove(joined)
	}
	opts := mp4.JoinOptions{Timescale: uint32(st.rate().TrackTimescale()), FastStart: !st.NoFastStart && joined == out}
	err := writeFile(joined, func(f *os.File) error { return mp4.Concat(f, paths, opts) })
	if errors.Is(err, mp4.ErrCannotJoin) {
		c.log.Warn("joining with ffmpeg's concat demuxer instead", "job", jr.rec.ID, "reason", err)
		return "with ffmpeg's concat demuxer", c.concatDemuxer(ctx, jr, parts, out)
	}
	if err != nil || joined == out {
		return "in Go", err
	}
	tr, err := mp4.ReadFile(joined)
	if err != nil {
		return "", fmt.Errorf("reading the joined parts: %w", err)
	}
	rng := st.Range
	if rng == "" {
		rng = ffmpeg.ColorRange(st.PixFmt)
	}
	args := ffmpeg.RemuxArgs(joined, out, ffmpeg.Remux{ColorRange: rng, Encoder: tr.Compressor, FastStart: !st.NoFastStart})
	return "in Go, remuxed by ffmpeg", c.cfg.FFmpeg.Run(ctx, args, nil)
}

func (c *Coordinator) concatDemuxer(ctx context.Context, jr *jobRun, parts []ffmpeg.ConcatPart, out string) error {
	list, err := os.CreateTemp(jr.dir, ".tmp-concat-*.txt")
	if err != nil {
		return err
	}
	defer os.Remove(list.Name())
	err = ffmpeg.WriteConcatList(list, jr.rec.Settings.rate(), parts)
	if cerr := list.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return c.cfg.FFmpeg.Run(ctx, ffmpeg.ConcatArgs(list.Name(), out), nil)
}

// writeFile creates path and writes it with fn.
func writeFile(path string, fn func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// verifyFinal checks the frame count and that every timestamp sits on the
// n/fps grid, within the container's precision. An MP4 or MOV file is read
// in Go, exactly, in ticks of its track's time scale; anything else with
// ffprobe.
func verifyFinal(ctx context.Context, r ffmpeg.Runner, path string, rate ffmpeg.Rate, frames int64) error {
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".mp4" || ext == ".mov" {
		return verifyMP4(path, rate, frames)
	}
	p, err := probeFinal(ctx, r, path)
	if err != nil {
		return fmt.Errorf("reading the joined video: %w", err)
	}
	if p.Packets != frames || int64(len(p.PTS)) != frames {
		return fmt.Errorf("the joined video has %d frames, the job has %d", p.Packets, frames)
	}
	tol := timeBaseTolerance(p.TimeBase)
	step := float64(rate.Den) / float64(rate.Num)
	for i, t := range p.PTS {
		if want := float64(i) * step; math.Abs(t-want) > tol {
			return fmt.Errorf("the joined video's frame %d is at %.6fs, expected %.6fs", i, t, want)
		}
	}
	// Where the track has its own duration it is exact; a container-level
	// duration (Matroska, the MP4 movie header) is kept in milliseconds.
	got, within := p.StreamDuration, tol
	if got == 0 {
		got, within = p.Duration, 0.001+1e-6
	}
	if want := float64(frames) * step; math.Abs(got-want) > within {
		return fmt.Errorf("the joined video lasts %.6fs, expected %.6fs", got, want)
	}
	return nil
}

// verifyMP4 is verifyFinal for MP4 and MOV files, read in Go, in ticks of
// the track's time scale: every frame presented within half a tick of n/fps
// (exactly, for a join in Go, whose time scale is a multiple of the fps
// numerator), and the track as long as the frames.
func verifyMP4(path string, rate ffmpeg.Rate, frames int64) error {
	t, err := mp4.ReadTiming(path)
	if err != nil {
		return fmt.Errorf("reading the joined video: %w", err)
	}
	times, scale := t.Times, t.Timescale
	if int64(len(times)) != frames {
		return fmt.Errorf("the joined video has %d frames, the job has %d", len(times), frames)
	}
	// Frame i is due at i*Den/Num s, i*scale*Den/Num ticks: compared in
	// units of 1/Num tick, so that no rounding hides an error.
	off := func(ticks, i int64) int64 {
		d := ticks*rate.Num - i*int64(scale)*rate.Den
		return max(d, -d)
	}
	seconds := func(ticks int64) string { return fmt.Sprintf("%.6fs", float64(ticks)/float64(scale)) }
	for i, pts := range times {
		if 2*off(pts, int64(i)) > rate.Num {
			return fmt.Errorf("the joined video's frame %d is at %s, expected %s", i, seconds(pts), rate.Seconds(int64(i)))
		}
	}
	if 2*off(t.Duration, frames) > rate.Num {
		return fmt.Errorf("the joined video lasts %s, expected %s", seconds(t.Duration), rate.Seconds(frames))
	}
	return nil
}

// probeFinal reads the joined video's frame timestamps and duration. A
// Matroska or WebM final is read in Go from its block headers (~2 ms for
// 600 frames): ffprobe's start alone took 100-190 ms here. Any layout the
// Go reader does not know goes to ffprobe.
func probeFinal(ctx context.Context, r ffmpeg.Runner, path string) (ffmpeg.Probe, error) {
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".mkv" || ext == ".webm" {
		p, err := ffmpeg.ReadMatroskaTiming(path)
		if !errors.Is(err, ffmpeg.ErrMatroskaLayout) {
			return p, err
		}
	}
	return r.ProbeVideo(ctx, path, true)
}

// timeBaseTolerance is half a tick of the stream's time base (plus float
// noise): a timestamp rounded once to that time base is within it.
func timeBaseTolerance(tb string) float64 {
	var num, den float64
	if _, err := fmt.Sscanf(tb, "%g/%g", &num, &den); err != nil || den == 0 {
		return 0.001
	}
	return num/den/2 + 1e-6
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing the joined video to disk: %w", err)
	}
	return nil
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("hashing the joined video: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// copyAtomic copies src to dst through a temp file in dst's folder, so dst
// is either the old file or the complete new one.
func copyAtomic(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(dst, 0o644, func(out *os.File) error {
		_, err := io.Copy(out, in)
		return err
	})
}
