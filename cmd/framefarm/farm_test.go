package main

// End-to-end tests: the real binary, real ffmpeg, real gRPC over loopback.
// Every farm video is held against one plain ffmpeg run over the same frames.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "framefarm-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "framefarm")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building framefarm: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needFFmpeg(t *testing.T) {
	t.Helper()
	for _, b := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s is required (run scripts/install-deps.sh): %v", b, err)
		}
	}
}

// genFrames writes n PNG frames named prefix%0<digits>d.png from start.
func genFrames(t *testing.T, dir string, n, start int, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s="+size+":r=24", "-frames:v", strconv.Itoa(n),
		"-start_number", strconv.Itoa(start), filepath.Join(dir, "f_%04d.png"))
}

func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// proc is a running framefarm process whose output is kept for failures.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the binary; the first stdout line matching ready is returned.
func start(t *testing.T, name string, ready *regexp.Regexp, args ...string) (*proc, []string) {
	t.Helper()
	return startCmd(t, name, nil, ready, args...)
}

// startCmd is start with prep, when not nil, called on the command before
// it starts (to set its environment, or run it in a network namespace).
func startCmd(t *testing.T, name string, prep func(*exec.Cmd), ready *regexp.Regexp, args ...string) (*proc, []string) {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(binary, args...), out: &syncBuffer{}, done: make(chan struct{})}
	if prep != nil {
		prep(p.cmd)
	}
	p.cmd.Stderr = p.out
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			fmt.Fprintln(p.out, sc.Text())
			if ready == nil {
				continue
			}
			if m := ready.FindStringSubmatch(sc.Text()); m != nil && !sent {
				lines <- m
				sent = true
			}
		}
		if !sent {
			close(lines)
		}
	}()
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.out.String())
		}
	})
	if ready == nil {
		return p, nil
	}
	select {
	case m, ok := <-lines:
		if !ok {
			<-p.done
			t.Fatalf("%s exited before it was ready: %v\n%s", name, p.err, p.out.String())
		}
		return p, m
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready after 60s\n%s", name, p.out.String())
	}
	return nil, nil
}

func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s still running after %s\n%s", p.name, d, p.out.String())
		return nil
	}
}

var (
	coordReady = regexp.MustCompile(`job (\S+) listening on (\S+)`)
	ambReady   = regexp.MustCompile(`listening on (\S+), forwarding`)
)

type farm struct {
	coord *proc
	addr  string
	job   string
	nodes []*proc
	// data and coordArgs are the coordinator's data folder and command
	// line, to start it again on the same state.
	data      string
	coordArgs []string
}

// startFarm runs a coordinator on frames and nodes (each with its own
// ambassador, as on separate machines), and returns once they all run.
// Every second node streams its frames as a node on another machine must;
// the others read them from the coordinator's folder, as on its host or
// over a shared mount, so a farm of two or more mixes both in one job.
func startFarm(t *testing.T, frames string, nodes int, coordArgs ...string) *farm {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	args := append([]string{"coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0",
		"--heartbeat-timeout", "5s", "--poll-window", "2s"}, coordArgs...)
	coord, m := start(t, "coordinator", coordReady, args...)
	f := &farm{coord: coord, job: m[1], addr: m[2], data: data, coordArgs: args}
	for i := 0; i < nodes; i++ {
		_, am := start(t, fmt.Sprintf("ambassador-%d", i), ambReady, "ambassador", "--coordinator", f.addr, "--listen", "127.0.0.1:0")
		frames := map[bool]string{false: "auto", true: "stream"}[i%2 == 1]
		n, _ := start(t, fmt.Sprintf("node-%d", i), nil, "node", "--ambassador", am[1], "--name", fmt.Sprintf("node-%d", i), "--once", "--frames-from", frames)
		f.nodes = append(f.nodes, n)
	}
	return f
}

// fetch waits for the video and downloads it.
func (f *farm) fetch(t *testing.T, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "fetch", "--coordinator", f.addr, "-o", out, "--wait")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fetch: %v\n%s", err, b)
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// framemd5 returns, per frame, "pts,duration,size,md5" of the decoded video.
func framemd5(t *testing.T, path string) []string {
	t.Helper()
	return md5Lines(t, 2, "-i", path, "-map", "0:v")
}

