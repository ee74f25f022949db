//go:build storage

package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/framefarm/framefarm/internal/storage"
	"github.com/framefarm/framefarm/internal/storage/storagetest"
	farmpb "github.com/framefarm/framefarm/proto"
)

// putFrames uploads a folder's frames to the bucket under prefix.
func putFrames(t *testing.T, s3 *storagetest.S3, dir, bucket, prefix string) {
	t.Helper()
	putFramesAt(t, dir, func(name string) string { return s3.URL(bucket, prefix+name) })
}

// putFramesAt uploads a folder's frames, each to the object URL at(name).
func putFramesAt(t *testing.T, dir string, at func(name string) string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		loc, err := storage.Parse(at(e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := storage.PutFile(context.Background(), filepath.Join(dir, e.Name()), loc); err != nil {
			t.Fatal(err)
		}
	}
}

// framesInBucket starts an S3 server with the buckets frames and parts,
// puts n 320x240 frames in frames under prefix, and returns the server and
// the frames' reference (one ffmpeg run over them).
func framesInBucket(t *testing.T, n int, prefix string) (*storagetest.S3, []string) {
	t.Helper()
	s3 := storagetest.StartS3(t, "frames", "parts")
	local := filepath.Join(t.TempDir(), "frames")
	genFrames(t, local, n, 1, "320x240")
	want := reference(t, local, 1)
	putFrames(t, s3, local, "frames", prefix)
	return s3, want
}

// bucketFarm is a standing farm whose nodes put parts in the --storage
// bucket parts/farm/ of s3, with the coordinator's metrics on metrics.
func bucketFarm(t *testing.T, s3 *storagetest.S3, extra ...string) (f *farm, metrics string) {
	t.Helper()
	return storageFarm(t, s3.URL("parts", "farm/"), extra...)
}

// storageFarm is a standing farm with --storage storageURL, and the
// coordinator's metrics on metrics.
func storageFarm(t *testing.T, storageURL string, extra ...string) (f *farm, metrics string) {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	metrics = freeAddr(t)
	args := append([]string{"coordinator", "--data", data, "--listen", "127.0.0.1:0", "--heartbeat-timeout", "5s", "--poll-window", "2s",
		"--storage", storageURL, "--metrics", metrics}, extra...)
	coord, m := start(t, "coordinator", farmReady, args...)
	return &farm{coord: coord, addr: m[1], data: data, coordArgs: args}, metrics
}

// nothingThroughCoordinator: the coordinator's counters say that no frame
// byte was streamed and no part byte uploaded to it.
func nothingThroughCoordinator(t *testing.T, metrics, what string) {
	t.Helper()
	fams := scrape(t, metrics, "")
	if got := counter(fams, "framefarm_frame_stream_bytes_total"); got != 0 {
		t.Errorf("%s%v frame bytes went through the coordinator, want 0", what, got)
	}
	if got := counter(fams, "framefarm_part_upload_bytes_total"); got != 0 {
		t.Errorf("%s%v part bytes were uploaded to the coordinator, want 0", what, got)
	}
}

func counter(fams map[string]*dto.MetricFamily, name string) float64 {
	f := fams[name]
	if f == nil || len(f.Metric) == 0 || f.Metric[0].Counter == nil {
		return -1
	}
	return f.Metric[0].Counter.GetValue()
}

// bucketKeys lists what is left under a prefix of the server's bucket.
func bucketKeys(t *testing.T, s3 *storagetest.S3, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	root := filepath.Join(s3.Root, bucket)
	_ = filepath.Walk(filepath.Join(root, prefix), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			keys = append(keys, rel)
		}
		return nil
	})
	return keys
}

var fromBucket = regexp.MustCompile(`part uploaded.*frames=bucket`)

