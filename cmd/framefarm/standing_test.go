package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

var farmReady = regexp.MustCompile(`farm listening on (\S+)`)

// TestStandingFarm runs one coordinator, started empty, with two nodes and
// three jobs of different codecs and priorities: the high-priority job is
// rendered first, a job that failed on a bad frame is reset once the frame
// is fixed and finishes, a job cancelled mid-run stops and is reset, and
// every video is the one a plain ffmpeg run makes.
func TestStandingFarm(t *testing.T) {
	needFFmpeg(t)
	root := t.TempDir()
	low, bad, high := filepath.Join(root, "low"), filepath.Join(root, "bad"), filepath.Join(root, "high")
	genFrames(t, low, 48, 1, "64x48")
	genFrames(t, bad, 24, 1, "64x48")
	genFrames(t, high, 24, 1, "64x48")
	// A frame whose header and end are fine and whose image data is not:
	// the scan takes it, ffmpeg cannot decode it.
	broken := filepath.Join(bad, "f_0010.png")
	good, err := os.ReadFile(broken)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := append([]byte(nil), good...)
	for i := len(corrupt) / 2; i < len(corrupt)/2+40; i++ {
		corrupt[i] = 0xff
	}
	if err := os.WriteFile(broken, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}

	data := filepath.Join(root, "data")
	coord, m := start(t, "coordinator", farmReady, "coordinator", "--data", data, "--listen", "127.0.0.1:0",
		"--heartbeat-timeout", "5s", "--poll-window", "2s")
	f := &farm{coord: coord, addr: m[1], data: data}
	w := watch(t, f.addr)
	submit := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(runCmd(t, binary, append([]string{"submit", "--coordinator", f.addr}, args...)...))
	}
	// Submitted lowest priority first: the queue, not the order, decides.
	lowID := submit("--frames", low, "--codec", "ffv1", "--out", filepath.Join(root, "low.mkv"), "--sets", "12", "--name", "low")
	badID := submit("--frames", bad, "--codec", "ffv1", "--out", filepath.Join(root, "bad.mkv"), "--sets", "3", "--priority", "5")
	// Sent from this machine: the coordinator renders its own copy.
	highID := submit("--frames", high, "--upload", "--codec", "libx264", "--out", filepath.Join(root, "high.mp4"), "--sets", "4", "--priority", "10", "--name", "high")
	for _, id := range []string{lowID, badID, highID} {
		if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(id) {
			t.Fatalf("submit printed %q, want a job id", id)
		}
	}
	// A refused job keeps nothing and says why.
	out, err := exec.Command(binary, "submit", "--coordinator", f.addr, "--frames", filepath.Join(root, "nothing-here")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "nothing-here") {
		t.Errorf("submitting a missing folder: %v\n%s", err, out)
	}
	// status without --job names the jobs to choose from.
	out, err = exec.Command(binary, "status", "--coordinator", f.addr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), lowID) || !strings.Contains(string(out), "--job") {
		t.Errorf("status without --job on a farm of 3 jobs: %v\n%s", err, out)
	}

	for _, name := range []string{"n1", "n2"} {
		addNode(t, f, name, nodeOpts{noOnce: true, slow: 400 * time.Millisecond})
	}
	of := func(job, kind string) func(*farmpb.Event) bool {
		return func(e *farmpb.Event) bool { return e.JobId == job && e.Kind == kind }
	}
	w.waitFor(t, "the bad job failing", 3*time.Minute, of(badID, "job_failed"))
	w.waitFor(t, "a part of the low job", 3*time.Minute, of(lowID, "part_accepted"))
	runCmd(t, binary, "cancel", lowID, "--coordinator", f.addr)
	cancelled := w.waitFor(t, "the low job cancelled", time.Minute, of(lowID, "job_cancelled"))

	// The frame is fixed; the job goes back to the queue and finishes.
	if err := os.WriteFile(broken, good, 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, binary, "reset", badID, "--coordinator", f.addr)
	w.waitFor(t, "the bad job done after its reset", 3*time.Minute, of(badID, "job_done"))
	runCmd(t, binary, "reset", lowID, "--coordinator", f.addr)
	w.waitFor(t, "the low job done after its reset", 3*time.Minute, of(lowID, "job_done"))
	w.waitFor(t, "the high job done", time.Minute, of(highID, "job_done"))
	evs := w.events()

	// Every set of the high job was granted before any other job's set, and
	// the middle one's before the low one's.
	first, last := map[string]int{}, map[string]int{}
	for i, e := range evs {
		if i > 0 && e.FarmSeq <= evs[i-1].FarmSeq {
			t.Fatalf("farm events out of order: %v then %v", evs[i-1], e)
		}
		if e.Kind != "set_granted" {
			continue
		}
		if _, ok := first[e.JobId]; !ok {
			first[e.JobId] = i
		}
		last[e.JobId] = i
	}
	if last[highID] > first[badID] || last[highID] > first[lowID] || first[badID] > first[lowID] {
		t.Errorf("grants out of priority order (high %d-%d, middle from %d, low from %d):\n%s",
			first[highID], last[highID], first[badID], first[lowID], formatEvents(evs))
	}
	// Cancelled: none of its parts taken until its reset, and the nodes went
	// on to the other job's sets.
	resetAt, movedOn := -1, false
	for _, e := range evs {
		switch {
		case e.FarmSeq <= cancelled.FarmSeq:
		case e.JobId == lowID && e.Kind == "job_reset":
			resetAt = int(e.FarmSeq)
		case resetAt < 0 && e.JobId == lowID && e.Kind == "part_accepted":
			t.Errorf("a part of the cancelled job was taken: %v", e)
		case resetAt < 0 && e.JobId == badID && e.Kind == "set_granted":
			movedOn = true
		}
	}
	if !movedOn {
		t.Errorf("no node took other work after the cancel:\n%s", formatEvents(evs))
	}

	// The videos: FFV1 frame by frame against one ffmpeg run, x264 by its
	// timing.
	for _, j := range []struct{ id, frames string }{{lowID, low}, {badID, bad}} {
		got := filepath.Join(root, j.id+"-fetched.mkv")
		runCmd(t, binary, "fetch", "--coordinator", f.addr, "--job", j.id, "-o", got)
		checkExact(t, got, reference(t, j.frames, 1))
	}
	hv := filepath.Join(root, "high-fetched.mp4")
	runCmd(t, binary, "fetch", "--coordinator", f.addr, "--job", highID, "-o", hv)
	p := probe(t, hv)
	if len(p.pts) != 24 || p.codec != "h264" {
		t.Fatalf("high job: %d frames of %s, want 24 of h264", len(p.pts), p.codec)
	}
	for i, pts := range p.pts {
		if math.Abs(pts-float64(i)/24) > 1e-6 {
			t.Fatalf("high job: frame %d at %.6fs, want %.6fs", i, pts, float64(i)/24)
		}
	}

	var list []jobJSON
	if err := json.Unmarshal([]byte(runCmd(t, binary, "jobs", "--json", "--coordinator", f.addr)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].ID != highID || list[1].ID != badID || list[2].ID != lowID {
		t.Fatalf("jobs --json: %+v, want high, middle, low", list)
	}
	sizes := map[string]string{lowID: filepath.Join(root, "low.mkv"), badID: filepath.Join(root, "bad.mkv"), highID: filepath.Join(root, "high.mp4")}
	for _, j := range list {
		fi, err := os.Stat(sizes[j.ID])
		if err != nil {
			t.Fatalf("job %s: its --out copy: %v", j.ID, err)
		}
		if j.State != "done" || j.FramesDone != j.FramesTotal || j.OutputSize != fi.Size() || j.Finished == "" || j.SetsDone != j.SetsTotal {
			t.Errorf("jobs --json: %+v (the final is %d bytes)", j, fi.Size())
		}
	}
	if list[0].Name != "high" || list[1].Name != "bad" || list[0].Priority != 10 || list[0].Codec != "libx264" {
		t.Errorf("jobs --json names and settings: %+v", list)
	}

	// A finished job is deleted with its files.
	runCmd(t, binary, "delete", lowID, "--coordinator", f.addr)
	if _, err := os.Stat(filepath.Join(data, "jobs", lowID)); !os.IsNotExist(err) {
		t.Errorf("the deleted job's folder: %v", err)
	}
	if err := json.Unmarshal([]byte(runCmd(t, binary, "jobs", "--json", "--coordinator", f.addr)), &list); err != nil || len(list) != 2 {
		t.Errorf("jobs after a delete: %+v %v", list, err)
	}
}