// md5Lines runs ffmpeg's framemd5 muxer on an input and a map (args), and
// returns each line's fields from skip on (1: dts, pts, duration, size,
// md5; 2: from pts).
func md5Lines(t *testing.T, skip int, args ...string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(runCmd(t, "ffmpeg", append(append([]string{"-v", "error"}, args...), "-f", "framemd5", "-")...), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Split(l, ",")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		lines = append(lines, strings.Join(f[skip:], ","))
	}
	return lines
}

type probed struct {
	pts            []float64
	timeBase       float64
	duration       float64 // the container's
	streamDuration float64 // the track's, where the container has one
	codec          string
}

func probe(t *testing.T, path string) probed {
	t.Helper()
	var p probed
	out := runCmd(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path)
	for _, l := range strings.Fields(out) {
		v, err := strconv.ParseFloat(strings.Trim(l, ","), 64)
		if err != nil {
			t.Fatalf("pts %q: %v", l, err)
		}
		p.pts = append(p.pts, v)
	}
	sortFloats(p.pts)
	meta := strings.Split(strings.TrimSpace(runCmd(t, "ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,time_base,duration:format=duration", "-of", "default=nw=1", path)), "\n")
	durations := 0
	for _, kv := range meta {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "codec_name":
			p.codec = v
		case "time_base":
			var n, d float64
			fmt.Sscanf(v, "%g/%g", &n, &d)
			p.timeBase = n / d
		case "duration":
			// The stream's duration (N/A in Matroska) comes first, then the format's.
			d, _ := strconv.ParseFloat(v, 64)
			if durations++; durations == 1 {
				p.streamDuration = d
			} else {
				p.duration = d
			}
		}
	}
	return p
}

func sortFloats(f []float64) {
	for i := 1; i < len(f); i++ {
		for j := i; j > 0 && f[j] < f[j-1]; j-- {
			f[j], f[j-1] = f[j-1], f[j]
		}
	}
}

// psnr compares the video frame by frame (by index, not time) with the
// source frames.
func psnr(t *testing.T, video, framesPattern string, startNumber int) float64 {
	t.Helper()
	return psnrVia(t, video, framesPattern, startNumber, "", "format=yuv420p")
}