// TestStorageFramesDirect: a job whose frames are in a bucket, rendered by
// two nodes that read the frames from the bucket and put their parts into
// it through pre-signed URLs: frame-exact, and not one frame byte nor part
// byte went through the coordinator; the parts are gone from the bucket
// once joined, and the final is kept there, until the job is deleted.
func TestStorageFramesDirect(t *testing.T) {
	needFFmpeg(t)
	s3, want := framesInBucket(t, 48, "shots/sh010/")
	f, metrics := bucketFarm(t, s3)
	w := watch(t, f.addr)
	var nodes []*farmNode
	for _, name := range []string{"a", "b"} {
		nodes = append(nodes, addNode(t, f, name, nodeOpts{framesFrom: "auto", noOnce: true}))
	}
	id := f.submit(t, "--frames", s3.URL("frames", "shots/sh010/"), "--sets", "6", "--codec", "ffv1")
	out := f.fetchExact(t, id, want)

	nothingThroughCoordinator(t, metrics, "")
	for _, n := range nodes {
		t.Logf("node %s: %d sets from the bucket", n.name, len(logLines(n.node, 0, fromBucket)))
	}
	if n := len(logLines(nodes[0].node, 0, fromBucket)) + len(logLines(nodes[1].node, 0, fromBucket)); n != 6 {
		t.Errorf("%d sets read their frames from the bucket, want 6", n)
	}
	// The parts are swept from the bucket once the job is joined.
	noPartsLeft(t, s3)
	st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", id)
	if !strings.Contains(st, "s3://frames/shots/sh010/") {
		t.Errorf("status does not name the bucket:\n%s", st)
	}
	if strings.Contains(f.coord.out.String(), storagetest.Secret) || strings.Contains(st, storagetest.Secret) {
		t.Fatal("the S3 secret key appears in the coordinator's log or status")
	}

	// The final is kept in the bucket beside the parts' folder, the same
	// bytes as fetched, read back through the S3 server.
	key := "farm/finals/" + id + "/final.mkv"
	storedFinal(t, w, id, "s3://parts/"+key, s3.URL("parts", key), out)
	st = runCmd(t, binary, "status", "--coordinator", f.addr, "--job", id)
	if !strings.Contains(st, "copy in --storage: stored at s3://parts/"+key) {
		t.Errorf("status does not say where the final is stored:\n%s", st)
	}
	runCmd(t, binary, "delete", id, "--coordinator", f.addr)
	emptied(t, s3, "parts", "farm/finals", 10*time.Second, "the deleted job's final stays in the bucket")
}

// storedFinal waits for job id's final to be stored in the --storage
// bucket at shown (as its event names it), and checks that the object at
// objectURL holds the bytes of fetched.
func storedFinal(t *testing.T, w *watcher, id, shown, objectURL, fetched string) {
	t.Helper()
	e := w.waitFor(t, "the final stored in the bucket", time.Minute, func(e *farmpb.Event) bool {
		return e.JobId == id && (e.Kind == "final_stored" || e.Kind == "final_not_stored")
	})
	if e.Kind != "final_stored" || !strings.Contains(e.Detail, shown) {
		t.Fatalf("the final was not stored at %s: %s %s", shown, e.Kind, e.Detail)
	}
	if got, want := bucketSHA(t, objectURL), sha(t, fetched); got != want {
		t.Errorf("the final in the bucket has sha256 %s, the fetched one %s", got, want)
	}
}

// bucketSHA is the SHA-256 of an object, read through its storage URL.
func bucketSHA(t *testing.T, raw string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "object")
	getObject(t, raw, p)
	return sha(t, p)
}

// TestStorageFramesChanged: a frame replaced in the bucket after submit
// fails the job, naming the frame.
func TestStorageFramesChanged(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "frames", "parts")
	local := filepath.Join(t.TempDir(), "frames")
	genFrames(t, local, 16, 1, "320x240")
	putFrames(t, s3, local, "frames", "sh/")
	f, _ := bucketFarm(t, s3)
	w := watch(t, f.addr)
	id := f.submit(t, "--frames", s3.URL("frames", "sh/"), "--sets", "2", "--codec", "ffv1")
	// Replaced before any node comes: another image under the same key.
	other := filepath.Join(t.TempDir(), "other")
	genFrames(t, other, 1, 12, "320x240")
	runCmd(t, "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=red:s=320x240", "-frames:v", "1", filepath.Join(other, "f_0012.png"))
	loc, _ := storage.Parse(s3.URL("frames", "sh/f_0012.png"))
	if err := storage.PutFile(context.Background(), filepath.Join(other, "f_0012.png"), loc); err != nil {
		t.Fatal(err)
	}
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	e := w.waitFor(t, "the job to fail", 2*time.Minute, kind("job_failed", -1, ""))
	if !strings.Contains(e.Detail, "f_0012.png") {
		t.Errorf("the job failed without naming the frame: %s", e.Detail)
	}
	st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", id)
	t.Logf("failed: %s", e.Detail)
	if !strings.Contains(st, "failed") {
		t.Errorf("status does not show the job failed:\n%s", st)
	}
}

