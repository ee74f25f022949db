package frameseq

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		number int64
		digits int
		ext    string
		ok     bool
	}{
		{"shot_0001.png", "shot_", 1, 4, "png", true},
		{"shot_v2_0012.png", "shot_v2_", 12, 4, "png", true},
		{"seq010_v3.1001.exr", "seq010_v3.", 1001, 4, "exr", true},
		{"0001.png", "", 1, 4, "png", true},
		{"0.png", "", 0, 1, "png", true},
		{"000.png", "", 0, 3, "png", true},
		{"f_999.png", "f_", 999, 3, "png", true},
		{"f_1000.png", "f_", 1000, 4, "png", true},
		{"SHOT_0007.PNG", "SHOT_", 7, 4, "png", true},
		{"shot_0007.JpEg", "shot_", 7, 4, "jpeg", true},
		{"render 12.tif", "render ", 12, 2, "tif", true},
		{"f-5.png", "f-", 5, 1, "png", true}, // no negative frame numbers: "-" is prefix
		{"f_0001.tar.gz", "", 0, 0, "", false},
		{"image.png", "", 0, 0, "", false},
		{"f_0001_final.png", "", 0, 0, "", false},
		{".png", "", 0, 0, "", false},
		{".f_0001.png", "", 0, 0, "", false},
		{"._f_0001.png", "", 0, 0, "", false},
		{".DS_Store", "", 0, 0, "", false},
		{"f_0001", "", 0, 0, "", false},
		{"f_0001.", "", 0, 0, "", false},
		{"f_0001.png~", "", 0, 0, "", false},
		{"f_0001.p g", "", 0, 0, "", false},
		{"dir/f_0001.png", "", 0, 0, "", false},
		{"", "", 0, 0, "", false},
		{"9223372036854775807.png", "", 9223372036854775807, 19, "png", true},
		{"f_9223372036854775808.png", "", 0, 0, "", false},
		{"f_99999999999999999999999.png", "", 0, 0, "", false},
		{"f_00000000000000000000000042.png", "f_", 42, 26, "png", true},
		{"\u0663\u0664.png", "", 0, 0, "", false}, // Arabic-Indic digits are not ASCII digits
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix, number, digits, ext, ok := ParseName(tt.name)
			if ok != tt.ok {
				t.Fatalf("ParseName(%q) ok = %v, want %v", tt.name, ok, tt.ok)
			}
			if !ok {
				return
			}
			if prefix != tt.prefix || number != tt.number || digits != tt.digits || ext != tt.ext {
				t.Errorf("ParseName(%q) = %q, %d, %d, %q; want %q, %d, %d, %q",
					tt.name, prefix, number, digits, ext, tt.prefix, tt.number, tt.digits, tt.ext)
			}
		})
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{
		"shot_0001.png", "shot_v2_0012.png", "0001.png", "F_1.PNG", ".png", "f_.png",
		"f_9223372036854775808.png", "a.b.7.exr", "x00", "0.0", "é_01.tga", "f_0001.p\xffg",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		prefix, number, digits, ext, ok := ParseName(name)
		if !ok {
			return
		}
		if digits < 1 || number < 0 || ext == "" {
			t.Fatalf("ParseName(%q) = %q, %d, %d, %q: bad parts", name, prefix, number, digits, ext)
		}
		if strings.HasPrefix(name, ".") || strings.Contains(name, "/") {
			t.Fatalf("ParseName(%q) accepted a hidden name or a path", name)
		}
		if prefix != "" && isDigit(prefix[len(prefix)-1]) {
			t.Fatalf("ParseName(%q): prefix %q ends with a digit: not the whole digit run", name, prefix)
		}
		for i := 0; i < len(ext); i++ {
			if !isDigit(ext[i]) && (ext[i] < 'a' || ext[i] > 'z') {
				t.Fatalf("ParseName(%q): ext %q is not lowercase ASCII letters and digits", name, ext)
			}
		}
		// Round trip: the number zero-padded to its digit count, between the
		// prefix and the extension, gives the name back (extension case aside).
		num := fmt.Sprintf("%0*d", digits, number)
		if len(num) != digits {
			t.Fatalf("ParseName(%q): number %d does not fit in %d digits", name, number, digits)
		}
		rebuilt := prefix + num + "." + ext
		if len(rebuilt) != len(name) || !strings.HasPrefix(name, prefix+num+".") || !strings.EqualFold(name[len(name)-len(ext):], ext) {
			t.Fatalf("ParseName(%q) = %q, %d, %d, %q: rebuilt %q", name, prefix, number, digits, ext, rebuilt)
		}
		// And the rebuilt name parses to the same parts.
		p2, n2, d2, e2, ok2 := ParseName(rebuilt)
		if !ok2 || p2 != prefix || n2 != number || d2 != digits || e2 != ext {
			t.Fatalf("ParseName(%q) = %q, %d, %d, %q, %v; want %q, %d, %d, %q", rebuilt, p2, n2, d2, e2, ok2, prefix, number, digits, ext)
		}
	})
}

