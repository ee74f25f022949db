package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	farmpb "github.com/framefarm/framefarm/proto"
)

// role runs one subcommand in the background, as a process would.
type role struct {
	stdout, stderr *syncBuffer
	lines          chan string
	code           chan int
}

func startRole(ctx context.Context, args ...string) *role {
	r := &role{stdout: &syncBuffer{}, stderr: &syncBuffer{}, lines: make(chan string, 100), code: make(chan int, 1)}
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
	}()
	go func() {
		code := run(ctx, args, &env{stdout: io.MultiWriter(r.stdout, pw), stderr: r.stderr})
		pw.Close()
		r.code <- code
	}()
	return r
}

// firstLine waits for the role's first line on stdout.
func (r *role) firstLine(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-r.lines:
		if !ok {
			t.Fatalf("ended without output; stderr:\n%s", r.stderr)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("no output after 30s; stderr:\n%s", r.stderr)
	}
	return ""
}

func (r *role) wait(t *testing.T, what string, want int) {
	t.Helper()
	select {
	case code := <-r.code:
		if code != want {
			t.Errorf("%s exited %d, want %d\nstdout:\n%s\nstderr:\n%s", what, code, want, r.stdout, r.stderr)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s still running after 2m; stderr:\n%s", what, r.stderr)
	}
}

func runInProc(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &env{stdout: &o, stderr: &e})
	return code, o.String(), e.String()
}

func writeFrames(t *testing.T, dir string, first, n, w, h int) {
	t.Helper()
	for i := range n {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 9), uint8(i * 20), 255})
			}
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("shot_%04d.png", first+i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFarm runs every role of the binary in one process over loopback
// gRPC, with real ffmpeg: what a user types, end to end.
func TestFarmInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	needFFmpeg(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	if err := os.Mkdir(frames, 0o755); err != nil {
		t.Fatal(err)
	}
	// 12 frames at 24 fps last exactly 0.5 s, a whole number of the MKV's
	// millisecond ticks. 5 sets do not divide 12.
	writeFrames(t, frames, 1001, 12, 32, 24)
	final := filepath.Join(tmp, "final.mkv")

	coord := startRole(ctx, "coordinator", "--frames", frames, "--out", final, "--data", filepath.Join(tmp, "data"),
		"--listen", "127.0.0.1:0", "--sets", "5", "--codec", "ffv1", "--poll-window", "1s", "--log-level", "warn")
	m := regexp.MustCompile(`^framefarm coordinator: job (\S+) listening on (\S+)$`).FindStringSubmatch(coord.firstLine(t))
	if m == nil {
		t.Fatalf("unexpected first line; stdout:\n%s", coord.stdout)
	}
	job, caddr := m[1], m[2]

	// Before any node: the job is queued, and fetch without --wait says so.
	code, out, errOut := runInProc("status", "--coordinator", caddr, "--json")
	if code != exitOK {
		t.Fatalf("status --json exited %d: %s", code, errOut)
	}
	var st farmpb.JobStatus
	if err := protojson.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json is not a JobStatus: %v\n%s", err, out)
	}
	if st.JobId != job || st.State != "queued" || st.TotalFrames != 12 || len(st.Sets) != 5 {
		t.Fatalf("status before nodes: %v", &st)
	}
	code, _, errOut = runInProc("fetch", "--coordinator", caddr, "-o", filepath.Join(tmp, "early.mkv"))
	if code != exitError || !strings.Contains(errOut, "is queued") || !strings.Contains(errOut, "--wait") {
		t.Errorf("fetch before done: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runInProc("status", "--coordinator", caddr, "--job", "nosuchjob")
	if code != exitError || !strings.Contains(errOut, "nosuchjob") || strings.Contains(errOut, "rpc error") {
		t.Errorf("status of an unknown job: exit %d, stderr %q", code, errOut)
	}

	watch := startRole(ctx, "status", "--coordinator", caddr, "--watch", "--json")
	fetched := filepath.Join(tmp, "fetched.mkv")
	fetch := startRole(ctx, "fetch", "--coordinator", caddr, "--job", job, "-o", fetched, "--wait")

	amb := startRole(ctx, "ambassador", "--coordinator", caddr, "--listen", "127.0.0.1:0", "--log-level", "warn")
	m = regexp.MustCompile(`^framefarm ambassador: listening on (\S+), forwarding to (\S+)$`).FindStringSubmatch(amb.firstLine(t))
	if m == nil || m[2] != caddr {
		t.Fatalf("unexpected ambassador line; stdout:\n%s", amb.stdout)
	}
	aaddr := m[1]
	n1 := startRole(ctx, "node", "--ambassador", aaddr, "--name", "n1", "--once", "--log-level", "warn")
	n2 := startRole(ctx, "node", "--ambassador", aaddr, "--name", "n2", "--once", "--log-level", "warn", "--work", filepath.Join(tmp, "work2"), "--frames-from", "stream")

	fetch.wait(t, "fetch --wait", exitOK)
	wantLine := fmt.Sprintf("wrote %s (", fetched)
	if !strings.HasPrefix(fetch.stdout.String(), wantLine) {
		t.Errorf("fetch printed %q, want it to start with %q", fetch.stdout, wantLine)
	}
	if got, want := sha(t, fetched), sha(t, final); got != want {
		t.Errorf("fetched sha256 %s, coordinator's copy %s", got, want)
	}
	if !strings.Contains(fetch.stdout.String(), sha(t, fetched)) {
		t.Errorf("fetch output %q lacks the file's sha256", fetch.stdout)
	}

	watch.wait(t, "status --watch --json", exitOK)
	docs := strings.Split(strings.TrimSpace(watch.stdout.String()), "\n")
	var last farmpb.JobStatus
	for _, d := range docs {
		if err := protojson.Unmarshal([]byte(d), &last); err != nil {
			t.Fatalf("watch line is not one JobStatus: %v\n%q", err, d)
		}
	}
	if last.State != "done" || last.FramesDone != 12 {
		t.Errorf("watch ended on state %q with %d frames done", last.State, last.FramesDone)
	}

	n1.wait(t, "node n1", exitOK)
	n2.wait(t, "node n2", exitOK)
	if _, err := os.Stat(filepath.Join(tmp, "work2")); err != nil {
		t.Errorf("--work folder: %v", err)
	}

	code, out, errOut = runInProc("status", "--coordinator", caddr)
	if code != exitOK {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	for _, want := range []string{"job " + job + "  done", "12/12 frames (100.0%)", "sets 5/5 completed",
		"final video: " + final, "sha256 " + sha(t, final), "n1", "n2"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	// A second fetch into a folder keeps the coordinator's file name.
	dir := filepath.Join(tmp, "into")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runInProc("fetch", "--coordinator", caddr, "-o", dir)
	if code != exitOK {
		t.Fatalf("fetch into a folder exited %d: %s", code, errOut)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || strings.HasPrefix(entries[0].Name(), ".") {
		t.Errorf("fetch into a folder left %v (stdout %q)", entries, out)
	}

	// Ctrl-C is a clean shutdown for the servers.
	cancel()
	coord.wait(t, "coordinator", exitOK)
	amb.wait(t, "ambassador", exitOK)
}