// TestStorageFramesBucketGone: the frames' bucket is deleted after submit.
// The job fails saying so, not that a frame changed; reset is refused
// with the same words; with the bucket made again, reset renders the job
// frame-exact.
func TestStorageFramesBucketGone(t *testing.T) {
	needFFmpeg(t)
	s3, want := framesInBucket(t, 16, "sh/")
	f, _ := bucketFarm(t, s3)
	w := watch(t, f.addr)
	id := f.submit(t, "--frames", s3.URL("frames", "sh/"), "--sets", "2", "--codec", "ffv1")
	keep := filepath.Join(t.TempDir(), "kept")
	if err := os.Rename(filepath.Join(s3.Root, "frames"), keep); err != nil {
		t.Fatal(err)
	}
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	e := w.waitFor(t, "the job to fail", 2*time.Minute, kind("job_failed", -1, ""))
	t.Logf("failed: %s", e.Detail)
	for _, says := range []string{"s3://frames/sh/", "no longer exists", "make the bucket again"} {
		if !strings.Contains(e.Detail, says) {
			t.Errorf("the job failed without saying %q: %s", says, e.Detail)
		}
	}
	if strings.Contains(e.Detail, "changed") {
		t.Errorf("the job failed calling the deleted bucket a changed frame: %s", e.Detail)
	}
	out, err := exec.Command(binary, "reset", id, "--coordinator", f.addr).CombinedOutput()
	t.Logf("reset: %s", out)
	if err == nil || !strings.Contains(string(out), "no longer exists") {
		t.Errorf("reset with the bucket gone: %v, said %s; want refused, saying the bucket no longer exists", err, out)
	}
	if err := os.Rename(keep, filepath.Join(s3.Root, "frames")); err != nil {
		t.Fatal(err)
	}
	runCmd(t, binary, "reset", id, "--coordinator", f.addr)
	f.fetchExact(t, id, want)
}

// TestStorageFramesRefused: bad bucket input is refused at submit with an
// error naming the URL or frame and what to do; nothing is kept.
func TestStorageFramesRefused(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "frames", "parts")
	local := filepath.Join(t.TempDir(), "frames")
	genFrames(t, local, 6, 1, "64x48")
	os.Remove(filepath.Join(local, "f_0004.png"))
	putFrames(t, s3, local, "frames", "gappy/")
	f, _ := bucketFarm(t, s3)
	for _, c := range []struct{ frames, says string }{
		{s3.URL("frames", "empty/"), "no numbered images"},
		{s3.URL("frames", "gappy/"), "1 frame missing"},
		{s3.URL("nosuchbucket", "x/"), "nosuchbucket"},
		{"s3://AKIAX:" + storagetest.Secret + "@frames/x/", "credentials"},
	} {
		said := f.refused(t, "--frames", c.frames)
		if !strings.Contains(said, c.says) {
			t.Errorf("--frames %s: submit said %q, want %q", c.frames, said, c.says)
		}
		if strings.Contains(said, storagetest.Secret) {
			t.Errorf("--frames %s: the refusal shows the secret: %s", c.frames, said)
		}
	}
	resp := listJobs(t, f.addr)
	if len(resp) != 0 {
		t.Errorf("refused jobs were kept: %v", resp)
	}
}

