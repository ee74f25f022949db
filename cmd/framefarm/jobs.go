package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/framefarm/framefarm/coordinator"
	"github.com/framefarm/framefarm/internal/chunk"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/storage"
	farmpb "github.com/framefarm/framefarm/proto"
)

// jobFlags are the encode and input flags of a job, the same for
// `coordinator --frames` and `submit`.
type jobFlags struct {
	spec      *coordinator.JobSpec
	fastStart *bool
}

func registerJobFlags(f *cmdFlags, spec *coordinator.JobSpec) jobFlags {
	f.StringVar(&spec.Out, "out", "", "also copy the final video to `FILE` or object URL (s3://BUCKET/KEY?endpoint=&region=&use_path_style=true, gs://BUCKET/KEY, azblob://CONTAINER/KEY, file:///PATH; credentials from each cloud's standard environment); its extension picks the container (.mp4 .mkv .mov .webm)")
	f.IntVar(&spec.Sets, "sets", 8, "split the frames into `N` sets of near-equal size")
	f.StringVar(&spec.FPS, "fps", "24", "frame `RATE`: an integer, a decimal or a ratio such as 24000/1001")
	f.StringVar(&spec.Codec, "codec", "libx264", "encoder `NAME`: "+strings.Join(ffmpeg.Codecs(), ", "))
	f.IntVar(&spec.CRF, "crf", -1, "constant rate factor `N` (quality; lower is better); -1 leaves the encoder's default")
	f.StringVar(&spec.Preset, "preset", "", "encoder preset `NAME` (e.g. medium for libx264); empty leaves the encoder's default")
	f.StringVar(&spec.PixFmt, "pix-fmt", "", "pixel format `NAME`; empty means the codec's default: yuv420p, yuv422p10le for prores_ks")
	f.StringVar(&spec.Color, "color", "auto", "colour `SPACE` of the video (matrix, primaries, transfer; converted and tagged): auto (bt709 for frames 720 lines tall and more, bt601 below), bt709, bt601, bt2020")
	f.StringVar(&spec.Range, "range", "", "colour `RANGE`: tv (the default, limited) or pc (full; not ProRes, not ffv1 in .mov); RGB pixel formats are always pc")
	f.StringVar(&spec.EXRTransfer, "exr-transfer", "srgb", "display transfer given to OpenEXR frames (linear light) before the conversion: srgb, bt709 or linear (none, tagged linear)")
	f.StringVar(&spec.Alpha, "alpha", "drop", "the frames' alpha: drop, or keep (prores_ks only, with --pix-fmt yuva444p10le, the default then)")
	f.StringVar(&spec.Pattern, "pattern", "", "use only the frames of this naming `PATTERN` (e.g. shot_####.png) when the folder holds several")
	f.StringVar(&spec.Gaps, "gaps", "refuse", "missing frame numbers: refuse, hold (repeat the previous frame, keeping the timing) or skip (close them up)")
	f.StringVar(&spec.Scale, "scale", "", "scale every frame to `WxH` (for folders of mixed sizes)")
	f.StringVar(&spec.Name, "name", "", "the job's `NAME` in lists (default: the frames folder's name)")
	f.StringVar(&spec.Audio, "audio", "", "mux the audio `FILE` into the final video, cut to the video's length: copied when the container takes its codec, else encoded (AAC in .mp4/.mov, Opus in .mkv/.webm)")
	f.IntVar(&spec.Priority, "priority", 0, "the job's `N` in the queue: sets of higher priorities are rendered first")
	return jobFlags{spec: spec, fastStart: f.Bool("faststart", true, "put an .mp4 or .mov video's index before its media data, so that a browser can play it while it downloads")}
}

// apply sets what the flags say only after parsing.
func (j jobFlags) apply() { j.spec.NoFastStart = !*j.fastStart }

// farmCommand is the shape of the commands that change or list jobs: dial,
// call, print.
func farmCommand(ctx context.Context, e *env, args []string, name, synopsis string, nargs int, about string,
	extra func(f *cmdFlags), call func(ctx context.Context, c *farmClient, args []string) error) error {
	f := newFlags(name, synopsis, about)
	var cc clientCreds
	cc.register(f)
	addr := f.String("coordinator", "127.0.0.1:5555", "the coordinator's `ADDR`")
	if extra != nil {
		extra(f)
	}
	pos, err := f.parseArgs(e, args, nargs)
	if err != nil {
		return err
	}
	c, err := dialFarm(*addr, &cc)
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := call(cctx, c, pos); err != nil {
		return c.explain(ctx, err)
	}
	return nil
}

