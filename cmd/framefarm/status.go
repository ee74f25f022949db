package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/framefarm/framefarm/internal/text"
	farmpb "github.com/framefarm/framefarm/proto"
)

// Job states as the coordinator reports them.
const (
	jobDone      = "done"
	jobFailed    = "failed"
	jobCancelled = "cancelled"
)

func runStatus(ctx context.Context, e *env, args []string) error {
	f := newFlags("status", "[flags]",
		`Shows a job's progress: its state, each set's state (A available,
B assigned, C completed, F failed), frame range, node, frames done, size
and encode time, and each node's load and circuit breaker.`)
	var cc clientCreds
	cc.register(f)
	addr := f.String("coordinator", "127.0.0.1:5555", "the coordinator's `ADDR`")
	job := f.String("job", "", "job `ID` (default: the farm's only job; framefarm jobs lists them)")
	watch := f.Bool("watch", false, "redraw every second until the job is done or failed (Ctrl-C stops)")
	asJSON := f.Bool("json", false, "print the status as JSON for scripts (one document per line with --watch)")
	if err := f.parse(e, args); err != nil {
		return err
	}
	c, err := dialFarm(*addr, &cc)
	if err != nil {
		return err
	}
	defer c.Close()

	// A terminal gets bars and a screen redrawn in place; a pipe, plain
	// lines.
	term := isTerminal(e.stdout)
	redraw := *watch && !*asJSON && term
	jobID := *job
	first := true
	for {
		st, err := c.getJob(ctx, jobID)
		var le *linkError
		switch {
		case ctx.Err() != nil:
			return nil // Ctrl-C is how a watch ends
		case err != nil && *watch && errors.As(err, &le):
			// A coordinator restarting on the same --data resumes the job:
			// keep watching through the gap.
			fmt.Fprintf(e.stderr, "framefarm status: %v; trying again\n", err)
		case err != nil:
			return err
		default:
			// Stay on the job first seen, so a watch never switches jobs
			// silently if another coordinator takes the address.
			jobID = st.JobId
			if err := showStatus(e.stdout, st, *asJSON, *watch, term, redraw, first); err != nil {
				return err
			}
			first = false
			if !*watch || st.State == jobDone || st.State == jobFailed || st.State == jobCancelled {
				return nil
			}
		}
		if !pause(ctx, time.Second) {
			return nil
		}
	}
}

func showStatus(w io.Writer, st *farmpb.JobStatus, asJSON, watch, term, redraw, first bool) error {
	var buf bytes.Buffer
	switch {
	case asJSON && watch:
		// One document per line, so a script can read the stream line by line.
		b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(st)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	case asJSON:
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(st)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	default:
		if redraw {
			buf.WriteString("\x1b[H\x1b[2J")
		} else if !first {
			buf.WriteByte('\n')
		}
		renderStatus(&buf, st, time.Now(), term)
	}
	// One write per refresh, so the terminal never shows half a screen.
	_, err := w.Write(buf.Bytes())
	return err
}