// TestStorageFramesCutOff: of two nodes, one in a network namespace cannot
// reach the bucket (its loopback is its own): it streams its sets through
// the coordinator, the other reads the bucket; the video is frame-exact.
func TestStorageFramesCutOff(t *testing.T) {
	needFFmpeg(t)
	s3, want := framesInBucket(t, 48, "sh/")
	ns, hostIP, _, _ := netns(t, 7)
	f, metrics := bucketFarm(t, s3)
	link := startProxy(t, hostIP+":0", f.addr)
	cut := addNode(t, f, "cut", nodeOpts{framesFrom: "auto", noOnce: true, via: link.addr(), prep: inNetns(ns), slow: 500 * time.Millisecond})
	home := addNode(t, f, "home", nodeOpts{framesFrom: "auto", noOnce: true, slow: 500 * time.Millisecond})
	id := f.submit(t, "--frames", s3.URL("frames", "sh/"), "--sets", "8", "--codec", "ffv1")
	f.fetchExact(t, id, want)
	streamed := regexp.MustCompile(`part uploaded.*frames=streamed`)
	cutStreamed, homeBucket := len(logLines(cut.node, 0, streamed)), len(logLines(home.node, 0, fromBucket))
	t.Logf("cut node: %d sets streamed; home node: %d sets from the bucket", cutStreamed, homeBucket)
	if cutStreamed == 0 || homeBucket == 0 {
		t.Errorf("want both nodes to render: the cut one streaming (%d sets), the other from the bucket (%d)", cutStreamed, homeBucket)
	}
	if n := len(logLines(cut.node, 0, regexp.MustCompile(`reading the frames from the bucket failed`))); n == 0 {
		t.Errorf("the cut node never tried the bucket")
	}
	if got := counter(scrape(t, metrics, ""), "framefarm_frame_stream_bytes_total"); got <= 0 {
		t.Errorf("no frame bytes streamed for the cut node")
	}
}

// TestStorageServerRestarted: the S3 server is killed mid-job and comes
// back 4 s later: nodes fall back or retry, the job ends frame-exact.
func TestStorageServerRestarted(t *testing.T) {
	needFFmpeg(t)
	s3, want := framesInBucket(t, 64, "sh/")
	f, _ := bucketFarm(t, s3)
	w := watch(t, f.addr)
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true, slow: time.Second})
	addNode(t, f, "b", nodeOpts{framesFrom: "auto", noOnce: true, slow: time.Second})
	id := f.submit(t, "--frames", s3.URL("frames", "sh/"), "--sets", "8", "--codec", "ffv1")
	w.waitFor(t, "a first part", 2*time.Minute, kind("part_accepted", -1, ""))
	s3.Kill(t)
	time.Sleep(4 * time.Second)
	s3.Start(t)
	f.fetchExact(t, id, want)
	t.Logf("events: %d sets completed, %d released", countKind(w.events(), "part_accepted"), countKind(w.events(), "set_released"))
}

// TestStorageURLExpired: with pre-signed URLs valid for 1 s, a node that
// was stopped past their expiry gets 403 from the bucket, streams the set
// and uploads the part instead; the video is frame-exact.
func TestStorageURLExpired(t *testing.T) {
	needFFmpeg(t)
	s3, want := framesInBucket(t, 16, "sh/")
	f, metrics := bucketFarm(t, s3, "--presign-expiry", "1s")
	w := watch(t, f.addr)
	n := addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	time.Sleep(time.Second) // the node's request for work is waiting
	if err := n.node.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	id := f.submit(t, "--frames", s3.URL("frames", "sh/"), "--sets", "1", "--codec", "ffv1")
	w.waitFor(t, "the grant", time.Minute, kind("set_granted", -1, "a"))
	time.Sleep(2500 * time.Millisecond)
	if err := n.node.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	f.fetchExact(t, id, want)
	if len(logLines(n.node, 0, regexp.MustCompile(`reading the frames from the bucket failed.*403`))) == 0 {
		t.Errorf("the node did not see its URLs expire:\n%s", n.node.out.String())
	}
	if got := counter(scrape(t, metrics, ""), "framefarm_frame_stream_bytes_total"); got <= 0 {
		t.Errorf("the expired set was not streamed")
	}
}

