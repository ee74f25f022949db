package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/framefarm/framefarm/internal/ffmpeg"
	farmpb "github.com/framefarm/framefarm/proto"
	"golang.org/x/sync/errgroup"
)

// Reading frames from a bucket and putting parts into one, through the
// pre-signed URLs the coordinator hands out with a set: the node needs no
// bucket credentials, and the coordinator's network carries neither. Any
// failure (no route to the bucket, an expired URL, a frame that is not the
// one recorded) makes the node use the coordinator for that set instead,
// so a node cut off from the bucket renders all the same.

// bucketParallel is how many frames of a set are read from the bucket at
// once: each is a round trip to a server that may be far away.
const bucketParallel = 4

// bucketTimeout bounds one request to the bucket with no answer: a bucket
// out of reach must not hold a set long before the node streams it.
const bucketTimeout = 30 * time.Second

// bucketTries bounds the tries of one request the bucket answers "busy"
// (503 SlowDown, 500 InternalError): S3 asks clients to retry those with
// backoff, and a moment's pause often suffices. A bucket still busy after
// that makes the node use the coordinator for the set rather than wait.
const bucketTries = 3

// bucketRetryWait is the pause before the second try, doubled before each
// further one: 200 ms, then 400 ms.
const bucketRetryWait = 200 * time.Millisecond

func newBucketClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = bucketTimeout
	t.MaxIdleConnsPerHost = bucketParallel
	// Proxies from the environment are kept (a node may reach the cloud
	// only through one): over https a proxy tunnels the request and never
	// sees the URL's signature; over plain http it does, for as long as the
	// URL is valid (--presign-expiry).
	return &http.Client{Transport: t}
}

// fetchFrames downloads the set's frames from their pre-signed URLs into
// dir as the sequence ffmpeg reads, checking each frame's size and ETag
// against what the coordinator recorded. It leaves nothing in dir when it
// fails.
func (n *Node) fetchFrames(ctx context.Context, dir string, a *farmpb.Assignment, log *slog.Logger) (err error) {
	if len(a.FrameUrls) != len(a.Frames) {
		return fmt.Errorf("the coordinator gave %d frame URLs for %d frames", len(a.FrameUrls), len(a.Frames))
	}
	defer func() {
		if err != nil {
			removeSequence(dir, a, len(a.Frames))
		}
	}()
	// The first failure cancels the other reads and is the one returned.
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(bucketParallel)
	for pos, f := range a.Frames {
		g.Go(func() error {
			return n.fetchFrame(ctx, filepath.Join(dir, ffmpeg.SequenceName(pos, a.Settings.FrameExt)), a.FrameUrls[pos], f, log)
		})
	}
	return g.Wait()
}

func (n *Node) fetchFrame(ctx context.Context, path, url string, f *farmpb.FrameInfo, log *slog.Logger) error {
	resp, err := n.bucketDo(ctx, log.With("frame", f.Name), func() (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	})
	if err != nil {
		return fmt.Errorf("frame %d (%s): %w", f.Number, f.Name, redactURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("frame %d (%s): the bucket answered %s%s", f.Number, f.Name, resp.Status, s3Code(resp.Body))
	}
	if etag := strings.Trim(resp.Header.Get("ETag"), `"`); f.Etag != "" && etag != f.Etag {
		return fmt.Errorf("frame %d (%s) in the bucket is not the one the job recorded (ETag %s, not %s)", f.Number, f.Name, etag, f.Etag)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != f.Size {
		return fmt.Errorf("frame %d (%s) in the bucket is %d bytes, not %d", f.Number, f.Name, resp.ContentLength, f.Size)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	got, err := io.Copy(out, io.LimitReader(resp.Body, f.Size+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("frame %d (%s): %w", f.Number, f.Name, redactURLError(err))
	}
	if got != f.Size {
		return fmt.Errorf("frame %d (%s): read %d bytes from the bucket, expected %d", f.Number, f.Name, got, f.Size)
	}
	n.metrics.bucketBytes.Add(float64(got))
	return nil
}

// putPart puts the part at the set's pre-signed PUT URL. S3 stores a PUT
// whole or not at all; the coordinator checks what it finds there anyway.
func (n *Node) putPart(ctx context.Context, path, url string, headers map[string]string, log *slog.Logger) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	resp, err := n.bucketDo(ctx, log.With("part", filepath.Base(path)), func() (*http.Request, error) {
		// Each try sends the part from its start; the client closes it.
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, f)
		if err != nil {
			f.Close()
			return nil, err
		}
		req.ContentLength = st.Size()
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		// A body that can be read again, so that a redirect or a retried
		// connection sends the whole part.
		req.GetBody = func() (io.ReadCloser, error) { return os.Open(path) }
		return req, nil
	})
	if err != nil {
		return redactURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the bucket answered %s%s", resp.Status, s3Code(resp.Body))
	}
	n.metrics.bucketBytes.Add(float64(st.Size()))
	return nil
}

// bucketDo sends the request newReq makes and returns the bucket's answer, trying again after a pause while
// the bucket answers that it is busy (see retryableStatus), at most
// bucketTries times in all; the last answer is returned as it came. A
// request that gets no answer is not tried again: a bucket out of reach
// stays so for a while, and the coordinator is the way round it.
func (n *Node) bucketDo(ctx context.Context, log *slog.Logger, newReq func() (*http.Request, error)) (*http.Response, error) {
	wait := bucketRetryWait
	for try := 1; ; try++ {
		req, err := newReq()
		if err != nil {
			return nil, err
		}
		resp, err := n.bucket.Do(req)
		if err != nil || !retryableStatus(resp.StatusCode) || try >= bucketTries {
			return resp, err
		}
		// The answer's code (SlowDown, InternalError) says why, for the log.
		why := resp.Status + s3Code(resp.Body)
		resp.Body.Close()
		log.Info("the bucket is busy; trying again", "answer", why, "try", try, "of", bucketTries, "wait", wait)
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// retryableStatus reports whether an answer of the bucket says to try the
// same request again shortly: S3's 503 SlowDown and 500 InternalError, and
// the 502 and 504 of a gateway in front of it. 4xx (an expired URL, a
// missing object) stays so whatever the pause.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// s3Code is the error code and message of an S3 error answer, for logs.
func s3Code(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 4096))
	s := string(b)
	var parts []string
	for _, tag := range []string{"Code", "Message"} {
		if i := strings.Index(s, "<"+tag+">"); i >= 0 {
			if j := strings.Index(s[i:], "</"+tag+">"); j > 0 {
				parts = append(parts, s[i+len(tag)+2:i+j])
			}
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ": ") + ")"
}

// redactURLError drops the URL from a client error: a pre-signed URL's
// query is a credential for as long as it is valid.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s to the bucket: %w", ue.Op, ue.Err)
	}
	return err
}