// An upload run again sends only the files the coordinator does not hold
// whole, and the job renders the coordinator's copy.
func TestUploadSendsOnlyWhatIsMissing(t *testing.T) {
	needFFmpeg(t)
	root := t.TempDir()
	frames := filepath.Join(root, "shot")
	genFrames(t, frames, 12, 1, "32x24")
	data := filepath.Join(root, "data")
	coord, m := start(t, "coordinator", farmReady, "coordinator", "--data", data, "--listen", "127.0.0.1:0")
	addr := m[1]
	submit := func() (string, string) { return submitUpload(t, addr, frames, "--codec", "ffv1", "--sets", "2") }
	first, said := submit()
	if !strings.Contains(said, "uploaded 12 files") || !strings.Contains(said, "0 were there already") {
		t.Errorf("first upload said %q", said)
	}
	ups, _ := filepath.Glob(filepath.Join(data, "uploads", "*"))
	if len(ups) != 1 {
		t.Fatalf("uploads: %v", ups)
	}
	// As an interrupted upload leaves it: one frame missing, one changed
	// here since, and a half-sent file under its temp name.
	if err := os.Remove(filepath.Join(ups[0], "f_0003.png")); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(frames, "f_0007.png"), later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ups[0], ".tmp-upload-123"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	second, said := submit()
	if !strings.Contains(said, "uploaded 2 files") || !strings.Contains(said, "10 were there already") {
		t.Errorf("second upload said %q", said)
	}
	if first == second {
		t.Errorf("the second submit returned the first job %s", first)
	}
	if _, err := os.Stat(filepath.Join(ups[0], ".tmp-upload-123")); err == nil {
		t.Error("the half-sent file is still there")
	}
	// The coordinator's copy is the folder, byte for byte and time for time.
	for i := 1; i <= 12; i++ {
		name := fmt.Sprintf("f_%04d.png", i)
		a, err := os.Stat(filepath.Join(frames, name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.Stat(filepath.Join(ups[0], name))
		if err != nil || sha(t, filepath.Join(frames, name)) != sha(t, filepath.Join(ups[0], name)) || !a.ModTime().Equal(b.ModTime()) {
			t.Errorf("%s: uploaded copy differs (%v)", name, err)
		}
	}
	// A bad upload name is refused, naming what is allowed.
	conn := dial(t, addr)
	_, err := farmpb.NewFarmServiceClient(conn).ListUploaded(t.Context(), &farmpb.ListUploadedRequest{Upload: "../etc"})
	if err == nil || !strings.Contains(err.Error(), "upload name") {
		t.Errorf("upload name ../etc: %v", err)
	}
	_ = coord
}

// submitUpload runs submit --upload of frames with args, and returns the
// job's ID and what submit said on stderr.
func submitUpload(t *testing.T, addr, frames string, args ...string) (id, said string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"submit", "--coordinator", addr, "--frames", frames, "--upload"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("submit --upload: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), stderr.String()
}

// A second coordinator on a data folder in use exits at once, naming the
// folder and the process holding it, and touches nothing; once the first
// is gone (even by kill -9) the folder is free.
func TestDataFolderIsLocked(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	first, m := start(t, "coordinator", farmReady, "coordinator", "--data", data, "--listen", "127.0.0.1:0")
	planted := filepath.Join(data, "jobs", "x", "parts", ".tmp-set-00000-t1-1")
	if err := os.MkdirAll(filepath.Dir(planted), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(planted, []byte("the first one's upload in progress"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "coordinator", "--data", data, "--listen", "127.0.0.1:0")
	done := make(chan struct{})
	var out []byte
	go func() { out, _ = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the second coordinator did not exit")
	}
	want := fmt.Sprintf("in use by another coordinator (pid %d)", first.cmd.Process.Pid)
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), data) || !strings.Contains(string(out), want) {
		t.Errorf("second coordinator: exit %d, said %q; want 1 and %q naming %s", cmd.ProcessState.ExitCode(), out, want, data)
	}
	if _, err := os.Stat(planted); err != nil {
		t.Errorf("the second coordinator touched the first one's files: %v", err)
	}
	runCmd(t, binary, "jobs", "--coordinator", m[1])
	_ = first.cmd.Process.Kill()
	_ = first.wait(t, 30*time.Second)
	start(t, "coordinator-2", farmReady, "coordinator", "--data", data, "--listen", "127.0.0.1:0")
}

// Frames swapped after submit are refused when they are read, naming the
// file and what it is now, instead of being sent: a link to a file outside
// the folder given the frame's size and time (whose bytes would reach a
// node), and a FIFO (whose open would hang the set for ever). Once the
// frames are back, a reset finishes the jobs frame-exact.
func TestSwappedFramesAreRefused(t *testing.T) {
	needFFmpeg(t)
	root := t.TempDir()
	linked, piped := filepath.Join(root, "linked"), filepath.Join(root, "piped")
	genFrames(t, linked, 12, 1, "64x48")
	genFrames(t, piped, 12, 1, "64x48")
	coord, m := start(t, "coordinator", farmReady, "coordinator", "--data", filepath.Join(root, "data"), "--listen", "127.0.0.1:0",
		"--heartbeat-timeout", "5s", "--poll-window", "2s")
	f := &farm{coord: coord, addr: m[1]}
	w := watch(t, f.addr)
	submit := func(dir string) string {
		return strings.TrimSpace(runCmd(t, binary, "submit", "--coordinator", f.addr, "--frames", dir, "--codec", "ffv1", "--sets", "3"))
	}
	linkedID, pipedID := submit(linked), submit(piped)

	// The swaps, after the scan.
	frame5 := filepath.Join(linked, "f_0005.png")
	good5, err := os.ReadFile(frame5)
	if err != nil {
		t.Fatal(err)
	}
	fi5, _ := os.Stat(frame5)
	secret := filepath.Join(root, "secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("S"), len(good5)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(secret, fi5.ModTime(), fi5.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(frame5); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, frame5); err != nil {
		t.Fatal(err)
	}
	frame9 := filepath.Join(piped, "f_0009.png")
	good9, err := os.ReadFile(frame9)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(frame9); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(frame9, 0o644); err != nil {
		t.Fatal(err)
	}

	addNode(t, f, "n", nodeOpts{noOnce: true})
	of := func(job, kind string) func(*farmpb.Event) bool {
		return func(e *farmpb.Event) bool { return e.JobId == job && e.Kind == kind }
	}
	if e := w.waitFor(t, "the linked job failing", 2*time.Minute, of(linkedID, "job_failed")); !strings.Contains(e.Detail, "f_0005.png") || !strings.Contains(e.Detail, "another file") {
		t.Errorf("linked job failed with %q, want f_0005.png named as another file", e.Detail)
	}
	if e := w.waitFor(t, "the piped job failing", 2*time.Minute, of(pipedID, "job_failed")); !strings.Contains(e.Detail, "f_0009.png") || !strings.Contains(e.Detail, "FIFO") {
		t.Errorf("piped job failed with %q, want f_0009.png named as a FIFO", e.Detail)
	}

	// Put back, reset, finished.
	for _, fix := range []struct {
		path    string
		data    []byte
		id, dir string
	}{{frame5, good5, linkedID, linked}, {frame9, good9, pipedID, piped}} {
		if err := os.Remove(fix.path); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fix.path, fix.data, 0o644); err != nil {
			t.Fatal(err)
		}
		runCmd(t, binary, "reset", fix.id, "--coordinator", f.addr)
		w.waitFor(t, "job "+fix.id+" done after its frame came back", 2*time.Minute, of(fix.id, "job_done"))
		out := filepath.Join(root, fix.id+".mkv")
		runCmd(t, binary, "fetch", "--coordinator", f.addr, "--job", fix.id, "-o", out)
		checkExact(t, out, reference(t, fix.dir, 1))
	}
}