func listJobs(t *testing.T, addr string) []*farmpb.JobSummary {
	t.Helper()
	conn := dial(t, addr)
	defer conn.Close()
	resp, err := farmpb.NewFarmServiceClient(conn).ListJobs(context.Background(), &farmpb.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Jobs
}

// TestStorageFramesClouds: jobs whose frames are in Google Cloud Storage
// (fake-gcs-server) and in Azure Blob Storage (Azurite), with the parts'
// --storage on Azure. Azure signs with the account key, so the nodes read
// the Azure job's frames straight from it; the emulated GCS has no service
// account key to sign with, so that job's frames stream through the
// coordinator, which says why. Both frame-exact.
func TestStorageFramesClouds(t *testing.T) {
	needFFmpeg(t)
	// Before the farm: the coordinator takes the emulators' environment.
	gcs := storagetest.StartGCS(t, "frames")
	az := storagetest.StartAzurite(t, "frames", "parts")
	local := filepath.Join(t.TempDir(), "frames")
	genFrames(t, local, 24, 1, "320x240")
	want := reference(t, local, 1)
	putFramesAt(t, local, func(name string) string { return gcs.URL("frames", "sh010/"+name) })
	putFramesAt(t, local, func(name string) string { return az.URL("frames", "sh010/"+name) })
	f, metrics := storageFarm(t, az.URL("parts", "farm/"))
	w := watch(t, f.addr)
	n := addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})

	azJob := f.submit(t, "--frames", az.URL("frames", "sh010/"), "--sets", "3", "--codec", "ffv1")
	out := filepath.Join(t.TempDir(), "az.mkv")
	f.fetchJob(t, azJob, out)
	checkExact(t, out, want)
	nothingThroughCoordinator(t, metrics, "azblob: ")
	if got := len(logLines(n.node, 0, fromBucket)); got != 3 {
		t.Errorf("azblob: %d sets read their frames from the bucket, want 3", got)
	}
	key := "farm/finals/" + azJob + "/final.mkv"
	storedFinal(t, w, azJob, "azblob://parts/"+key, az.URL("parts", key), out)

	gsJob := f.submit(t, "--frames", gcs.URL("frames", "sh010/"), "--sets", "2", "--codec", "ffv1")
	out = filepath.Join(t.TempDir(), "gs.mkv")
	f.fetchJob(t, gsJob, out)
	checkExact(t, out, want)
	if got := counter(scrape(t, metrics, ""), "framefarm_frame_stream_bytes_total"); got <= 0 {
		t.Errorf("gs: the frames were not streamed (%v bytes), yet the emulator cannot sign URLs", got)
	}
	// Why, with what to do, once: not at every set.
	if n := strings.Count(f.coord.out.String(), "cannot pre-sign URLs; the nodes stream the frames"); n != 1 {
		t.Errorf("the coordinator said %d times that it cannot sign gs:// URLs, want once:\n%s", n, f.coord.out.String())
	}
	if !strings.Contains(f.coord.out.String(), "GOOGLE_APPLICATION_CREDENTIALS") {
		t.Errorf("the coordinator does not say how to let it sign gs:// URLs:\n%s", f.coord.out.String())
	}
	if strings.Contains(f.coord.out.String(), storagetest.AzureKey) {
		t.Fatal("the Azure key appears in the coordinator's log")
	}
}

// TestStorageRestartedWithoutStorage: the coordinator is killed while its
// node renders under pre-signed part URLs, and comes back without
// --storage. The node puts its parts in the bucket as it was told; the
// coordinator, with no bucket now, answers that it does not find them
// there, and the node uploads them instead: nothing counts against the
// sets, and the video is frame-exact.
func TestStorageRestartedWithoutStorage(t *testing.T) {
	needFFmpeg(t)
	s3, want := framesInBucket(t, 16, "sh/")
	f, _ := bucketFarm(t, s3)
	n := addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true, slow: 3 * time.Second})
	id := f.submit(t, "--frames", s3.URL("frames", "sh/"), "--sets", "2", "--codec", "ffv1")
	waitOutput(t, n.node, "set granted", time.Minute)
	_ = f.coord.cmd.Process.Kill()
	<-f.coord.done
	var args []string
	for i := 0; i < len(f.coordArgs); i++ {
		if f.coordArgs[i] == "--storage" {
			i++
			continue
		}
		args = append(args, f.coordArgs[i])
	}
	f.coord, _ = start(t, "coordinator-again", farmReady, append(args, "--listen", f.addr)...)
	f.fetchExact(t, id, want)
	if l := logLines(n.node, 0, regexp.MustCompile(`the coordinator could not take the part from the bucket`)); len(l) == 0 {
		t.Errorf("the node never heard that the part was not in the bucket:\n%s", n.node.out.String())
	}
	if l := logLines(n.node, 0, regexp.MustCompile(`set failed|part refused`)); len(l) != 0 {
		t.Errorf("a set counted as failed: %v", l)
	}
}

