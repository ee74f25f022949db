package ffmpeg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Runner runs ffmpeg and ffprobe.
type Runner struct {
	FFmpeg  string // path or name of ffmpeg; "ffmpeg" when empty
	FFprobe string // path or name of ffprobe; "ffprobe" when empty
	// StopGrace is how long ffmpeg gets to exit after SIGTERM before SIGKILL.
	StopGrace time.Duration
}

func (r Runner) bin(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// Error is a failed ffmpeg or ffprobe run, with the end of what it printed.
type Error struct {
	Cmd    string
	Err    error
	Stderr string
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// Run runs ffmpeg with args (from EncodeArgs or ConcatArgs). progress, when
// not nil, gets the number of frames written so far as ffmpeg reports it.
// Cancelling ctx stops ffmpeg with SIGTERM (it finishes cleanly), then
// SIGKILL after StopGrace.
func (r Runner) Run(ctx context.Context, args []string, progress func(frames int64)) error {
	cmd := r.command(ctx, args)
	errTail := &tail{max: 4096}
	cmd.Stderr = errTail
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return &Error{Cmd: "ffmpeg", Err: err}
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "frame="); ok && progress != nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				progress(n)
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return &Error{Cmd: "ffmpeg", Err: fmt.Errorf("stopped: %w", context.Cause(ctx)), Stderr: errTail.String()}
		}
		return &Error{Cmd: "ffmpeg", Err: err, Stderr: errTail.String()}
	}
	return nil
}

// Probe is what ffprobe says of a video file's first video stream.
type Probe struct {
	Codec    string
	Width    int
	Height   int
	PixFmt   string
	Packets  int64
	TimeBase string
	// Duration is the container's duration in seconds; StreamDuration the
	// video track's, where the container keeps one (0 otherwise).
	Duration, StreamDuration float64
	// PTS are the presentation timestamps in seconds, sorted, when asked for.
	PTS []float64
}

// ProbeVideo counts the packets of path's video stream and reads its
// parameters. With pts it also returns every packet's timestamp.
func (r Runner) ProbeVideo(ctx context.Context, path string, pts bool) (Probe, error) {
	args := []string{"-v", "error", "-select_streams", "v:0", "-count_packets",
		"-show_entries", "stream=codec_name,width,height,pix_fmt,nb_read_packets,time_base,duration:format=duration",
		"-of", "json"}
	if pts {
		args = append(args, "-show_entries", "packet=pts_time")
	}
	var doc struct {
		Streams []struct {
			CodecName    string `json:"codec_name"`
			Width        int    `json:"width"`
			Height       int    `json:"height"`
			PixFmt       string `json:"pix_fmt"`
			NbReadPacket string `json:"nb_read_packets"`
			TimeBase     string `json:"time_base"`
			Duration     string `json:"duration"`
		} `json:"streams"`
		Packets []struct {
			PTSTime string `json:"pts_time"`
		} `json:"packets"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := r.probeJSON(ctx, path, args, &doc); err != nil {
		return Probe{}, err
	}
	if len(doc.Streams) == 0 {
		return Probe{}, fmt.Errorf("ffprobe %s: %w", path, ErrNoVideo)
	}
	s := doc.Streams[0]
	p := Probe{Codec: s.CodecName, Width: s.Width, Height: s.Height, PixFmt: s.PixFmt, TimeBase: s.TimeBase}
	p.Packets, _ = strconv.ParseInt(s.NbReadPacket, 10, 64)
	p.Duration, _ = strconv.ParseFloat(doc.Format.Duration, 64)
	p.StreamDuration, _ = strconv.ParseFloat(s.Duration, 64)
	for _, pk := range doc.Packets {
		if t, err := strconv.ParseFloat(pk.PTSTime, 64); err == nil {
			p.PTS = append(p.PTS, t)
		}
	}
	slicesSortFloat(p.PTS)
	return p, nil
}

// ErrNoVideo means a file has no video stream.
var ErrNoVideo = errors.New("no video stream")

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// probeJSON runs ffprobe with args (which ask for JSON) on path and decodes
// its answer into doc.
func (r Runner) probeJSON(ctx context.Context, path string, args []string, doc any) error {
	cmd := exec.CommandContext(ctx, r.bin(r.FFprobe, "ffprobe"), append(args, path)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return &Error{Cmd: "ffprobe " + path, Err: err, Stderr: lastBytes(stderr.String(), 2048)}
	}
	if err := json.Unmarshal(out, doc); err != nil {
		return fmt.Errorf("ffprobe %s: reading its output: %w", path, err)
	}
	return nil
}

// command is ffmpeg with args, stopped when ctx ends with SIGTERM (it
// finishes cleanly), then SIGKILL after StopGrace.
func (r Runner) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.bin(r.FFmpeg, "ffmpeg"), args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = r.StopGrace
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 5 * time.Second
	}
	return cmd
}

// Pipe runs ffmpeg with args reading stdin from in (pipe:0) and writing
// stdout to out (pipe:1), for small one-shot conversions (a thumbnail). It
// is stopped as Run stops it.
func (r Runner) Pipe(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	cmd := r.command(ctx, args)
	errTail := &tail{max: 4096}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, errTail
	if err := cmd.Run(); err != nil {
		return &Error{Cmd: "ffmpeg", Err: err, Stderr: errTail.String()}
	}
	return nil
}