// psnrVia is psnr with each side through its own filters first (video's
// and the frames'; "" for none).
func psnrVia(t *testing.T, video, framesPattern string, startNumber int, videoVF, framesVF string) float64 {
	t.Helper()
	join := func(vf string) string {
		if vf == "" {
			return ""
		}
		return "," + vf
	}
	cmd := exec.Command("ffmpeg", "-v", "info", "-nostats", "-i", video, "-start_number", strconv.Itoa(startNumber), "-i", framesPattern,
		"-lavfi", "[0:v]settb=1/24,setpts=N"+join(videoVF)+"[a];[1:v]settb=1/24,setpts=N"+join(framesVF)+"[b];[a][b]psnr", "-f", "null", "-")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psnr: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`average:([0-9.]+|inf)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no PSNR in:\n%s", out)
	}
	if string(m[1]) == "inf" {
		return math.Inf(1)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestLosslessMatchesFFmpeg: FFV1 into Matroska (joined in Go, remuxed by
// ffmpeg) and into MOV (joined in Go by rewriting the parts' tables), each
// frame by frame equal to one ffmpeg run over the folder.
func TestLosslessMatchesFFmpeg(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 243, 1001, "320x240")
	for _, ext := range []string{"mkv", "mov"} {
		t.Run(ext, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			out := filepath.Join(tmp, "x."+ext)
			f := startFarm(t, frames, 3, "--codec", "ffv1", "--out", out)
			fetched := filepath.Join(tmp, "fetched."+ext)
			f.fetch(t, fetched)

			ref := filepath.Join(tmp, "ref."+ext)
			_, colour := plainColour(t, filepath.Join(frames, "f_1001.png"), "ffv1", "yuv420p", ext)
			runCmd(t, "ffmpeg", append(append([]string{"-v", "error", "-framerate", "24", "-start_number", "1001", "-i", filepath.Join(frames, "f_%04d.png"),
				"-c:v", "ffv1", "-level", "3", "-pix_fmt", "yuv420p"}, colour...), ref)...)
			got, want := framemd5(t, out), framemd5(t, ref)
			if len(got) != 243 || len(want) != 243 {
				t.Fatalf("frames: farm %d, ffmpeg %d, want 243", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("frame %d differs: farm %q, ffmpeg %q", i, got[i], want[i])
				}
			}
			if a, b := sha(t, out), sha(t, fetched); a != b {
				t.Fatalf("fetched video sha256 %s differs from --out %s", b, a)
			}
			raw := statusJSON(t, f.addr)
			var st struct {
				State       string `json:"state"`
				FinalSha256 string `json:"finalSha256"`
			}
			if err := json.Unmarshal([]byte(raw), &st); err != nil {
				t.Fatalf("status --json: %v\n%s", err, raw)
			}
			if st.State != "done" || st.FinalSha256 != sha(t, fetched) {
				t.Fatalf("status after the job: state %q sha256 %q, want done and the fetched file's:\n%s", st.State, st.FinalSha256, raw)
			}
		})
	}
}

func statusJSON(t *testing.T, addr string) string {
	t.Helper()
	return runCmd(t, binary, "status", "--coordinator", addr, "--json")
}

// TestLossyExactTiming: x264 in MP4 and VP9 in WebM at 24000/1001, 2
// nodes, 100 frames in 3 sets (not a divisor, more sets than nodes).
func TestLossyExactTiming(t *testing.T) {
	needFFmpeg(t)
	for _, tc := range []struct {
		codec, ext, codecName string
		extra                 []string
		minPSNR               float64
	}{
		{"libx264", "mp4", "h264", []string{"--preset", "veryfast"}, 35},
		{"libvpx-vp9", "webm", "vp9", []string{"--preset", "realtime", "--crf", "32"}, 30},
	} {
		t.Run(tc.codec, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			frames := filepath.Join(tmp, "frames")
			genFrames(t, frames, 100, 1, "320x240")
			out := filepath.Join(tmp, "out."+tc.ext)
			args := append([]string{"--codec", tc.codec, "--fps", "24000/1001", "--sets", "3", "--out", out}, tc.extra...)
			f := startFarm(t, frames, 2, args...)
			fetched := filepath.Join(tmp, "fetched."+tc.ext)
			f.fetch(t, fetched)
			if a, b := sha(t, out), sha(t, fetched); a != b {
				t.Fatalf("fetched sha256 %s differs from --out %s", b, a)
			}
			p := probe(t, fetched)
			if p.codec != tc.codecName {
				t.Fatalf("codec %s, want %s", p.codec, tc.codecName)
			}
			if len(p.pts) != 100 {
				t.Fatalf("%d frames, want 100", len(p.pts))
			}
			step := 1001.0 / 24000
			tol := p.timeBase/2 + 1e-6
			for i, ts := range p.pts {
				if math.Abs(ts-float64(i)*step) > tol {
					t.Fatalf("frame %d at %.6fs, want %.6fs (±%.6f)", i, ts, float64(i)*step, tol)
				}
			}
			want := 100 * step
			if p.streamDuration != 0 && math.Abs(p.streamDuration-want) > tol {
				t.Fatalf("track duration %.6fs, want %.6fs", p.streamDuration, want)
			}
			// The container-level duration is kept in milliseconds.
			if math.Abs(p.duration-want) > 0.001+1e-6 {
				t.Fatalf("duration %.6fs, want %.6fs", p.duration, want)
			}
			db := psnr(t, fetched, filepath.Join(frames, "f_%04d.png"), 1)
			t.Logf("%s: PSNR %.2f dB against the source frames", tc.codec, db)
			if db < tc.minPSNR {
				t.Fatalf("PSNR %.2f dB below %.0f", db, tc.minPSNR)
			}
		})
	}
}
