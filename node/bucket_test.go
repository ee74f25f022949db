package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

// busyBucket is an HTTP server that answers the first busy requests with
// an S3 error of the given status and code, then serves one object: GET
// reads it, PUT replaces it.
type busyBucket struct {
	status int
	code   string

	mu     sync.Mutex
	busy   int
	object []byte
	tries  int
}

func (b *busyBucket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tries++
	if b.busy > 0 {
		b.busy--
		w.WriteHeader(b.status)
		fmt.Fprintf(w, "<Error><Code>%s</Code><Message>try later</Message></Error>", b.code)
		return
	}
	switch r.Method {
	case http.MethodGet:
		w.Header().Set("ETag", `"e1"`)
		w.Header().Set("Content-Length", fmt.Sprint(len(b.object)))
		_, _ = w.Write(b.object)
	case http.MethodPut:
		b.object = body
	}
}

func bucketNode(t *testing.T) (*Node, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	return &Node{bucket: newBucketClient(), metrics: newMetrics()}, &logs
}

// TestBucketBusyRetried: 503 SlowDown and 500 InternalError from the bucket
// are tried again after 200 ms then 400 ms, and a frame or part gets
// through on the third try; a fourth is not made, and the last answer is
// the error; 403 is not tried again.
func TestBucketBusyRetried(t *testing.T) {
	frame := []byte("a frame's bytes")
	fi := &farmpb.FrameInfo{Number: 1, Name: "f_0001.png", Size: int64(len(frame)), Etag: "e1"}
	for _, c := range []struct {
		status     int
		code       string
		busy       int
		wantTries  int
		wantErr    string
		minElapsed time.Duration
	}{
		{http.StatusServiceUnavailable, "SlowDown", 2, 3, "", 600 * time.Millisecond},
		{http.StatusInternalServerError, "InternalError", 1, 2, "", 200 * time.Millisecond},
		{http.StatusServiceUnavailable, "SlowDown", 3, 3, "503 Service Unavailable (SlowDown: try later)", 600 * time.Millisecond},
		{http.StatusForbidden, "AccessDenied", 1, 1, "403 Forbidden (AccessDenied", 0},
	} {
		t.Run(fmt.Sprintf("%s-%d", c.code, c.busy), func(t *testing.T) {
			b := &busyBucket{status: c.status, code: c.code, busy: c.busy, object: frame}
			srv := httptest.NewServer(b)
			defer srv.Close()
			n, logs := bucketNode(t)
			log := slog.New(slog.NewTextHandler(logs, nil))
			path := filepath.Join(t.TempDir(), "frame.png")
			start := time.Now()
			err := n.fetchFrame(context.Background(), path, srv.URL+"/frames/f_0001.png", fi, log)
			took := time.Since(start)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("GET: err %v, want %q", err, c.wantErr)
			}
			if b.tries != c.wantTries || took < c.minElapsed {
				t.Fatalf("GET: %d tries in %s, want %d in at least %s", b.tries, took, c.wantTries, c.minElapsed)
			}
			if c.wantErr == "" {
				if got, _ := os.ReadFile(path); !bytes.Equal(got, frame) {
					t.Fatalf("GET: the frame read is %q", got)
				}
			}
			if c.wantTries > 1 && !strings.Contains(logs.String(), "the bucket is busy; trying again") {
				t.Fatalf("the retries are not logged:\n%s", logs.String())
			}

			// The same for a part: each try sends the whole of it.
			part := filepath.Join(t.TempDir(), "part.mov")
			want := bytes.Repeat([]byte("part"), 64<<10)
			if err := os.WriteFile(part, want, 0o644); err != nil {
				t.Fatal(err)
			}
			b.mu.Lock()
			b.busy, b.tries, b.object = c.busy, 0, nil
			b.mu.Unlock()
			err = n.putPart(context.Background(), part, srv.URL+"/parts/part.mov", nil, log)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("PUT: err %v, want %q", err, c.wantErr)
			}
			if b.tries != c.wantTries {
				t.Fatalf("PUT: %d tries, want %d", b.tries, c.wantTries)
			}
			if c.wantErr == "" && !bytes.Equal(b.object, want) {
				t.Fatalf("PUT: the bucket holds %d bytes, want the part's %d", len(b.object), len(want))
			}
		})
	}
}

// TestBucketBusyCancelled: a node stopping while it waits to try again
// stops waiting.
func TestBucketBusyCancelled(t *testing.T) {
	b := &busyBucket{status: http.StatusServiceUnavailable, code: "SlowDown", busy: 10, object: []byte("x")}
	srv := httptest.NewServer(b)
	defer srv.Close()
	n, logs := bucketNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := n.fetchFrame(ctx, filepath.Join(t.TempDir(), "f.png"), srv.URL+"/f.png",
		&farmpb.FrameInfo{Number: 1, Name: "f.png", Size: 1}, slog.New(slog.NewTextHandler(logs, nil)))
	if err == nil || time.Since(start) > 150*time.Millisecond {
		t.Fatalf("err %v after %s, want a prompt error", err, time.Since(start))
	}
}