// uploadFrames sends the files of dir that the coordinator does not have yet
// into an upload named after this machine and the folder, so that running
// it again resumes, and returns the upload's name.
func uploadFrames(ctx context.Context, e *env, c *farmClient, dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return "", fmt.Errorf("--frames %s: %w", dir, err)
	}
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte(host + "\x00" + abs))
	name := "up-" + hex.EncodeToString(sum[:8])
	have, err := c.ListUploaded(ctx, &farmpb.ListUploadedRequest{Upload: name})
	if err != nil {
		return "", err
	}
	there := map[string]*farmpb.UploadedFile{}
	for _, f := range have.Files {
		there[f.Name] = f
	}
	var send []os.FileInfo
	kept := 0
	for _, de := range entries {
		fi, err := os.Stat(filepath.Join(abs, de.Name()))
		if err != nil || !fi.Mode().IsRegular() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		if h := there[de.Name()]; h != nil && h.Size == fi.Size() && h.MtimeNs == fi.ModTime().UnixNano() {
			kept++
			continue
		}
		send = append(send, fi)
	}
	stream, err := c.UploadFrames(ctx)
	if err != nil {
		return "", err
	}
	if err := stream.Send(&farmpb.UploadFramesRequest{Msg: &farmpb.UploadFramesRequest_Upload{Upload: name}}); err != nil {
		return "", uploadErr(stream, err)
	}
	buf := make([]byte, chunk.Size)
	var total int64
	for _, fi := range send {
		if err := sendFile(stream, filepath.Join(abs, fi.Name()), fi, buf); err != nil {
			return "", err
		}
		total += fi.Size()
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return "", err
	}
	fmt.Fprintf(e.stderr, "framefarm submit: uploaded %d files (%s); %d were there already\n", len(send), humanSize(total), kept)
	return name, nil
}

