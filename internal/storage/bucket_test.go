package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsePrefix(t *testing.T) {
	const q = "?endpoint=http://127.0.0.1:9000&region=us-east-1&use_path_style=true"
	for _, c := range []struct{ in, bucket, prefix string }{
		{"s3://b/shots/sh010/" + q, "s3://b" + q, "shots/sh010/"},
		{"s3://b/shots/sh010" + q, "s3://b" + q, "shots/sh010/"},
		{"s3://b/", "s3://b", ""},
		{"s3://b", "s3://b", ""},
		{"file:///srv/frames/", "file:///srv/frames/", ""},
		{"file:///srv/frames", "file:///srv/frames/", ""},
		{"file://localhost/srv/frames/", "file:///srv/frames/", ""},
		{"file:///", "file:///", ""},
		{"gs://b/shots/sh010", "gs://b", "shots/sh010/"},
		{"azblob://c/shots/?domain=127.0.0.1:10000&protocol=http", "azblob://c?domain=127.0.0.1:10000&protocol=http", "shots/"},
	} {
		b, p, err := ParsePrefix(c.in)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParsePrefix(%q) = %q, %q, %v; want %q, %q", c.in, b, p, err, c.bucket, c.prefix)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"s3:///shots/", "names no bucket: write s3://BUCKET/FOLDER/"},
		{"s3://AKIA:sekrit@b/shots/", "holds credentials: give them in the environment"},
		{"s3://b/shots/?aws_secret_access_key=sekrit", "holds credentials (aws_secret_access_key)"},
		{"s3://b/shots/?X-Amz-Signature=sekrit", "holds credentials"},
		{"s3://b//shots/", "empty folder name"},
		{"s3://b/shots//sh010/", "empty folder name"},
		{"azblob:///shots/", "names no container: write azblob://CONTAINER/FOLDER/"},
		{"gs://b/shots/?access_id=x&private_key_path=sekrit", "holds credentials"},
		{"ftp://b/shots/", `unknown storage scheme "ftp"`},
		{"file://host/srv/frames/", "write file:///FOLDER/"},
		{"file:frames/", "names no folder: write file:///FOLDER/"},
		{"shots/sh010/", "not a storage URL: write s3://BUCKET/FOLDER/ or file:///FOLDER/"},
		{"s3://b/%zz/", "is not a URL"},
	} {
		_, _, err := ParsePrefix(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePrefix(%q) = %v; want an error with %q", c.in, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "sekrit") || strings.Contains(err.Error(), "AKIA") {
			t.Errorf("ParsePrefix(%q) error shows the secret: %v", c.in, err)
		}
		// The message names the URL (redacted) it refuses.
		if !strings.Contains(err.Error(), Redact(c.in)) {
			t.Errorf("ParsePrefix(%q) error does not name the URL: %v", c.in, err)
		}
	}
}

// randomBytes is n bytes that differ at every offset, so a read from the
// wrong place shows.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// checkReaderAt reads data back through ra at offsets around the block
// boundaries and across them, and past the end.
func checkReaderAt(t *testing.T, ra io.ReaderAt, data []byte) {
	t.Helper()
	size := int64(len(data))
	for _, c := range []struct{ off, n int64 }{
		{0, 16}, {0, 4096}, {readBlock - 3, 10}, {readBlock, 1}, {readBlock - 1, 2 * readBlock},
		{10, 3*readBlock + 5}, {size - 12, 12}, {size - 4096, 4096}, {1, size - 1}, {5 * readBlock / 2, 100},
	} {
		if c.off < 0 || c.off+c.n > size {
			t.Fatalf("bad case %+v for %d bytes", c, size)
		}
		p := make([]byte, c.n)
		n, err := ra.ReadAt(p, c.off)
		if err != nil || int64(n) != c.n || !bytes.Equal(p, data[c.off:c.off+c.n]) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; bytes equal: %v", c.n, c.off, n, err, bytes.Equal(p[:n], data[c.off:c.off+int64(n)]))
		}
	}
	p := make([]byte, 20)
	n, err := ra.ReadAt(p, size-8)
	if n != 8 || err != io.EOF || !bytes.Equal(p[:8], data[size-8:]) {
		t.Fatalf("ReadAt across the end = %d, %v", n, err)
	}
	if n, err := ra.ReadAt(p, size); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end = %d, %v", n, err)
	}
}

// TestBucketFile runs the Bucket on the file:// driver: listing, ranged
// reads, changes seen, no signer.
func TestBucketFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := randomBytes(3*readBlock+1234, 1)
	if err := os.WriteFile(filepath.Join(dir, "f_0001.png"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f_0002.png"), []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "f_0003.png"), []byte("three"), 0o644); err != nil {
		t.Fatal(err)
	}
	bu, prefix, err := ParsePrefix("file://" + dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenBucket(ctx, bu)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	objs, err := b.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].Key != "f_0001.png" || objs[1].Key != "f_0002.png" || objs[0].Size != int64(len(data)) {
		t.Fatalf("List = %+v", objs)
	}
	for _, o := range objs {
		a, err := b.Attributes(ctx, o.Key)
		if err != nil || o.ETag == "" || a.ETag != o.ETag || strings.Contains(o.ETag, `"`) {
			t.Fatalf("%s: listed ETag %q, attributes %+v, %v", o.Key, o.ETag, a, err)
		}
	}
	ra := b.ReaderAt(ctx, objs[0].Key, objs[0].Size, objs[0].ETag)
	checkReaderAt(t, ra, data)

	_, err = b.SignedURL(ctx, "f_0001.png", http.MethodGet, time.Minute)
	if !errors.Is(err, ErrNoSigner) {
		t.Fatalf("SignedURL on file:// = %v, want ErrNoSigner", err)
	}

	// Overwritten (another size, another time): reads and Open refuse it.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "f_0001.png"), data[:len(data)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	ra = b.ReaderAt(ctx, objs[0].Key, objs[0].Size, objs[0].ETag)
	if _, err := ra.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "f_0001.png") {
		t.Fatalf("ReadAt of a changed object = %v, want ErrChanged naming it", err)
	}
	if _, err := b.Open(ctx, objs[0].Key, objs[0].Size, objs[0].ETag); !errors.Is(err, ErrChanged) {
		t.Fatalf("Open of a changed object = %v, want ErrChanged", err)
	}
	// Same size, new time: the ETag tells.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "f_0002.png"), []byte("TWO"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(ctx, objs[1].Key, objs[1].Size, objs[1].ETag); !errors.Is(err, ErrChanged) {
		t.Fatalf("Open of an object changed in place = %v, want ErrChanged", err)
	}

	// Put, Open, Delete.
	if err := b.Put(ctx, "out/part.mkv", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	a, err := b.Attributes(ctx, "out/part.mkv")
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Open(ctx, "out/part.mkv", a.Size, a.ETag)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if err := b.Delete(ctx, "out/part.mkv"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Attributes(ctx, "out/part.mkv"); err == nil {
		t.Fatal("deleted object still there")
	}
}

// failingReader fails after some bytes, as a broken upload source does.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("source broke")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

// TestBucketPutAbandoned: a source that fails leaves no object behind.
func TestBucketPutAbandoned(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenBucket(ctx, "file://"+dir+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(ctx, "half.mkv", &failingReader{n: 100000}); err == nil || !strings.Contains(err.Error(), "source broke") {
		t.Fatalf("Put of a failing source = %v", err)
	}
	if _, err := b.Attributes(ctx, "half.mkv"); err == nil {
		t.Fatal("a failed Put left an object")
	}
}