// TestStorageUploadInBucket: with --storage, submit --upload keeps the
// frames in the bucket (uploads/NAME/), with the client's times, so that
// the nodes read them from there, not through the coordinator; a second
// upload of the same folder sends only what changed; the frames go once
// the last job that renders them is deleted.
func TestStorageUploadInBucket(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "parts")
	f, metrics := bucketFarm(t, s3)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 24, 1, "320x240")
	want := reference(t, frames, 1)
	submit := func() (id, said string) { return submitUpload(t, f.addr, frames, "--codec", "ffv1", "--sets", "4") }
	first, said := submit()
	if !strings.Contains(said, "uploaded 24 files") {
		t.Errorf("the first upload said %q", said)
	}
	uploads := bucketKeys(t, s3, "parts", "farm/uploads")
	if len(uploads) != 24 {
		t.Fatalf("%d objects under parts/farm/uploads, want the 24 frames: %v", len(uploads), uploads)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.data, "uploads")); len(ents) != 0 {
		t.Errorf("the upload is also kept under --data: %v", ents)
	}
	// Byte for byte the frames, read back through the S3 server.
	up := strings.TrimSuffix(uploads[0], "f_0001.png")
	for i := 1; i <= 24; i += 7 {
		name := fmt.Sprintf("f_%04d.png", i)
		if got := bucketSHA(t, s3.URL("parts", up+name)); got != sha(t, filepath.Join(frames, name)) {
			t.Errorf("%s differs in the bucket", name)
		}
	}
	// One frame touched here since: only it is sent again.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(frames, "f_0007.png"), later, later); err != nil {
		t.Fatal(err)
	}
	second, said := submit()
	if !strings.Contains(said, "uploaded 1 files") || !strings.Contains(said, "23 were there already") {
		t.Errorf("the second upload said %q", said)
	}
	st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", second)
	if !strings.Contains(st, "s3://parts/farm/uploads/up-") {
		t.Errorf("status does not name the upload's folder in the bucket:\n%s", st)
	}

	var nodes []*farmNode
	for _, name := range []string{"a", "b"} {
		nodes = append(nodes, addNode(t, f, name, nodeOpts{framesFrom: "auto", noOnce: true}))
	}
	// The first job's f_0007.png was put again after it was submitted (the
	// same bytes, another ETag on most servers): it fails naming the frame,
	// or renders if the server kept the ETag; the second renders.
	f.fetchExact(t, second, want)
	nothingThroughCoordinator(t, metrics, "")
	if n := len(logLines(nodes[0].node, 0, fromBucket)) + len(logLines(nodes[1].node, 0, fromBucket)); n < 4 {
		t.Errorf("%d sets read their frames from the bucket, want at least the second job's 4", n)
	}

	// Deleting one job keeps the frames the other renders; deleting both
	// removes them.
	w := watch(t, f.addr)
	w.waitFor(t, "the first job to finish", 2*time.Minute, func(e *farmpb.Event) bool {
		return e.JobId == first && (e.Kind == "job_done" || e.Kind == "job_failed")
	})
	runCmd(t, binary, "delete", second, "--coordinator", f.addr)
	time.Sleep(time.Second)
	if n := len(bucketKeys(t, s3, "parts", "farm/uploads")); n != 24 {
		t.Errorf("%d uploaded frames left while job %s still uses them, want 24", n, first)
	}
	runCmd(t, binary, "delete", first, "--coordinator", f.addr)
	// Gone when delete answers: a submit --upload of the folder right after
	// must send its frames again, not reuse objects about to be swept.
	if left := bucketKeys(t, s3, "parts", "farm/uploads"); len(left) != 0 {
		t.Errorf("the upload is still in the bucket when the delete of its last job answers: %d objects", len(left))
	}
}

