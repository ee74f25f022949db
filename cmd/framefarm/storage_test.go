//go:build storage

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/framefarm/framefarm/internal/storage"
	"github.com/framefarm/framefarm/internal/storage/storagetest"
	farmpb "github.com/framefarm/framefarm/proto"
)

// getObject downloads an object through the storage package.
func getObject(t *testing.T, raw, to string) {
	t.Helper()
	loc, err := storage.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	r, err := storage.Open(context.Background(), loc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		t.Fatal(err)
	}
}

func outCopyEvent(e *farmpb.Event) bool { return e.Kind == "out_copied" || e.Kind == "out_failed" }

// TestStorageOutS3: a job with --out s3://... lands its final in the bucket,
// byte for byte what fetch gives, frame by frame one plain ffmpeg run; the
// S3 secret never reaches the coordinator's log.
func TestStorageOutS3(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "finals")
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 72, 1, "320x240")
	want := reference(t, frames, 1)
	f := colourFarm(t)
	w := watch(t, f.addr)
	out := s3.URL("finals", "shots/final.mkv")
	id := f.submit(t, "--frames", frames, "--sets", "3", "--codec", "ffv1", "--out", out)
	tmp := t.TempDir()
	fetched := filepath.Join(tmp, "fetched.mkv")
	f.fetchJob(t, id, fetched)
	e := w.waitFor(t, "the copy to --out", 2*time.Minute, outCopyEvent)
	if e.Kind != "out_copied" {
		t.Fatalf("copy to --out: %s %s", e.Kind, e.Detail)
	}
	got := filepath.Join(tmp, "object.mkv")
	getObject(t, out, got)
	if a, b := sha(t, got), sha(t, fetched); a != b {
		t.Fatalf("object sha256 %s, fetched %s", a, b)
	}
	checkExact(t, got, want)
	loc, _ := storage.Parse(out)
	if a, err := storage.Stat(context.Background(), loc); err != nil || a.ContentType != "video/x-matroska" {
		t.Fatalf("object attributes: %+v %v", a, err)
	}
	st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", id)
	if !strings.Contains(st, "copy to --out: copied to s3://finals/shots/final.mkv") {
		t.Fatalf("status does not show the copy:\n%s", st)
	}
	if strings.Contains(f.coord.out.String(), storagetest.Secret) || strings.Contains(st, storagetest.Secret) {
		t.Fatal("the S3 secret key appears in the coordinator's log or status")
	}
	t.Logf("event: %s", e.Detail)

	// The same to a file:// URL (another set count, so another job).
	dir := t.TempDir()
	id2 := f.submit(t, "--frames", frames, "--sets", "2", "--codec", "ffv1", "--out", "file://"+dir+"/final.mkv")
	fetched2 := filepath.Join(tmp, "fetched2.mkv")
	f.fetchJob(t, id2, fetched2)
	w.waitCount(t, "the second copy to --out", 2*time.Minute, 2, outCopyEvent)
	if n := countKind(w.events(), "out_copied"); n != 2 {
		t.Fatalf("%d copies landed, want 2:\n%s", n, formatEvents(w.events()))
	}
	if a, b := sha(t, filepath.Join(dir, "final.mkv")), sha(t, fetched2); a != b {
		t.Fatalf("file:// copy sha256 %s, fetched %s", a, b)
	}
	checkExact(t, filepath.Join(dir, "final.mkv"), want)
}

// TestStorageOutRetried: the S3 server is down when the final is ready; the
// copy is retried and lands once the server is back a few seconds later.
func TestStorageOutRetried(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "finals")
	s3.Kill(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 48, 1, "320x240")
	f := colourFarm(t)
	w := watch(t, f.addr)
	out := s3.URL("finals", "retried/final.mkv")
	id := f.submit(t, "--frames", frames, "--sets", "2", "--codec", "ffv1", "--out", out)
	w.waitDone(t, 3*time.Minute)
	// The first attempt fails while the server is down...
	retry := regexp.MustCompile(`copying the final video to --out failed; retrying`)
	deadline := time.Now().Add(time.Minute)
	for len(logLines(f.coord, 0, retry)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no retry logged:\n%s", f.coord.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := countKind(w.events(), "out_copied"); n != 0 {
		t.Fatalf("copied with the server down")
	}
	st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", id)
	if !strings.Contains(st, "copy to --out: retrying") {
		t.Fatalf("status does not show the retry:\n%s", st)
	}
	time.Sleep(3 * time.Second)
	restarted := time.Now()
	s3.Start(t)
	e := w.waitFor(t, "the copy to --out", 2*time.Minute, outCopyEvent)
	if e.Kind != "out_copied" {
		t.Fatalf("copy to --out: %s %s", e.Kind, e.Detail)
	}
	t.Logf("landed %s after the server came back (%d retries logged): %s",
		time.Since(restarted).Round(time.Millisecond), len(logLines(f.coord, 0, retry)), e.Detail)
	tmp := t.TempDir()
	fetched, got := filepath.Join(tmp, "fetched.mkv"), filepath.Join(tmp, "object.mkv")
	f.fetchJob(t, id, fetched)
	getObject(t, out, got)
	if a, b := sha(t, got), sha(t, fetched); a != b {
		t.Fatalf("object sha256 %s, fetched %s", a, b)
	}
	if strings.Contains(f.coord.out.String(), storagetest.Secret) {
		t.Fatal("the S3 secret key appears in the coordinator's log")
	}
}