func sendFile(stream farmpb.FarmService_UploadFramesClient, path string, fi os.FileInfo, buf []byte) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	hdr := &farmpb.UploadedFile{Name: fi.Name(), Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	if err := stream.Send(&farmpb.UploadFramesRequest{Msg: &farmpb.UploadFramesRequest_File{File: hdr}}); err != nil {
		return uploadErr(stream, err)
	}
	var sent int64
	for sent < fi.Size() {
		k, err := fh.Read(buf[:min(int64(len(buf)), fi.Size()-sent)])
		if k > 0 {
			sent += int64(k)
			if err := stream.Send(&farmpb.UploadFramesRequest{Msg: &farmpb.UploadFramesRequest_Chunk{Chunk: buf[:k]}}); err != nil {
				return uploadErr(stream, err)
			}
		}
		if err == io.EOF {
			return fmt.Errorf("%s changed while it was sent (%d of %d bytes): run the submit again", path, sent, fi.Size())
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return nil
}

// uploadErr is the coordinator's reason when a send fails because it ended
// the stream.
func uploadErr(stream farmpb.FarmService_UploadFramesClient, err error) error {
	if err == io.EOF {
		_, err = stream.CloseAndRecv()
	}
	return err
}

func runSubmit(ctx context.Context, e *env, args []string) error {
	f := newFlags("submit", "--frames DIR [flags]",
		`Adds a job to the farm's queue and prints its id. --frames is a folder on
the coordinator's machine (or a mount it shares), or a bucket prefix URL
(s3://BUCKET/shots/sh010/?endpoint=...) that the coordinator lists and reads
with the credentials in its own environment. The frames and settings are
checked as the coordinator checks them: a refused job names the file or flag
and what to do, and nothing of it is kept.`)
	var cc clientCreds
	cc.register(f)
	addr := f.String("coordinator", "127.0.0.1:5555", "the coordinator's `ADDR`")
	var spec coordinator.JobSpec
	f.StringVar(&spec.FramesDir, "frames", "", "the folder of numbered frames (`DIR`, on the coordinator's machine, or here with --upload), or a bucket prefix URL; required")
	upload := f.Bool("upload", false, "send the frames from this machine to the coordinator, which keeps them under its --data; run again, it sends only what is missing")
	jf := registerJobFlags(f, &spec)
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.require("frames"); err != nil {
		return err
	}
	jf.apply()
	c, err := dialFarm(*addr, &cc)
	if err != nil {
		return err
	}
	defer c.Close()
	req := &farmpb.SubmitJobRequest{FramesDir: spec.FramesDir}
	if *upload && storage.IsURL(spec.FramesDir) {
		return f.usageErr("--upload sends a folder from this machine; %s is a bucket, which the coordinator reads itself: drop --upload", storage.Redact(spec.FramesDir))
	}
	if *upload {
		if req.Upload, err = uploadFrames(ctx, e, c, spec.FramesDir); err != nil {
			return interrupted(ctx, c.explain(ctx, err))
		}
		req.FramesDir = ""
		if spec.Name == "" {
			abs, _ := filepath.Abs(spec.FramesDir)
			spec.Name = filepath.Base(abs)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	js, err := c.SubmitJob(cctx, &farmpb.SubmitJobRequest{FramesDir: req.FramesDir, Upload: req.Upload, Out: spec.Out, Name: spec.Name,
		Priority: int32(spec.Priority), Sets: uint32(max(spec.Sets, 0)), Codec: spec.Codec, Fps: spec.FPS, Crf: int32(spec.CRF),
		Preset: spec.Preset, PixFmt: spec.PixFmt, NoFaststart: spec.NoFastStart, Pattern: spec.Pattern, Gaps: spec.Gaps, Scale: spec.Scale, Audio: spec.Audio,
		Color: spec.Color, ColorRange: spec.Range, ExrTransfer: spec.EXRTransfer, Alpha: spec.Alpha})
	if err != nil {
		return c.explain(ctx, err)
	}
	fmt.Fprintln(e.stdout, js.JobId)
	return nil
}

func runJobs(ctx context.Context, e *env, args []string) error {
	var asJSON *bool
	return farmCommand(ctx, e, args, "jobs", "[flags]", 0,
		`Lists the farm's jobs in queue order (higher priority first, then the
earlier submitted): id, name, state, priority, frames done with a progress
bar, when submitted and finished, and the final video's size.`,
		func(f *cmdFlags) { asJSON = f.Bool("json", false, "print the list as JSON for scripts") },
		func(ctx context.Context, c *farmClient, _ []string) error {
			resp, err := c.ListJobs(ctx, &farmpb.ListJobsRequest{})
			if err != nil {
				return err
			}
			if *asJSON {
				return writeJobsJSON(e.stdout, resp.Jobs)
			}
			renderJobs(e.stdout, resp.Jobs, time.Now(), isTerminal(e.stdout))
			return nil
		})
}

// jobJSON is a job's line for scripts: plain names and numbers, times in
// RFC 3339 (empty until they happen).
type jobJSON struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
	Priority    int32  `json:"priority"`
	FramesDone  uint32 `json:"frames_done"`
	FramesTotal uint32 `json:"frames_total"`
	SetsDone    uint32 `json:"sets_done"`
	SetsTotal   uint32 `json:"sets_total"`
	Submitted   string `json:"submitted"`
	Finished    string `json:"finished,omitempty"`
	OutputSize  int64  `json:"output_size"`
	FramesDir   string `json:"frames_dir"`
	Out         string `json:"out,omitempty"`
	Codec       string `json:"codec"`
	Container   string `json:"container"`
	Color       string `json:"color"`
}

func writeJobsJSON(w io.Writer, jobs []*farmpb.JobSummary) error {
	out := make([]jobJSON, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, jobJSON{ID: j.JobId, Name: j.Name, State: j.State, Reason: j.Reason, Priority: j.Priority,
			FramesDone: j.FramesDone, FramesTotal: j.FramesTotal, SetsDone: j.SetsDone, SetsTotal: j.SetsTotal,
			Submitted: rfc3339(j.SubmittedUnixMs), Finished: rfc3339(j.FinishedUnixMs), OutputSize: j.FinalSize,
			FramesDir: j.FramesDir, Out: j.OutPath, Codec: j.Codec, Container: j.Container, Color: j.Color})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func rfc3339(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// renderJobs lists the jobs, with progress bars in a terminal (bars) and a
// plain percentage in a pipe.
func renderJobs(w io.Writer, jobs []*farmpb.JobSummary, now time.Time, bars bool) {
	if len(jobs) == 0 {
		fmt.Fprintln(w, "no jobs yet: framefarm submit --frames DIR adds one")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tPRI\tPROGRESS\tFRAMES\tCOLOR\tSUBMITTED\tFINISHED\tOUTPUT")
	for _, j := range jobs {
		finished := "-"
		if j.FinishedUnixMs != 0 {
			finished = ago(now, j.FinishedUnixMs)
		}
		progress := percent(j.FramesDone, j.FramesTotal)
		if bars {
			progress = bar(j.FramesDone, j.FramesTotal, 20)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", j.JobId, j.Name, j.State, j.Priority,
			progress, j.FramesDone, j.FramesTotal, j.Color, ago(now, j.SubmittedUnixMs), finished, humanSize(j.FinalSize))
	}
	tw.Flush()
	for _, j := range jobs {
		if j.Reason != "" && j.State != "cancelled" {
			fmt.Fprintf(w, "%s %s: %s\n", j.JobId, j.State, j.Reason)
		}
	}
}

// bar draws done/total in width cells, with the percentage.
func bar(done, total uint32, width int) string {
	if total == 0 {
		return "[" + strings.Repeat(".", width) + "]"
	}
	n := int(min(uint64(done), uint64(total)) * uint64(width) / uint64(total))
	return fmt.Sprintf("[%s%s] %s", strings.Repeat("#", n), strings.Repeat(".", width-n), percent(done, total))
}

// percent is done/total as a whole percentage, for lines without bars.
func percent(done, total uint32) string {
	if total == 0 {
		return "  0%"
	}
	return fmt.Sprintf("%3d%%", uint64(done)*100/uint64(total))
}

// printSummary is what a command that changed a job says.
func printSummary(w io.Writer, what string, j *farmpb.JobSummary) {
	fmt.Fprintf(w, "job %s (%s) %s: %s, priority %d, %d/%d sets done\n", j.JobId, j.Name, what, j.State, j.Priority, j.SetsDone, j.SetsTotal)
}

func runCancel(ctx context.Context, e *env, args []string) error {
	return farmCommand(ctx, e, args, "cancel", "JOB [flags]", 1,
		`Stops a job: no more of its sets are handed out, and the nodes rendering
them stop at their next heartbeat and ask for other work. Its parts stay
until it is reset or deleted.`, nil,
		func(ctx context.Context, c *farmClient, pos []string) error {
			js, err := c.CancelJob(ctx, &farmpb.JobRequest{JobId: pos[0]})
			if err == nil {
				printSummary(e.stdout, "cancelled", js)
			}
			return err
		})
}

func runReset(ctx context.Context, e *env, args []string) error {
	var all *bool
	return farmCommand(ctx, e, args, "reset", "JOB [flags]", 1,
		`Puts a failed or cancelled job back in the queue: every set not rendered
goes back with its failures forgotten, and nodes excluded from the job may
take its sets again. --all renders every set again (also of a done job).`,
		func(f *cmdFlags) { all = f.Bool("all", false, "render every set again, even those already rendered") },
		func(ctx context.Context, c *farmClient, pos []string) error {
			js, err := c.ResetJob(ctx, &farmpb.ResetJobRequest{JobId: pos[0], All: *all})
			if err == nil {
				printSummary(e.stdout, "reset", js)
			}
			return err
		})
}

func runPriority(ctx context.Context, e *env, args []string) error {
	return farmCommand(ctx, e, args, "priority", "JOB N [flags]", 2,
		`Sets a job's priority: sets of higher priorities are handed out first;
among equal priorities, the earlier submitted job goes first.`, nil,
		func(ctx context.Context, c *farmClient, pos []string) error {
			p, err := strconv.ParseInt(pos[1], 10, 32)
			if err != nil {
				return fmt.Errorf("priority %q: give a whole number, such as 10 or -5", pos[1])
			}
			js, err := c.SetPriority(ctx, &farmpb.SetPriorityRequest{JobId: pos[0], Priority: int32(p)})
			if err == nil {
				printSummary(e.stdout, "reprioritised", js)
			}
			return err
		})
}

func runDelete(ctx context.Context, e *env, args []string) error {
	return farmCommand(ctx, e, args, "delete", "JOB [flags]", 1,
		`Removes a job that is done, failed or cancelled: its parts, its final video
in the data folder (not the copy at --out) and its state.`, nil,
		func(ctx context.Context, c *farmClient, pos []string) error {
			if _, err := c.DeleteJob(ctx, &farmpb.JobRequest{JobId: pos[0]}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "job %s deleted\n", pos[0])
			return nil
		})
}
