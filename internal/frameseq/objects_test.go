package frameseq

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testWhere = "s3://frames/shots/sh010/?endpoint=http://127.0.0.1:9000"

// memBucket is an in-memory listing: objects, their bytes, and a count of
// opens and of the reads in flight at most.
type memBucket struct {
	objs    []Object
	content map[string][]byte
	opens   atomic.Int64
	mu      sync.Mutex
	openErr map[string]error
}

func newMemBucket(files ...file) *memBucket {
	m := &memBucket{content: map[string][]byte{}, openErr: map[string]error{}}
	t0 := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	for i, f := range files {
		m.objs = append(m.objs, Object{Name: f.name, Size: int64(len(f.content)), ModTime: t0.Add(time.Duration(i) * time.Second),
			ETag: fmt.Sprintf("etag-%s", f.name)})
		m.content[f.name] = f.content
	}
	return m
}

func (m *memBucket) open(o Object) (io.ReaderAt, error) {
	name, size := o.Name, o.Size
	m.opens.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.openErr[name]; err != nil {
		return nil, err
	}
	c, ok := m.content[name]
	if !ok {
		return nil, fmt.Errorf("%s: no such object", name)
	}
	if int64(len(c)) != size {
		return nil, fmt.Errorf("%s: size %d, listed %d", name, len(c), size)
	}
	return bytes.NewReader(c), nil
}