// renderStatus writes the human view of a job: a header, one row per set,
// one row per node and, once done, where the video is; with bars, progress
// bars for the job and each set being rendered.
func renderStatus(w io.Writer, st *farmpb.JobStatus, now time.Time, bars bool) {
	completed := 0
	for _, s := range st.Sets {
		if s.State == "C" {
			completed++
		}
	}
	fmt.Fprintf(w, "job %s  %s  %d frames in %s\n", st.JobId, st.State, st.TotalFrames, st.FramesDir)
	if st.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", st.Reason)
	}
	if s := st.Settings; s != nil {
		fmt.Fprintf(w, "encode: %s\n", describeSettings(s))
	}
	pct := 0.0
	if st.TotalFrames > 0 {
		pct = 100 * float64(st.FramesDone) / float64(st.TotalFrames)
	}
	drawn := ""
	if bars {
		drawn = bar(st.FramesDone, st.TotalFrames, 30) + "  "
	}
	fmt.Fprintf(w, "progress: %s%d/%d frames (%.1f%%), sets %d/%d completed\n",
		drawn, st.FramesDone, st.TotalFrames, pct, completed, len(st.Sets))

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SET\tSTATE\tFRAMES\tCOUNT\tNODE\tDONE\tSIZE\tENCODE\tFAILS\tLAST-ERROR")
	for _, s := range st.Sets {
		done := strconv.FormatUint(uint64(s.FramesDone), 10)
		if bars && s.State == "B" {
			done = bar(s.FramesDone, s.FrameCount, 10) + " " + done
		}
		fmt.Fprintf(tw, "%d\t%s\t%d-%d\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n",
			s.Index, s.State, s.FirstFrame, s.LastFrame, s.FrameCount, orDash(s.Node), done,
			humanSize(s.PartSize), encodeTime(s.EncodeMs), s.Failures, orDash(text.Truncate(oneLine(s.LastError), 60)))
	}
	tw.Flush()

	fmt.Fprintln(w)
	if len(st.Nodes) == 0 {
		fmt.Fprintln(w, "no nodes have asked for work yet")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tLAST-SEEN\tCPU\tFREE-CORES\tSETS\tFAILS\tEXCLUDED\tBREAKER")
		for _, n := range st.Nodes {
			fmt.Fprintf(tw, "%s\t%s\t%.0f%%\t%.1f\t%d\t%d\t%s\t%s\n",
				n.Name, ago(now, n.LastSeenUnixMs), 100*n.CpuLoad, n.FreeCores, n.SetsDone, n.Failures,
				yesNo(n.Excluded), describeBreaker(n.Breaker))
		}
		tw.Flush()
		for _, n := range st.Nodes {
			if n.Problem != "" {
				fmt.Fprintf(w, "node %s asks for no work: %s\n", n.Name, oneLine(n.Problem))
			}
		}
		if more := int(st.NodesTotal) - len(st.Nodes); more > 0 {
			fmt.Fprintf(w, "and %d more nodes: framefarm nodes lists them all\n", more)
		}
	}
	if st.OwnFault != "" {
		fmt.Fprintf(w, "\ncoordinator's own fault, %s (charged to no node): %s\n", ago(now, st.OwnFaultUnixMs), oneLine(st.OwnFault))
	}

	if st.State == jobDone {
		where := st.OutPath
		if where == "" {
			where = fmt.Sprintf("fetch it with: framefarm fetch --coordinator ADDR --job %s -o FILE", st.JobId)
		}
		fmt.Fprintf(w, "\nfinal video: %s, %s, sha256 %s\n", where, humanSize(st.FinalSize), st.FinalSha256)
		if st.OutCopy != "" {
			fmt.Fprintf(w, "copy to --out: %s\n", oneLine(st.OutCopy))
		}
		if st.FinalStored != "" {
			fmt.Fprintf(w, "copy in --storage: %s\n", oneLine(st.FinalStored))
		}
	}
}

func describeSettings(s *farmpb.EncodeSettings) string {
	parts := []string{s.Codec}
	if s.Crf >= 0 {
		parts = append(parts, fmt.Sprintf("crf %d", s.Crf))
	}
	if s.Preset != "" {
		parts = append(parts, "preset "+s.Preset)
	}
	out := strings.Join(parts, " ")
	if s.PixFmt != "" {
		out += ", " + s.PixFmt
	}
	fps := fmt.Sprint(s.FpsNum)
	if s.FpsDen > 1 {
		fps = fmt.Sprintf("%d/%d", s.FpsNum, s.FpsDen)
	}
	out += fmt.Sprintf(", %s fps, %dx%d", fps, s.Width, s.Height)
	if s.PadEven {
		out += " (padded to even)"
	}
	return out + ", colour " + colourSettings(s)
}

// colourSettings names the job's colour as the flags that give it.
func colourSettings(s *farmpb.EncodeSettings) string {
	if s.Color == "" {
		return "untagged (made before colour settings)"
	}
	out := s.Color + " " + s.ColorRange
	if s.FrameExt == "exr" {
		out += ", exr-transfer " + s.ExrTransfer
	}
	if s.Alpha == "keep" {
		out += ", alpha kept"
	}
	return out
}

func describeBreaker(b *farmpb.BreakerInfo) string {
	if b == nil || b.State == "" {
		return "-"
	}
	out := b.State
	if b.ConsecutiveFailures > 0 {
		out += fmt.Sprintf(" (%d consecutive failures)", b.ConsecutiveFailures)
	}
	if b.Opens > 0 && b.LastOpenedUnixMs > 0 {
		out += fmt.Sprintf(", opened %d× (last %s)", b.Opens, time.UnixMilli(b.LastOpenedUnixMs).Format("15:04:05"))
	}
	return out
}

// humanSize is a size for the tables: "-" for none.
func humanSize(n int64) string {
	if n <= 0 {
		return "-"
	}
	return text.Size(n)
}

func encodeTime(ms uint64) string {
	if ms == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fs", float64(ms)/1000)
}

func ago(now time.Time, unixMs int64) string {
	if unixMs == 0 {
		return "never"
	}
	d := now.Sub(time.UnixMilli(unixMs))
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		return fmt.Sprintf("%dh%02dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// oneLine keeps a multi-line error (ffmpeg's stderr tail) from breaking the
// table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
