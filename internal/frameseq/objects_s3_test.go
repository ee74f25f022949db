//go:build storage

package frameseq

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/framefarm/framefarm/internal/storage"
	"github.com/framefarm/framefarm/internal/storage/storagetest"
)

// TestScanObjectsS3 scans ffmpeg's PNG frames in a real S3 bucket through
// storage.Bucket: List one level, ReaderAt for the headers.
func TestScanObjectsS3(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Fatalf("ffmpeg is required (run scripts/install-deps.sh): %v", err)
	}
	dir := t.TempDir()
	out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=24", "-frames:v", "12",
		"-start_number", "1001", filepath.Join(dir, "sh010_%04d.png")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	s3 := storagetest.StartS3(t, "frames")
	ctx := context.Background()
	raw := s3.URL("frames", "shots/sh010/")
	bu, prefix, err := storage.ParsePrefix(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := storage.OpenBucket(ctx, bu)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	names, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil || len(names) != 12 {
		t.Fatalf("%d frames, %v", len(names), err)
	}
	put := func(key string, body []byte) {
		t.Helper()
		if err := b.Put(ctx, key, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		put(prefix+filepath.Base(n), data)
	}
	// A sub-folder holding an older render of the same frames is not listed.
	put(prefix+"v1/sh010_1013.png", []byte("not a frame of this folder"))
	put(prefix+"README.txt", []byte("notes"))

	where := storage.Redact(raw)
	list := func() []storage.Object {
		listed, err := b.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		return listed
	}
	scanListed := func(listed []storage.Object) (*Sequence, error) {
		objs := make([]Object, len(listed))
		for i, o := range listed {
			name := strings.TrimPrefix(o.Key, prefix)
			objs[i] = Object{Name: name, Size: o.Size, ModTime: o.ModTime, ETag: o.ETag}
		}
		s, err := ScanObjects(where, objs, func(o Object) (io.ReaderAt, error) {
			return b.ReaderAt(ctx, prefix+o.Name, o.Size, o.ETag), nil
		}, Options{})
		return s, err
	}
	listed := list()
	s, err := scanListed(listed)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 13 {
		t.Fatalf("listed %d objects, want 12 frames and the README", len(listed))
	}
	if s.Dir != where || len(s.Frames) != 12 || s.First() != 1001 || s.Last() != 1012 || s.Width != 320 || s.Height != 240 ||
		s.Pattern.String() != "sh010_####.png" {
		t.Fatalf("sequence %q %v %d frames %d-%d %dx%d", s.Dir, s.Pattern, len(s.Frames), s.First(), s.Last(), s.Width, s.Height)
	}
	for _, f := range s.Frames {
		a, err := b.Attributes(ctx, prefix+f.Name)
		if err != nil || f.ETag == "" || f.ETag != a.ETag || f.Size != a.Size {
			t.Fatalf("%s: frame %+v, object %+v, %v", f.Name, f, a, err)
		}
	}

	// A frame cut short in the bucket (an interrupted upload of a render)
	// is refused by name.
	data, err := os.ReadFile(names[4])
	if err != nil {
		t.Fatal(err)
	}
	put(prefix+path.Base(names[4]), data[:len(data)/2])
	_, err = scanListed(list())
	if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "sh010_1005.png (frame 1005): cut short") ||
		!strings.Contains(err.Error(), `"`+where+`"`) || strings.Contains(err.Error(), storagetest.Secret) {
		t.Fatalf("scan with a cut frame = %v", err)
	}

	// A frame overwritten (same size) between the listing and the header
	// reads is refused as changed, not as a bad image.
	listed = list()
	other := bytes.Clone(data[:len(data)/2]) // the size listed
	other[len(other)-100] ^= 0xff
	put(prefix+path.Base(names[4]), other)
	_, err = scanListed(listed)
	if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "sh010_1005.png (frame 1005): cannot read it: ") ||
		!strings.Contains(err.Error(), storage.ErrChanged.Error()) {
		t.Fatalf("scan of a frame changed since its listing = %v", err)
	}
	t.Log(err)
}
