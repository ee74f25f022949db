//go:build storage

package storage

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/framefarm/framefarm/internal/storage/storagetest"
)

// roundTrip puts a file of a little over two upload chunks (GCS writes 16
// MiB chunks, Azure 8 MiB blocks) at url, then checks Stat and Open give it
// back byte for byte, and that a missing object and a missing bucket are
// errors that name no secret.
func roundTrip(t *testing.T, url, missingObject, missingBucket, secret string) {
	t.Helper()
	want := make([]byte, 17<<20+12345)
	r := rand.NewChaCha8([32]byte{15})
	_, _ = r.Read(want)
	src := filepath.Join(t.TempDir(), "final.mkv")
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	loc, err := Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := PutFile(ctx, src, loc); err != nil {
		t.Fatal(err)
	}
	a, err := Stat(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != int64(len(want)) || a.ContentType != "video/x-matroska" {
		t.Fatalf("attributes: size %d, content type %q", a.Size, a.ContentType)
	}
	rc, err := Open(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes of %d, equal %v, %v", len(got), len(want), bytes.Equal(got, want), err)
	}
	for _, c := range []struct {
		url  string
		code gcerrors.ErrorCode
	}{{missingObject, gcerrors.NotFound}, {missingBucket, gcerrors.NotFound}} {
		l, err := Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Stat(ctx, l)
		if gcerrors.Code(err) != c.code {
			t.Errorf("Stat(%s) = %v (code %v), want %v", c.url, err, gcerrors.Code(err), c.code)
		}
		if err != nil && secret != "" && strings.Contains(err.Error(), secret) {
			t.Errorf("Stat(%s) error shows the secret: %v", c.url, err)
		}
	}
}

// TestCloudGCS: gs:// through gocloud's gcsblob against a real
// fake-gcs-server.
func TestCloudGCS(t *testing.T) {
	g := storagetest.StartGCS(t, "finals")
	roundTrip(t, g.URL("finals", "shots/sh010/final.mkv"), g.URL("finals", "shots/none.mkv"), g.URL("nobucket", "final.mkv"), "")
	listedLikeAttributes(t, g.URL("finals", "shots/sh010/"))
}

// TestCloudAzurite: azblob:// through gocloud's azureblob, signed with a
// shared key from the environment, against a real Azurite.
func TestCloudAzurite(t *testing.T) {
	a := storagetest.StartAzurite(t, "finals")
	roundTrip(t, a.URL("finals", "shots/sh010/final.mkv"), a.URL("finals", "shots/none.mkv"), a.URL("nocontainer", "final.mkv"), storagetest.AzureKey)
	listedLikeAttributes(t, a.URL("finals", "shots/sh010/"))
}

// listedLikeAttributes: a folder's listing carries each object's ETag
// itself (List makes no request per object), and it is the ETag that
// Attributes, and so the checks of every later read, give.
func listedLikeAttributes(t *testing.T, folderURL string) {
	t.Helper()
	ctx := context.Background()
	bucketURL, prefix, err := ParsePrefix(folderURL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenBucket(ctx, bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	it := b.b.List(&blob.ListOptions{Prefix: prefix, Delimiter: "/"})
	n := 0
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if o.IsDir {
			continue
		}
		n++
		etag, ok := listETag(o)
		if !ok || etag == "" {
			t.Errorf("%s: the listing gives no ETag", o.Key)
			continue
		}
		a, err := b.Attributes(ctx, o.Key)
		if err != nil || a.ETag != etag {
			t.Errorf("%s: listed with ETag %q, its attributes say %q (%v)", o.Key, etag, a.ETag, err)
		}
	}
	if n == 0 {
		t.Fatalf("nothing listed under %s", folderURL)
	}
}