func TestPatternString(t *testing.T) {
	tests := []struct {
		p    Pattern
		want string
	}{
		{Pattern{"shot_", 4, "png"}, "shot_####.png"},
		{Pattern{"shot_", 0, "png"}, "shot_#.png"},
		{Pattern{"", 3, "exr"}, "###.exr"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestPadding(t *testing.T) {
	tests := []struct {
		names []string
		want  int
	}{
		{[]string{"f_0001.png", "f_0002.png", "f_0010.png"}, 4},
		{[]string{"f_1001.png", "f_1002.png"}, 4},
		{[]string{"f_0998.png", "f_0999.png", "f_1000.png", "f_10000.png"}, 4},
		{[]string{"f_1.png", "f_2.png", "f_10.png"}, 0},
		{[]string{"f_999.png", "f_1000.png"}, 0},
		{[]string{"f_1.png", "f_2.png"}, 0},
		{[]string{"f_01.png", "f_002.png"}, 0},
		{[]string{"f_001.png", "f_12.png"}, 0},
		{[]string{"f_000.png", "f_001.png"}, 3},
	}
	for _, tt := range tests {
		var cands []*candidate
		for _, n := range tt.names {
			p, num, d, x, ok := ParseName(n)
			if !ok {
				t.Fatalf("ParseName(%q) not ok", n)
			}
			cands = append(cands, &candidate{name: n, prefix: p, number: num, digits: d, ext: x})
		}
		if got := padding(cands); got != tt.want {
			t.Errorf("padding(%v) = %d, want %d", tt.names, got, tt.want)
		}
	}
}

func TestFormatRanges(t *testing.T) {
	tests := []struct {
		ranges [][2]int64
		max    int
		want   string
	}{
		{[][2]int64{{1005, 1009}, {1200, 1200}}, 10, "1005-1009, 1200"},
		{[][2]int64{{1, 1}, {3, 3}, {5, 6}, {8, 8}}, 2, "1, 3 ... and 2 more"},
		{nil, 10, ""},
	}
	for _, tt := range tests {
		if got := formatRanges(tt.ranges, tt.max); got != tt.want {
			t.Errorf("formatRanges(%v, %d) = %q, want %q", tt.ranges, tt.max, got, tt.want)
		}
	}
}

func TestHashPattern(t *testing.T) {
	for in, want := range map[string]string{
		"f_%04d.png": "f_####.png",
		"f_%d.png":   "f_#.png",
		"f_####.png": "f_####.png",
		"f_%s.png":   "f_%s.png",
		"100%":       "100%",
	} {
		if got := hashPattern(in); got != want {
			t.Errorf("hashPattern(%q) = %q, want %q", in, got, want)
		}
	}
}

// Image files for the tests.

func pngBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func tiffBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tiff.Encode(&b, image.NewRGBA(image.Rect(0, 0, w, h)), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func bmpBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := bmp.Encode(&b, image.NewRGBA(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// file is one entry of a test folder: a file with content, a folder
// (dir), or a symbolic link (link holds its target).
type file struct {
	name    string
	content []byte
	dir     bool
	link    string
}

func makeDir(t *testing.T, files ...file) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		var err error
		switch {
		case f.dir:
			err = os.Mkdir(p, 0o755)
		case f.link != "":
			err = os.Symlink(f.link, p)
		default:
			err = os.WriteFile(p, f.content, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// frames returns PNG files prefix+number+".png" for the numbers, in the
// order given, with printf format numFmt ("%04d", "%d").
func frames(t testing.TB, prefix, numFmt string, content []byte, numbers ...int64) []file {
	var out []file
	for _, n := range numbers {
		out = append(out, file{name: prefix + fmt.Sprintf(numFmt, n) + ".png", content: content})
	}
	return out
}

func seq(from, to int64) []int64 {
	var out []int64
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}

func without(ns []int64, drop ...int64) []int64 {
	var out []int64
	for _, n := range ns {
		keep := true
		for _, d := range drop {
			keep = keep && n != d
		}
		if keep {
			out = append(out, n)
		}
	}
	return out
}

func names(s *Sequence) []string {
	var out []string
	for _, f := range s.Frames {
		out = append(out, f.Name)
	}
	return out
}

func TestScanOK(t *testing.T) {
	p16 := pngBytes(t, 16, 8)
	j16 := jpegBytes(t, 16, 8)
	bmpRLE := bmpBytes(t, 6, 4)
	bmpRLE[30] = 1 // BI_RLE8: valid BMP, but not for Go's decoder
	reversed := func(ns []int64) []int64 {
		out := make([]int64, len(ns))
		for i, n := range ns {
			out[len(ns)-1-i] = n
		}
		return out
	}
	tests := []struct {
		name      string
		files     []file
		opts      Options
		pattern   string
		first     int64
		count     int
		w, h      int
		wantNames []string // first names expected, when set
		gaps      [][2]int64
	}{
		{
			name: "start 1001, created in reverse order",
			files: append(frames(t, "shot_", "%04d", p16, reversed(seq(1001, 1030))...),
				file{name: "notes.txt", content: []byte("hello")},
				file{name: ".hidden_0001.png", content: []byte("x")},
				file{name: "sub", dir: true},
				file{name: "cover.png", content: p16},
			),
			pattern: "shot_####.png", first: 1001, count: 30, w: 16, h: 8,
			wantNames: []string{"shot_1001.png", "shot_1002.png"},
		},
		{
			name:    "unpadded sorts numerically",
			files:   frames(t, "f_", "%d", p16, 1000, 999, 1001, 998),
			pattern: "f_#.png", first: 998, count: 4, w: 16, h: 8,
			wantNames: []string{"f_998.png", "f_999.png", "f_1000.png", "f_1001.png"},
		},
		{
			name:    "padded, 999 to 1000",
			files:   frames(t, "f_", "%04d", p16, 998, 999, 1000, 1001),
			pattern: "f_####.png", first: 998, count: 4, w: 16, h: 8,
			wantNames: []string{"f_0998.png", "f_0999.png", "f_1000.png", "f_1001.png"},
		},
		{
			name: "jpeg, no prefix, uppercase extension",
			files: []file{
				{name: "0002.JPG", content: j16}, {name: "0001.JPG", content: j16}, {name: "0003.JPG", content: j16},
			},
			pattern: "####.jpg", first: 1, count: 3, w: 16, h: 8,
			wantNames: []string{"0001.JPG", "0002.JPG", "0003.JPG"},
		},
		{
			name: "tiff",
			files: []file{
				{name: "plate.0001.tif", content: tiffBytes(t, 20, 10)}, {name: "plate.0002.tif", content: tiffBytes(t, 20, 10)},
			},
			pattern: "plate.####.tif", first: 1, count: 2, w: 20, h: 10,
		},
		{
			name: "bmp, one with a compression Go cannot describe",
			files: []file{
				{name: "b_01.bmp", content: bmpBytes(t, 6, 4)}, {name: "b_02.bmp", content: bmpRLE},
			},
			pattern: "b_##.bmp", first: 1, count: 2, // size unknown: left to ffprobe
		},
		{
			name: "exr is not header-checked",
			files: []file{
				{name: "sim.0001.exr", content: []byte("not checked")}, {name: "sim.0002.exr", content: []byte("not checked")},
			},
			pattern: "sim.####.exr", first: 1, count: 2,
		},
		{
			name: "pattern picks one of two",
			files: append(frames(t, "a_", "%04d", p16, seq(1, 5)...),
				frames(t, "b_", "%04d", p16, seq(1, 3)...)...),
			opts:    Options{Pattern: "b_####.png"},
			pattern: "b_####.png", first: 1, count: 3, w: 16, h: 8,
		},
		{
			name: "pattern by prefix and by printf form",
			files: append(frames(t, "a_", "%04d", p16, seq(1, 5)...),
				frames(t, "b_", "%04d", p16, seq(1, 3)...)...),
			opts:    Options{Pattern: "a_%04d.PNG"},
			pattern: "a_####.png", first: 1, count: 5, w: 16, h: 8,
		},
		{
			name: "pattern by prefix",
			files: append(frames(t, "a_", "%04d", p16, seq(1, 5)...),
				frames(t, "b_", "%04d", p16, seq(1, 3)...)...),
			opts:    Options{Pattern: "b_"},
			pattern: "b_####.png", first: 1, count: 3, w: 16, h: 8,
		},
		{
			name:    "gaps allowed",
			files:   frames(t, "f_", "%04d", p16, without(seq(1, 20), 5, 6, 7, 12)...),
			opts:    Options{AllowGaps: true},
			pattern: "f_####.png", first: 1, count: 16, w: 16, h: 8,
			gaps: [][2]int64{{5, 7}, {12, 12}},
		},
		{
			name: "symlink inside the folder",
			files: append(frames(t, "f_", "%04d", p16, 1, 2),
				file{name: "sub", dir: true},
				file{name: "f_0003.png", link: "f_0002.png"}),
			pattern: "f_####.png", first: 1, count: 3, w: 16, h: 8,
		},
		{
			name: "symlink to a folder is ignored",
			files: append(frames(t, "f_", "%04d", p16, 1, 2),
				file{name: "sub", dir: true},
				file{name: "f_0009.png", link: "sub"}),
			pattern: "f_####.png", first: 1, count: 2, w: 16, h: 8,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeDir(t, tt.files...)
			s, err := Scan(dir, tt.opts)
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if got := s.Pattern.String(); got != tt.pattern {
				t.Errorf("pattern %q, want %q", got, tt.pattern)
			}
			if len(s.Frames) != tt.count || s.First() != tt.first {
				t.Errorf("got %d frames from %d, want %d from %d: %v", len(s.Frames), s.First(), tt.count, tt.first, names(s))
			}
			for i := 1; i < len(s.Frames); i++ {
				if s.Frames[i].Number <= s.Frames[i-1].Number {
					t.Errorf("frames not sorted: %v", names(s))
					break
				}
			}
			for i, n := range tt.wantNames {
				if i >= len(s.Frames) || s.Frames[i].Name != n {
					t.Errorf("frames %v, want them to start with %v", names(s), tt.wantNames)
					break
				}
			}
			if s.Width != tt.w || s.Height != tt.h {
				t.Errorf("size %dx%d, want %dx%d", s.Width, s.Height, tt.w, tt.h)
			}
			for _, f := range s.Frames {
				if f.Size == 0 || f.ModTime.IsZero() {
					t.Errorf("frame %s: size %d, time %v", f.Name, f.Size, f.ModTime)
				}
			}
			if got := s.Gaps(); fmt.Sprint(got) != fmt.Sprint(tt.gaps) {
				t.Errorf("Gaps() = %v, want %v", got, tt.gaps)
			}
			if !filepath.IsAbs(s.Dir) {
				t.Errorf("Dir %q is not absolute", s.Dir)
			}
		})
	}
}

func TestScanErrors(t *testing.T) {
	p16 := pngBytes(t, 16, 8)
	p32 := pngBytes(t, 32, 16)
	j16 := jpegBytes(t, 16, 8)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.png"), p16, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files []file
		dir   func(t *testing.T) string // instead of files
		opts  Options
		is    error
		words []string // in the message
	}{
		{
			name:  "missing folder",
			dir:   func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") },
			is:    fs.ErrNotExist,
			words: []string{"nope", "does not exist", "--frames"},
		},
		{
			name: "a file, not a folder",
			dir: func(t *testing.T) string {
				p := filepath.Join(t.TempDir(), "f_0001.png")
				if err := os.WriteFile(p, p16, 0o644); err != nil {
					t.Fatal(err)
				}
				return p
			},
			is:    syscall.ENOTDIR,
			words: []string{"f_0001.png", "not a folder"},
		},
		{
			name:  "empty folder",
			is:    ErrNoFrames,
			words: []string{"no numbered images", "empty", "png, jpg", "exr"},
		},
		{
			name: "no numbered images",
			files: []file{
				{name: "notes.txt", content: []byte("x")}, {name: "clip.mov", content: []byte("x")},
				{name: "cover.png", content: p16}, {name: "f_0001.gif", content: []byte("x")},
				{name: ".DS_Store", content: []byte("x")}, {name: "renders_0001", dir: true},
			},
			is: ErrNoFrames,
			words: []string{"no numbered images", "6 entries", "supported extensions: png, jpg, jpeg, tif, tiff, exr, bmp, webp, dpx, tga",
				"3 files with other extensions", ".gif", ".mov", ".txt", "notes.txt", "1 image without a frame number", "cover.png",
				"1 hidden file", "1 subfolder"},
		},
		{
			name: "mixed patterns",
			files: append(append(frames(t, "shot_", "%04d", p16, seq(1, 10)...),
				frames(t, "test_", "%04d", p16, seq(1, 3)...)...),
				file{name: "shot_0001.jpg", content: j16}),
			is: ErrMixedPatterns,
			words: []string{"3 naming patterns", `"shot_####.png" (10 frames: shot_0001.png to shot_0010.png)`,
				`"test_####.png" (3 frames: test_0001.png to test_0003.png)`, `"shot_####.jpg" (1 frame: shot_0001.jpg)`,
				"use --pattern to pick one"},
		},
		{
			name: "prefix matches two patterns",
			files: append(frames(t, "shot_", "%04d", p16, seq(1, 2)...),
				file{name: "shot_0001.jpg", content: j16}),
			opts:  Options{Pattern: "shot_"},
			is:    ErrMixedPatterns,
			words: []string{"2 naming patterns", "shot_####.png", "shot_####.jpg", "--pattern"},
		},
		{
			name:  "pattern matches nothing",
			files: frames(t, "shot_", "%04d", p16, seq(1, 2)...),
			opts:  Options{Pattern: "plate_####.png"},
			is:    ErrNoFrames,
			words: []string{`--pattern "plate_####.png" matches none`, `"shot_####.png" (2 frames: shot_0001.png to shot_0002.png)`},
		},
		{
			name: "duplicate frame numbers",
			files: append(frames(t, "f_", "%03d", p16, seq(1, 5)...),
				file{name: "f_01.png", content: p16}),
			is:    ErrDuplicate,
			words: []string{"frame 1 is in 2 files: f_001.png and f_01.png", "zero-padding", "remove or rename"},
		},
		{
			name: "duplicate by extension case",
			files: append(frames(t, "f_", "%04d", p16, seq(1, 3)...),
				file{name: "f_0002.PNG", content: p16}),
			is:    ErrDuplicate,
			words: []string{"frame 2 is in 2 files", "f_0002.PNG", "f_0002.png"},
		},
		{
			name:  "gaps",
			files: frames(t, "f_", "%04d", p16, append(without(seq(1001, 1210), append(seq(1005, 1009), 1200)...), 1300)...),
			is:    ErrGaps,
			words: []string{"1005-1009, 1200, 1211-1299", "95 frames missing", "f_1001.png", "f_1300.png", "--gaps hold", "--gaps skip"},
		},
		{
			name:  "many gaps are capped",
			files: frames(t, "f_", "%04d", p16, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27),
			is:    ErrGaps,
			words: []string{"2, 4, 6, 8, 10, 12, 14, 16, 18, 20 ... and 3 more", "13 frames missing"},
		},
		{
			name: "mixed dimensions",
			files: append(frames(t, "f_", "%04d", p16, 1, 2, 4, 5),
				file{name: "f_0003.png", content: p32}),
			is:    ErrMixedDimensions,
			words: []string{"4 of 5 frames are 16x8", "f_0003.png (frame 3) is 32x16", "--scale 16x8"},
		},
		{
			name: "truncated png header",
			files: append(frames(t, "f_", "%04d", p16, 1, 2, 4),
				file{name: "f_0003.png", content: p16[:20]}),
			is:    ErrUnreadable,
			words: []string{"f_0003.png (frame 3)", "cut short", "re-render"},
		},
		{
			name: "truncated png data",
			files: append(frames(t, "f_", "%04d", p16, 1, 2, 4),
				file{name: "f_0003.png", content: p16[:len(p16)-20]}),
			is:    ErrUnreadable,
			words: []string{"f_0003.png (frame 3)", "IEND", "re-render"},
		},
		{
			name: "text file named png",
			files: append(frames(t, "f_", "%04d", p16, 1, 2, 4),
				file{name: "f_0003.png", content: []byte("this is not an image\n")}),
			is:    ErrUnreadable,
			words: []string{"f_0003.png (frame 3)", "not an image", "this is not an"},
		},
		{
			name: "empty exr",
			files: []file{
				{name: "sim.0001.exr", content: []byte("x")}, {name: "sim.0002.exr"},
			},
			is:    ErrUnreadable,
			words: []string{"sim.0002.exr (frame 2)", "empty (0 bytes)"},
		},
		{
			name: "symlink escaping the folder",
			files: append(frames(t, "f_", "%04d", p16, 1, 2),
				file{name: "f_0003.png", link: filepath.Join(outside, "secret.png")}),
			is:    ErrOutsideDir,
			words: []string{"f_0003.png (frame 3)", "secret.png", "outside the frames folder", "copy those files into the folder"},
		},
		{
			name: "relative symlink escaping the folder",
			files: append(frames(t, "f_", "%04d", p16, 1, 2),
				file{name: "f_0003.png", link: "../../etc/passwd"}),
			is:    ErrOutsideDir,
			words: []string{"f_0003.png (frame 3)", "outside the frames folder", "copy those files into the folder"},
		},
		{
			name: "broken symlink",
			files: append(frames(t, "f_", "%04d", p16, 1, 2),
				file{name: "f_0003.png", link: "gone.png"}),
			is:    ErrUnreadable,
			words: []string{"f_0003.png (frame 3)", "gone.png", "broken"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dir string
			if tt.dir != nil {
				dir = tt.dir(t)
			} else {
				dir = makeDir(t, tt.files...)
			}
			s, err := Scan(dir, tt.opts)
			if err == nil {
				t.Fatalf("Scan succeeded with %d frames, want an error", len(s.Frames))
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error is not %v: %v", tt.is, err)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, dir) {
				t.Errorf("error does not name the folder %q: %v", dir, msg)
			}
			for _, w := range tt.words {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q: %v", w, msg)
				}
			}
		})
	}
}

// TestScanUnreadableFolder needs a folder its user cannot read: not as root.
func TestScanUnreadableFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every folder")
	}
	dir := makeDir(t, frames(t, "f_", "%04d", pngBytes(t, 4, 4), 1, 2)...)
	if err := os.Chmod(dir, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	_, err := Scan(dir, Options{})
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Scan of an unreadable folder: %v", err)
	}
}

func BenchmarkScan(b *testing.B) {
	dir := b.TempDir()
	p := pngBytes(b, 8, 8)
	for n := range 10000 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f_%06d.png", n)), p, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := Scan(dir, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
