//go:build storage

package main

import (
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/framefarm/framefarm/internal/storage/storagetest"
	farmpb "github.com/framefarm/framefarm/proto"
)

// copyTook is how long after job_done the copy to --out ended.
func copyTook(w *watcher, e *farmpb.Event) time.Duration {
	for _, d := range w.events() {
		if d.Kind == "job_done" && d.JobId == e.JobId {
			return time.Duration(e.UnixMs-d.UnixMs) * time.Millisecond
		}
	}
	return -1
}

var outRetried = regexp.MustCompile(`copying the final video to --out failed; retrying`)

// TestStorageOutSlowDown: the S3 server answers the first three requests of
// the copy with 503 SlowDown (more than the SDK's own retries take); the
// copy is tried again and lands byte for byte.
func TestStorageOutSlowDown(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "finals")
	p := storagetest.StartProxy(t, s3)
	p.FailNext(3, http.StatusServiceUnavailable, "SlowDown")
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 48, 1, "320x240")
	f := colourFarm(t)
	w := watch(t, f.addr)
	out := p.URL("finals", "slow/final.mkv")
	id := f.submit(t, "--frames", frames, "--sets", "2", "--codec", "ffv1", "--out", out)
	w.waitDone(t, 3*time.Minute)
	e := w.waitFor(t, "the copy to --out", time.Minute, outCopyEvent)
	if e.Kind != "out_copied" {
		t.Fatalf("copy to --out: %s %s", e.Kind, e.Detail)
	}
	if p.Faulted() != 3 {
		t.Fatalf("%d requests answered SlowDown, want 3", p.Faulted())
	}
	if n := len(logLines(f.coord, 0, outRetried)); n == 0 {
		t.Fatalf("the copy landed without a retry of the coordinator's own; log:\n%s", f.coord.out.String())
	}
	tmp := t.TempDir()
	fetched, got := filepath.Join(tmp, "fetched.mkv"), filepath.Join(tmp, "object.mkv")
	f.fetchJob(t, id, fetched)
	getObject(t, s3.URL("finals", "slow/final.mkv"), got)
	if a, b := sha(t, got), sha(t, fetched); a != b {
		t.Fatalf("object sha256 %s, fetched %s", a, b)
	}
	t.Logf("landed %s after job_done, %d requests through the proxy, %d faulted, %d bytes back: %s",
		copyTook(w, e), p.Requests(), p.Faulted(), p.Bytes(), e.Detail)
}

// outGivenUp runs a small job whose copy to --out must fail at once (not
// after 5 minutes of retries) and returns the out_failed event's detail.
func outGivenUp(t *testing.T, f *farm, out string) string {
	t.Helper()
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 24, 1, "160x120")
	w := watch(t, f.addr)
	id := f.submit(t, "--frames", frames, "--sets", "2", "--codec", "ffv1", "--out", out)
	w.waitDone(t, 3*time.Minute)
	e := w.waitFor(t, "the copy to --out", 30*time.Second, outCopyEvent)
	if e.Kind != "out_failed" {
		t.Fatalf("copy to --out: %s %s", e.Kind, e.Detail)
	}
	took := copyTook(w, e)
	if took < 0 || took > 10*time.Second {
		t.Fatalf("out_failed %s after job_done, want at once", took)
	}
	if n := len(logLines(f.coord, 0, outRetried)); n != 0 {
		t.Fatalf("a permanent error was retried %d times; log:\n%s", n, f.coord.out.String())
	}
	st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", id)
	if !strings.Contains(st, "copy to --out: not copied to ") {
		t.Fatalf("status does not show why the copy failed:\n%s", st)
	}
	// The final is still served.
	f.fetchJob(t, id, filepath.Join(t.TempDir(), "fetched.mkv"))
	t.Logf("out_failed %s after job_done: %s", took, e.Detail)
	return e.Detail
}

// TestStorageOutNoBucket: --out names a bucket the server does not have:
// the copy gives up at once, naming the bucket, what to do and S3's answer.
func TestStorageOutNoBucket(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "finals")
	f := colourFarm(t)
	detail := outGivenUp(t, f, s3.URL("nosuchbucket", "shots/final.mkv"))
	for _, want := range []string{"s3://nosuchbucket/shots/final.mkv", "create the bucket", "NoSuchBucket"} {
		if !strings.Contains(detail, want) {
			t.Errorf("out_failed says %q, want %q in it", detail, want)
		}
	}
}

// TestStorageOutWrongSecret: the coordinator holds a wrong secret key: the
// copy gives up at once, says which setting to fix, and neither the secret
// it holds nor the right one appears in its log or status.
func TestStorageOutWrongSecret(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "finals")
	wrong := "wrong-" + storagetest.Secret + "-x9"
	t.Setenv("AWS_SECRET_ACCESS_KEY", wrong) // the coordinator started below inherits it
	f := colourFarm(t)
	detail := outGivenUp(t, f, s3.URL("finals", "shots/final.mkv"))
	for _, want := range []string{"s3://finals/shots/final.mkv", "AWS_SECRET_ACCESS_KEY", "SignatureDoesNotMatch"} {
		if !strings.Contains(detail, want) {
			t.Errorf("out_failed says %q, want %q in it", detail, want)
		}
	}
	log := f.coord.out.String()
	if strings.Contains(log, wrong) || strings.Contains(log, storagetest.Secret) || strings.Contains(detail, storagetest.Secret) {
		t.Fatal("a secret key appears in the coordinator's log or the event")
	}
}