// TestStorageOutRefused: a bad --out URL is refused at submit, naming --out.
func TestStorageOutRefused(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 4, 1, "64x48")
	f := colourFarm(t)
	for _, c := range []struct{ out, says string }{
		{"s3:///final.mkv?region=us-east-1", "names no bucket"},
		{"s3://bucket/shots/", "names no object"},
		{"gs:///final.mkv", "names no bucket"},
		{"azblob://container/final.mkv?sig=" + storagetest.AzureKey, "AZURE_STORAGE_SAS_TOKEN"},
		{"ftp://bucket/final.mkv", "s3://, gs://, azblob:// and file:// are supported"},
		{"s3://AKIAX:" + storagetest.Secret + "@bucket/final.mkv", "holds credentials"},
		{"s3://bucket/final?region=us-east-1", "has no extension"},
	} {
		said := f.refused(t, "--frames", frames, "--out", c.out)
		if !strings.Contains(said, "--out") || !strings.Contains(said, c.says) {
			t.Errorf("--out %s: submit said %q, want --out and %q", c.out, said, c.says)
		}
		if strings.Contains(said, storagetest.Secret) || strings.Contains(said, storagetest.AzureKey) {
			t.Errorf("--out %s: the refusal shows the secret: %s", c.out, said)
		}
	}
	if strings.Contains(f.coord.out.String(), storagetest.Secret) {
		t.Fatal("the secret appears in the coordinator's log")
	}
}

// TestStorageOutClouds: jobs with --out gs://... and --out azblob://... land
// their finals in real emulators (fake-gcs-server, Azurite) through the
// coordinator's own drivers, with credentials only in its environment: each
// object byte for byte what fetch gives, frame by frame one plain ffmpeg
// run, and the Azure key never in the coordinator's log or status.
func TestStorageOutClouds(t *testing.T) {
	needFFmpeg(t)
	// Before the farm: the coordinator takes the emulators' environment
	// (STORAGE_EMULATOR_HOST, AZURE_STORAGE_ACCOUNT and _KEY) when it starts.
	gcs := storagetest.StartGCS(t, "finals")
	az := storagetest.StartAzurite(t, "finals")
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 48, 1, "320x240")
	want := reference(t, frames, 1)
	f := colourFarm(t)
	w := watch(t, f.addr)
	tmp := t.TempDir()
	jobs := []struct{ out, shown, id string }{
		{out: gcs.URL("finals", "shots/final.mkv"), shown: "copied to gs://finals/shots/final.mkv"},
		{out: az.URL("finals", "shots/final.mkv"), shown: "copied to azblob://finals/shots/final.mkv"},
	}
	for i := range jobs {
		// Another set count for each, so each is a job of its own.
		jobs[i].id = f.submit(t, "--frames", frames, "--sets", strconv.Itoa(i+2), "--codec", "ffv1", "--out", jobs[i].out)
	}
	w.waitCount(t, "the copies to --out", 3*time.Minute, len(jobs), outCopyEvent)
	if n := countKind(w.events(), "out_copied"); n != len(jobs) {
		t.Fatalf("%d copies landed, want %d:\n%s", n, len(jobs), formatEvents(w.events()))
	}
	for i, j := range jobs {
		fetched := filepath.Join(tmp, fmt.Sprintf("fetched%d.mkv", i))
		got := filepath.Join(tmp, fmt.Sprintf("object%d.mkv", i))
		f.fetchJob(t, j.id, fetched)
		getObject(t, j.out, got)
		if a, b := sha(t, got), sha(t, fetched); a != b {
			t.Fatalf("%s: object sha256 %s, fetched %s", j.out, a, b)
		}
		checkExact(t, got, want)
		loc, _ := storage.Parse(j.out)
		if a, err := storage.Stat(context.Background(), loc); err != nil || a.ContentType != "video/x-matroska" {
			t.Fatalf("%s: object attributes: %+v %v", j.out, a, err)
		}
		st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", j.id)
		if !strings.Contains(st, "copy to --out: "+j.shown) {
			t.Fatalf("status does not show the copy to %s:\n%s", j.out, st)
		}
		if strings.Contains(st, storagetest.AzureKey) {
			t.Fatal("the Azure key appears in status")
		}
	}
	if strings.Contains(f.coord.out.String(), storagetest.AzureKey) {
		t.Fatal("the Azure key appears in the coordinator's log")
	}
}