// TestStorageWebUploadInBucket: with --storage, the web app's uploads are
// kept in the bucket too (nothing stays under --data/uploads), nodes read
// them there, and a refused upload leaves nothing in the bucket.
func TestStorageWebUploadInBucket(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "parts")
	w := startWebFarm(t, "--storage", s3.URL("parts", "farm/"))
	w.session(t)
	frames := filepath.Join(w.root, "frames")
	genFrames(t, frames, 24, 1, "96x64")
	want := reference(t, frames, 1)

	// Refused (a frame missing): nothing kept, here or in the bucket.
	gappy := filepath.Join(w.root, "gappy")
	genFrames(t, gappy, 6, 1, "96x64")
	os.Remove(filepath.Join(gappy, "f_0003.png"))
	if code, e, raw := w.upload(t, append([]formPart{{"codec", "", []byte("ffv1")}}, frameParts(t, gappy)...)); code == 200 || e.Field != "frames" {
		t.Fatalf("a gappy upload was answered %d %s", code, raw)
	}
	if left := bucketKeys(t, s3, "parts", "farm/uploads"); len(left) != 0 {
		t.Errorf("a refused upload left objects in the bucket: %v", left)
	}

	sum := w.submitJob(t, append([]formPart{{"sets", "", []byte("3")}, {"codec", "", []byte("ffv1")}}, frameParts(t, frames)...))
	if !strings.HasPrefix(sum.FramesDir, "s3://parts/farm/uploads/web-") {
		t.Errorf("the job's frames are at %q, want the bucket's uploads/ folder", sum.FramesDir)
	}
	if n := len(bucketKeys(t, s3, "parts", "farm/uploads")); n != 24 {
		t.Errorf("%d objects under parts/farm/uploads, want the 24 frames", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(w.data, "uploads")); len(ents) != 0 {
		t.Errorf("the upload is also kept under --data: %v", ents)
	}
	n := addNode(t, w.farm, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	out := w.fetchExact(t, sum.JobID, want)
	if got := len(logLines(n.node, 0, fromBucket)); got != 3 {
		t.Errorf("%d sets read their frames from the bucket, want 3", got)
	}

	// With audio: the frames go to the bucket all the same, the audio
	// stays on disk for the join, and both go with the job.
	wav := filepath.Join(w.root, "tone.wav")
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=2", wav)
	tone, err := os.ReadFile(wav)
	if err != nil {
		t.Fatal(err)
	}
	sum = w.submitJob(t, append([]formPart{{"sets", "", []byte("3")}, {"codec", "", []byte("ffv1")}, {"audio", "tone.wav", tone}}, frameParts(t, frames)...))
	if !strings.HasPrefix(sum.FramesDir, "s3://parts/farm/uploads/web-") {
		t.Errorf("the job with audio has its frames at %q, want the bucket's uploads/ folder", sum.FramesDir)
	}
	u, err := url.Parse(sum.FramesDir)
	if err != nil {
		t.Fatal(err)
	}
	name := path.Base(u.Path)
	local := filepath.Join(w.data, "uploads", name)
	if ents, err := os.ReadDir(local); err != nil || len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), ".audio") {
		t.Errorf("kept under --data for the job with audio: %v (%v), want the audio alone", ents, err)
	}
	w.fetchJob(t, sum.JobID, out)
	checkExact(t, out, want)
	if codec, _, _ := audioStream(t, out); codec != "pcm_s16le" {
		t.Errorf("the final's audio is %s, want the WAV's pcm_s16le", codec)
	}
	if got := len(logLines(n.node, 0, fromBucket)); got != 6 {
		t.Errorf("%d sets of the two jobs read their frames from the bucket, want 6", got)
	}
	runCmd(t, binary, "delete", sum.JobID, "--coordinator", w.addr)
	if _, err := os.Stat(local); !os.IsNotExist(err) {
		t.Errorf("the deleted job's audio is still under --data (%v)", err)
	}
	emptied(t, s3, "parts", "farm/uploads/"+name, 30*time.Second, "frames of the deleted job with audio")
}
