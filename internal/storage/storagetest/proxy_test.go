//go:build storage

package storagetest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"
)

// bucketURL is the URL gocloud opens for a bucket through the proxy.
func bucketURL(p *Proxy, bucket string) string {
	u := p.URL(bucket, "")
	return strings.Replace(u, "s3://"+bucket+"/?", "s3://"+bucket+"?", 1)
}

func openBucket(t *testing.T, p *Proxy, bucket string) *blob.Bucket {
	t.Helper()
	b, err := blob.OpenBucket(context.Background(), bucketURL(p, bucket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestProxyPassesSigned: gocloud's signed requests verify through the proxy
// (the Host it signed reaches versitygw unchanged), and the counters count.
func TestProxyPassesSigned(t *testing.T) {
	s := StartS3(t, "finals")
	p := StartProxy(t, s)
	b := openBucket(t, p, "finals")
	ctx := context.Background()
	want := bytes.Repeat([]byte("framefarm proxy "), 64<<10) // 1 MiB
	if err := b.WriteAll(ctx, "a/b.bin", want, nil); err != nil {
		t.Fatalf("write through the proxy: %v", err)
	}
	got, err := b.ReadAll(ctx, "a/b.bin")
	if err != nil {
		t.Fatalf("read through the proxy: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, wrote %d", len(got), len(want))
	}
	if p.Requests() < 2 || p.Faulted() != 0 || p.Bytes() < int64(len(want)) {
		t.Fatalf("requests %d faulted %d bytes %d", p.Requests(), p.Faulted(), p.Bytes())
	}
}

// TestProxyFailNext: the next requests get the planned S3 error, and those
// after them pass again.
func TestProxyFailNext(t *testing.T) {
	s := StartS3(t, "finals")
	p := StartProxy(t, s)
	b := openBucket(t, p, "finals")
	ctx := context.Background()
	if err := b.WriteAll(ctx, "k", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	p.FailNext(1, http.StatusForbidden, "AccessDenied")
	_, err := b.ReadAll(ctx, "k")
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") || gcerrors.Code(err) != gcerrors.PermissionDenied {
		t.Fatalf("read with a planned AccessDenied: %v (code %v)", err, gcerrors.Code(err))
	}
	if p.Faulted() != 1 {
		t.Fatalf("faulted %d, want 1", p.Faulted())
	}
	if _, err := b.ReadAll(ctx, "k"); err != nil {
		t.Fatalf("read after the fault: %v", err)
	}

	// Only PUTs fail: reads pass meanwhile.
	p.FailNextMatching(1, http.MethodPut, http.StatusServiceUnavailable, "SlowDown")
	if _, err := b.ReadAll(ctx, "k"); err != nil {
		t.Fatalf("a GET while a PUT fault waits: %v", err)
	}
	// The SDK retries a 503 SlowDown itself: one planned failure costs a
	// retry, not the write.
	before := p.Requests()
	if err := b.WriteAll(ctx, "k2", []byte("y"), nil); err != nil {
		t.Fatalf("write after one SlowDown: %v", err)
	}
	if p.Faulted() != 2 || p.Requests()-before < 2 {
		t.Fatalf("faulted %d (want 2), %d requests for the write", p.Faulted(), p.Requests()-before)
	}

	// More failures than the SDK retries: the error reaches the caller.
	p.FailNext(10, http.StatusServiceUnavailable, "SlowDown")
	err = b.WriteAll(ctx, "k3", []byte("z"), nil)
	if err == nil || !strings.Contains(err.Error(), "SlowDown") {
		t.Fatalf("write under 10 SlowDowns: %v", err)
	}
	t.Logf("after %d requests, %d faulted: %v", p.Requests(), p.Faulted(), err)
}

// TestProxyDelayNext: a delayed request arrives late but whole.
func TestProxyDelayNext(t *testing.T) {
	s := StartS3(t, "finals")
	p := StartProxy(t, s)
	b := openBucket(t, p, "finals")
	ctx := context.Background()
	if err := b.WriteAll(ctx, "k", []byte("late"), nil); err != nil {
		t.Fatal(err)
	}
	p.DelayNext(1, 500*time.Millisecond)
	t0 := time.Now()
	got, err := b.ReadAll(ctx, "k")
	if err != nil || string(got) != "late" {
		t.Fatalf("delayed read: %q %v", got, err)
	}
	if d := time.Since(t0); d < 500*time.Millisecond {
		t.Fatalf("read took %s, delay was 500ms", d)
	}
}

// TestProxySignedURL: pre-signed URLs (query-string SigV4 over the proxy's
// host) work through the proxy, for a PUT and a GET by plain HTTP.
func TestProxySignedURL(t *testing.T) {
	s := StartS3(t, "finals")
	p := StartProxy(t, s)
	b := openBucket(t, p, "finals")
	ctx := context.Background()
	put, err := b.SignedURL(ctx, "signed.bin", &blob.SignedURLOptions{Method: http.MethodPut, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(put, p.Addr()) {
		t.Fatalf("signed URL %s is not through the proxy %s", put, p.Addr())
	}
	body := []byte("pre-signed through the proxy")
	req, err := http.NewRequest(http.MethodPut, put, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("signed PUT: %s %s", resp.Status, msg)
	}
	get, err := b.SignedURL(ctx, "signed.bin", &blob.SignedURLOptions{Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(get)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("signed GET: %s %q", resp.Status, got)
	}
	// A tampered signature is refused: the proxy does not make every
	// request pass.
	resp, err = http.Get(strings.Replace(get, "X-Amz-Signature=", "X-Amz-Signature=0", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered signed GET: %s", resp.Status)
	}
}

// signedPut PUTs body at a pre-signed URL for key through the proxy and
// returns S3's status, or the client's error.
func signedPut(t *testing.T, p *Proxy, b *blob.Bucket, key string, body []byte) (int, error) {
	t.Helper()
	u, err := b.SignedURL(context.Background(), key, &blob.SignedURLOptions{Method: http.MethodPut, Expiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestProxyPutBodyFaults: FailNextUnder fails only the requests under its
// prefix; TruncateNextPut stores the first bytes of a PUT answered 200,
// CorruptNextPut one byte changed; CutNextPut leaves the client without an answer and S3 without the
// object.
func TestProxyPutBodyFaults(t *testing.T) {
	s := StartS3(t, "frames", "parts")
	p := StartProxy(t, s)
	frames, parts := openBucket(t, p, "frames"), openBucket(t, p, "parts")
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB

	p.FailNextUnder(1, http.MethodGet, "/parts/", http.StatusServiceUnavailable, "SlowDown")
	if err := frames.WriteAll(ctx, "f", []byte("frame"), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := frames.ReadAll(ctx, "f"); err != nil || string(got) != "frame" {
		t.Fatalf("a GET outside the prefix: %q %v", got, err)
	}
	if p.Faulted() != 0 {
		t.Fatalf("a request outside the prefix was faulted")
	}
	p.Clear()

	p.TruncateNextPut(1, "/parts/farm/", 1000)
	if code, err := signedPut(t, p, parts, "farm/half.bin", body); err != nil || code != http.StatusOK {
		t.Fatalf("truncated PUT: %d %v, want S3's 200", code, err)
	}
	if a, err := parts.Attributes(ctx, "farm/half.bin"); err != nil || a.Size != 1000 {
		t.Fatalf("after a truncated PUT the object is %+v (%v), want 1000 bytes", a, err)
	}

	p.CorruptNextPut(1, "/parts/farm/", 5)
	if code, err := signedPut(t, p, parts, "farm/flipped.bin", body); err != nil || code != http.StatusOK {
		t.Fatalf("corrupted PUT: %d %v, want S3's 200", code, err)
	}
	got, err := parts.ReadAll(ctx, "farm/flipped.bin")
	if err != nil || len(got) != len(body) || got[5] != body[5]^0xff || !bytes.Equal(got[6:], body[6:]) {
		t.Fatalf("after a corrupted PUT: %d bytes (%v), want byte 5 inverted only", len(got), err)
	}

	p.CutNextPut(1, "/parts/", 64<<10)
	if code, err := signedPut(t, p, parts, "farm/cut.bin", body); err == nil {
		t.Fatalf("cut PUT: answered %d, want no answer", code)
	}
	if _, err := parts.Attributes(ctx, "farm/cut.bin"); gcerrors.Code(err) != gcerrors.NotFound {
		t.Fatalf("after a cut PUT: %v, want no object", err)
	}
	if p.Faulted() != 3 {
		t.Fatalf("faulted %d, want 3", p.Faulted())
	}
	// The next PUT passes whole.
	if code, err := signedPut(t, p, parts, "farm/whole.bin", body); err != nil || code != http.StatusOK {
		t.Fatalf("PUT after the faults: %d %v", code, err)
	}
	if a, err := parts.Attributes(ctx, "farm/whole.bin"); err != nil || a.Size != int64(len(body)) {
		t.Fatalf("after a whole PUT the object is %+v (%v)", a, err)
	}
}