func TestScanObjectsOK(t *testing.T) {
	p := pngBytes(t, 16, 8)
	files := frames(t, "sh010_", "%04d", p, backwards(seq(1001, 1040))...)
	files = append(files, file{name: "notes.txt", content: []byte("x")}, file{name: ".hidden_0001.png", content: p},
		file{name: "cover.png", content: p})
	m := newMemBucket(files...)
	s, err := ScanObjects(testWhere, m.objs, m.open, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir != testWhere || s.Pattern.String() != "sh010_####.png" || len(s.Frames) != 40 || s.First() != 1001 || s.Last() != 1040 ||
		s.Width != 16 || s.Height != 8 {
		t.Fatalf("sequence %s %v %d frames %d-%d %dx%d", s.Dir, s.Pattern, len(s.Frames), s.First(), s.Last(), s.Width, s.Height)
	}
	for i, f := range s.Frames {
		if f.Number != 1001+int64(i) || f.Name != fmt.Sprintf("sh010_%04d.png", f.Number) || f.ETag != "etag-"+f.Name ||
			f.Size != int64(len(p)) || f.ModTime.IsZero() || f.Dev != 0 || f.Ino != 0 {
			t.Fatalf("frame %d: %+v", i, f)
		}
	}
	if n := m.opens.Load(); n != 40 {
		t.Fatalf("%d objects opened, want the 40 frames", n)
	}

	// EXR is left to ffprobe: no object is opened.
	m = newMemBucket(frames(t, "f_", "%03d", []byte("not read"), seq(1, 5)...)...)
	m.content = nil
	for i := range m.objs {
		m.objs[i].Name = strings.Replace(m.objs[i].Name, ".png", ".exr", 1)
	}
	if s, err := ScanObjects(testWhere, m.objs, m.open, Options{}); err != nil || len(s.Frames) != 5 || s.Width != 0 || m.opens.Load() != 0 {
		t.Fatalf("EXR listing: %v, %d opens", err, m.opens.Load())
	}
}

func TestScanObjectsErrors(t *testing.T) {
	p := pngBytes(t, 16, 8)
	big := pngBytes(t, 32, 8)
	cut := p[:len(p)-12]
	var gray bytes.Buffer
	if err := png.Encode(&gray, image.NewGray(image.Rect(0, 0, 16, 8))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		files   []file
		openErr map[string]error
		want    error
		msg     []string
	}{
		{name: "empty listing", want: ErrNoFrames, msg: []string{"the folder is empty"}},
		{name: "no numbered images", files: []file{{name: "a.txt", content: p}, {name: "cover.png", content: p}},
			want: ErrNoFrames, msg: []string{"without a frame number", "cover.png"}},
		{name: "gaps", files: frames(t, "f_", "%04d", p, without(seq(1, 20), 5, 6, 7, 12)...),
			want: ErrGaps, msg: []string{"4 frames missing", "5-7, 12", "f_0001.png", "f_0020.png"}},
		{name: "duplicates", files: append(frames(t, "f_", "%03d", p, seq(1, 5)...), file{name: "f_0003.png", content: p}),
			want: ErrDuplicate, msg: []string{"frame 3 is in 2 files: f_0003.png and f_003.png"}},
		{name: "two patterns", files: append(frames(t, "a_", "%03d", p, seq(1, 5)...), frames(t, "b_", "%03d", p, seq(1, 3)...)...),
			want: ErrMixedPatterns, msg: []string{`"a_###.png" (5 frames`, "--pattern"}},
		{name: "mixed sizes", files: append(frames(t, "f_", "%03d", p, seq(1, 5)...), frames(t, "f_", "%03d", big, 6)...),
			want: ErrMixedDimensions, msg: []string{"f_006.png (frame 6) is 32x8", "16x8"}},
		{name: "mixed pixel formats", files: append(frames(t, "f_", "%03d", p, seq(1, 5)...), frames(t, "f_", "%03d", gray.Bytes(), 6)...),
			want: ErrMixedPixelFormats, msg: []string{"f_006.png (frame 6) is 8-bit gray"}},
		{name: "empty object", files: append(frames(t, "f_", "%03d", p, seq(1, 5)...), frames(t, "f_", "%03d", nil, 6)...),
			want: ErrUnreadable, msg: []string{"f_006.png (frame 6): the file is empty (0 bytes)"}},
		{name: "bad header", files: append(frames(t, "f_", "%03d", p, seq(1, 5)...), frames(t, "f_", "%03d", []byte("GIF89a not a frame"), 6)...),
			want: ErrUnreadable, msg: []string{"f_006.png (frame 6): not an image", `"GIF89a`}},
		{name: "cut short", files: append(frames(t, "f_", "%03d", p, seq(1, 5)...), frames(t, "f_", "%03d", cut, 6)...),
			want: ErrUnreadable, msg: []string{"f_006.png (frame 6): cut short", "IEND"}},
		{name: "header cut short", files: append(frames(t, "f_", "%03d", p, seq(1, 5)...), frames(t, "f_", "%03d", p[:20], 6)...),
			want: ErrUnreadable, msg: []string{"f_006.png (frame 6): cut short", "ends inside its image header"}},
		{name: "open fails", files: frames(t, "f_", "%03d", p, seq(1, 5)...),
			openErr: map[string]error{"f_002.png": errors.New("connection reset")},
			want:    ErrUnreadable, msg: []string{"f_002.png (frame 2): cannot open it: connection reset"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMemBucket(c.files...)
			for k, v := range c.openErr {
				m.openErr[k] = v
			}
			_, err := ScanObjects(testWhere, m.objs, m.open, Options{})
			if !errors.Is(err, c.want) {
				t.Fatalf("ScanObjects = %v, want %v", err, c.want)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, fmt.Sprintf("%q", testWhere)) {
				t.Errorf("the message does not name the listing: %s", msg)
			}
			for _, w := range c.msg {
				if !strings.Contains(msg, w) {
					t.Errorf("the message lacks %q: %s", w, msg)
				}
			}
		})
	}
}

// failingAt fails every read after the first bytes, as a bucket whose
// connection drops (or whose object changed) does.
type failingAt struct {
	r   *bytes.Reader
	err error
}

func (f failingAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= 16 {
		return 0, f.err
	}
	return f.r.ReadAt(p[:min(len(p), int(16-off))], off)
}

// TestScanObjectsReadError: a read that fails is reported as one, not as a
// bad header.
func TestScanObjectsReadError(t *testing.T) {
	p := pngBytes(t, 16, 8)
	m := newMemBucket(frames(t, "f_", "%03d", p, seq(1, 3)...)...)
	changed := errors.New("object changed: its ETag is now \"b\"")
	open := func(o Object) (io.ReaderAt, error) {
		if o.Name == "f_002.png" {
			return failingAt{bytes.NewReader(p), changed}, nil
		}
		return m.open(o)
	}
	_, err := ScanObjects(testWhere, m.objs, open, Options{})
	if !errors.Is(err, ErrUnreadable) || !strings.Contains(err.Error(), "f_002.png (frame 2): cannot read it: object changed") {
		t.Fatalf("ScanObjects = %v", err)
	}
}

// backwards is ns in the opposite order: a listing need not be sorted by
// frame number.
func backwards(ns []int64) []int64 {
	out := make([]int64, 0, len(ns))
	for i := len(ns) - 1; i >= 0; i-- {
		out = append(out, ns[i])
	}
	return out
}
