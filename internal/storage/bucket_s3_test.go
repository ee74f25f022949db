//go:build storage

package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/framefarm/framefarm/internal/storage/storagetest"
)

// openS3Prefix starts versitygw with one bucket and opens the folder URL.
func openS3Prefix(t *testing.T, bucket, folder string) (*storagetest.S3, *Bucket, string) {
	t.Helper()
	s3 := storagetest.StartS3(t, bucket)
	bu, prefix, err := ParsePrefix(s3.URL(bucket, folder))
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenBucket(context.Background(), bu)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return s3, b, prefix
}

// TestBucketS3 lists a prefix, reads by ranges and sees an overwrite, on a
// real S3 server.
func TestBucketS3(t *testing.T) {
	ctx := context.Background()
	_, b, prefix := openS3Prefix(t, "frames", "shots/sh010/")
	if prefix != "shots/sh010/" {
		t.Fatalf("prefix %q", prefix)
	}
	data := randomBytes(3*readBlock+1234, 2)
	for key, body := range map[string][]byte{
		"shots/sh010/f_0001.png":       data,
		"shots/sh010/f_0002.png":       []byte("two"),
		"shots/sh010/old/f_0001.png":   []byte("in a sub-folder"),
		"shots/sh0100/f_0001.png":      []byte("a sibling folder with the same start"),
		"shots/sh010.png":              []byte("beside the folder"),
		"shots/sh010/deeper/x/f_9.png": []byte("deeper"),
	} {
		if err := b.Put(ctx, key, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := b.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].Key != "shots/sh010/f_0001.png" || objs[1].Key != "shots/sh010/f_0002.png" ||
		objs[0].Size != int64(len(data)) || objs[1].Size != 3 {
		t.Fatalf("List = %+v", objs)
	}
	for _, o := range objs {
		a, err := b.Attributes(ctx, o.Key)
		if err != nil || o.ETag == "" || strings.Contains(o.ETag, `"`) || a.ETag != o.ETag || a.Size != o.Size {
			t.Fatalf("%s: listed %+v, attributes %+v, %v", o.Key, o, a, err)
		}
		if o.ModTime.IsZero() {
			t.Fatalf("%s: no time in the listing", o.Key)
		}
	}

	o := objs[0]
	ra := b.ReaderAt(ctx, o.Key, o.Size, o.ETag)
	checkReaderAt(t, ra, data)
	// A header read: the first 16 bytes, then bufio's 4 KiB, then the
	// last 12 bytes (a PNG's end): one request for the first block, one
	// for the last.
	ra = b.ReaderAt(ctx, o.Key, o.Size, o.ETag)
	for _, c := range []struct{ off, n int64 }{{0, 16}, {0, 4096}, {4096, 4096}, {o.Size - 12, 12}} {
		if _, err := ra.ReadAt(make([]byte, c.n), c.off); err != nil {
			t.Fatal(err)
		}
	}
	if n := ra.(*objectReaderAt).fetches; n != 2 {
		t.Fatalf("a header and end read took %d requests, want 2", n)
	}

	r, err := b.Open(ctx, o.Key, o.Size, o.ETag)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Open read %d bytes, %v", len(got), err)
	}

	// Overwritten with other bytes of the same size: only the ETag tells.
	ra = b.ReaderAt(ctx, o.Key, o.Size, o.ETag)
	if _, err := ra.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, o.Key, bytes.NewReader(randomBytes(len(data), 3))); err != nil {
		t.Fatal(err)
	}
	if _, err := ra.ReadAt(make([]byte, 10), 2*readBlock); !errors.Is(err, ErrChanged) {
		t.Fatalf("ReadAt after an overwrite = %v, want ErrChanged", err)
	}
	if _, err := b.Open(ctx, o.Key, o.Size, o.ETag); !errors.Is(err, ErrChanged) {
		t.Fatalf("Open after an overwrite = %v, want ErrChanged", err)
	}
	// Errors name the object, never the secret.
	_, missing := b.ReaderAt(ctx, prefix+"f_0404.png", 10, "").ReadAt(make([]byte, 4), 0)
	if missing == nil || !strings.Contains(missing.Error(), "s3://frames/shots/sh010/f_0404.png") || strings.Contains(missing.Error(), storagetest.Secret) {
		t.Fatalf("ReadAt of a missing object = %v", missing)
	}
	if err := b.Delete(ctx, o.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Attributes(ctx, o.Key); err == nil {
		t.Fatal("deleted object still there")
	}
}

// TestBucketS3SignedURL: pre-signed GET and PUT URLs work with a plain HTTP
// client (no Content-Type on the PUT, as curl -T sends none), and stop
// working once expired.
func TestBucketS3SignedURL(t *testing.T) {
	ctx := context.Background()
	_, b, prefix := openS3Prefix(t, "frames", "shots/sh010/")
	data := randomBytes(200000, 4)
	key := prefix + "f_0001.png"
	if err := b.Put(ctx, key, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	get, err := b.SignedURL(ctx, key, http.MethodGet, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(get)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET by signed URL: %s, %d bytes, %v", resp.Status, len(got), err)
	}

	part := randomBytes(300000, 5)
	partKey := "parts/job1/set0.mkv"
	put, err := b.SignedURL(ctx, partKey, http.MethodPut, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, put, bytes.NewReader(part))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := req.Header["Content-Type"]; ok {
		t.Fatal("the request has a Content-Type")
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT by signed URL: %s: %s", resp.Status, body)
	}
	a, err := b.Attributes(ctx, partKey)
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Open(ctx, partKey, a.Size, a.ETag)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, part) {
		t.Fatalf("object PUT by signed URL: %d bytes, %v", len(got), err)
	}

	// A PUT with a Content-Type is accepted too (the URL signs none).
	req, _ = http.NewRequest(http.MethodPut, put, bytes.NewReader(part[:1000]))
	req.Header.Set("Content-Type", "video/x-matroska")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Logf("PUT with a Content-Type by a URL signed without: %s", resp.Status)

	// The signature carries the secret's work, never the secret.
	if strings.Contains(get, storagetest.Secret) || strings.Contains(put, storagetest.Secret) {
		t.Fatal("a signed URL holds the secret")
	}

	short, err := b.SignedURL(ctx, key, http.MethodGet, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	resp, err = http.Get(short)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET by an expired signed URL: %s, want 403", resp.Status)
	}
}
