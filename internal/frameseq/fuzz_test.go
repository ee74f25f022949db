package frameseq

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzPNG is a small valid PNG of w x h.
func fuzzPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	img.Set(0, 0, color.NRGBA{1, 2, 3, 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Kinds of folder entries FuzzScan creates, picked by the fuzzer per name.
const (
	kindPNG         = iota // a valid 4x4 PNG
	kindPNGOtherDim        // a valid 6x4 PNG
	kindEmpty              // a 0-byte file
	kindText               // a text file
	kindTruncated          // a PNG cut after its header
	kindDir                // a subfolder
	kindLinkInside         // a relative link to the first file made inside
	kindLinkOutside        // an absolute link to a PNG outside the folder
	kindLinkUp             // a relative link ../outside.png
	kindLinkBroken         // a link to nothing
	kindCount
)

// FuzzScan: whatever the names and contents of a folder's entries, Scan
// never panics, and either refuses the folder with an error that wraps one of
// its sentinel errors, or returns frames of one pattern, sorted strictly by
// number, each an existing regular file (or a link to one) inside the
// folder, with the checks its options ask for.
func FuzzScan(f *testing.F) {
	for _, s := range []struct {
		names   string
		kinds   []byte
		opts    byte
		pattern string
	}{
		{"f_0001.png/f_0002.png/f_0003.png", []byte{0}, 0, ""},
		{"f_0001.png/f_0003.png", []byte{0}, 0, ""},
		{"f_0001.png/f_0003.png", []byte{0}, 1, ""},
		{"f_1.png/f_2.png/f_10.png/g_1.png", []byte{0}, 4, "f_#.png"},
		{"a_001.png/a_002.png/a_003.png", []byte{0, 1, 0}, 2, ""},
		{"a_001.png/a_002.png/a_003.png", []byte{0, 1, 0}, 0, ""},
		{"x1.png/x2.png/x3.png/x4.png", []byte{0, 2, 3, 4}, 0, ""},
		{"s_01.png/s_02.png/s_03.png", []byte{0, 6, 7}, 0, ""},
		{"s_01.png/s_02.png/s_03.png", []byte{0, 8, 9}, 0, ""},
		{"s_01.png/s_02.png/s_03.png/s_04.png", []byte{0, 5, 6, 0}, 1, ""},
		{"f_01.png/f_001.png/F_0002.PNG/.f_0003.png/f_0004.exr", []byte{0}, 7, "f_"},
		{"0.png/9223372036854775807.png", []byte{0}, 0, ""},
		{"0.png/9223372036854775807.png", []byte{0}, 3, ""},
		{"shot.1001.exr/shot.1002.exr/notes.txt", []byte{3}, 0, ""},
		{"ü 'x' \"y\"_1.png/ü 'x' \"y\"_2.png", []byte{0}, 0, ""},
	} {
		f.Add(s.names, s.kinds, s.opts, s.pattern)
	}
	good := fuzzPNG(f, 4, 4)
	other := fuzzPNG(f, 6, 4)
	f.Fuzz(func(t *testing.T, names string, kinds []byte, opts byte, pattern string) {
		root := t.TempDir()
		dir := filepath.Join(root, "frames")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		outside := filepath.Join(root, "outside.png")
		if err := os.WriteFile(outside, good, 0o644); err != nil {
			t.Fatal(err)
		}
		firstFile := ""
		made := 0
		for i, name := range strings.Split(names, "/") {
			if made == 16 {
				break
			}
			if name == "" || name == "." || name == ".." || strings.IndexByte(name, 0) >= 0 || len(name) > 200 {
				continue
			}
			kind := kindPNG
			if len(kinds) > 0 {
				kind = int(kinds[i%len(kinds)]) % kindCount
			}
			p := filepath.Join(dir, name)
			if _, err := os.Lstat(p); err == nil {
				continue
			}
			var err error
			switch kind {
			case kindPNG:
				err = os.WriteFile(p, good, 0o644)
			case kindPNGOtherDim:
				err = os.WriteFile(p, other, 0o644)
			case kindEmpty:
				err = os.WriteFile(p, nil, 0o644)
			case kindText:
				err = os.WriteFile(p, []byte("not an image\n"), 0o644)
			case kindTruncated:
				err = os.WriteFile(p, good[:33], 0o644)
			case kindDir:
				err = os.Mkdir(p, 0o755)
			case kindLinkInside:
				if firstFile == "" {
					continue
				}
				err = os.Symlink(firstFile, p)
			case kindLinkOutside:
				err = os.Symlink(outside, p)
			case kindLinkUp:
				err = os.Symlink("../outside.png", p)
			case kindLinkBroken:
				err = os.Symlink("does-not-exist.png", p)
			}
			if err != nil {
				t.Fatalf("creating %q: %v", name, err)
			}
			if kind <= kindTruncated && firstFile == "" {
				firstFile = name
			}
			made++
		}

		o := Options{AllowGaps: opts&1 != 0, AllowMixedDimensions: opts&2 != 0}
		if opts&4 != 0 {
			o.Pattern = pattern
		}
		seq, err := Scan(dir, o)
		if err != nil {
			sentinels := []error{ErrNoFrames, ErrMixedPatterns, ErrGaps, ErrDuplicate, ErrMixedDimensions, ErrUnreadable, ErrOutsideDir}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					if !strings.Contains(err.Error(), "frames folder") {
						t.Fatalf("error does not name the frames folder: %v", err)
					}
					return
				}
			}
			t.Fatalf("Scan refused a readable folder without one of its sentinel errors: %v", err)
		}

		if len(seq.Frames) == 0 {
			t.Fatal("Scan returned no frames and no error")
		}
		if seq.Dir != dir {
			t.Fatalf("Dir %q, want %q", seq.Dir, dir)
		}
		realDir, err := filepath.EvalSymlinks(dir)
		if err != nil {
			t.Fatal(err)
		}
		var w, h int
		for i, fr := range seq.Frames {
			if i > 0 {
				prev := seq.Frames[i-1].Number
				if fr.Number <= prev {
					t.Fatalf("frames not sorted strictly by number: %d (%s) after %d", fr.Number, fr.Name, prev)
				}
				if !o.AllowGaps && fr.Number != prev+1 {
					t.Fatalf("gap between %d and %d returned without AllowGaps", prev, fr.Number)
				}
			}
			prefix, number, _, ext, ok := ParseName(fr.Name)
			if !ok || prefix != seq.Pattern.Prefix || ext != seq.Pattern.Ext || number != fr.Number {
				t.Fatalf("frame %q (number %d) does not follow the pattern %q", fr.Name, fr.Number, seq.Pattern)
			}
			p := filepath.Join(dir, fr.Name)
			if filepath.Dir(p) != dir {
				t.Fatalf("frame name %q leaves the folder", fr.Name)
			}
			resolved, err := filepath.EvalSymlinks(p)
			if err != nil {
				t.Fatalf("frame %q cannot be resolved: %v", fr.Name, err)
			}
			if rel, err := filepath.Rel(realDir, resolved); err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("frame %q resolves to %q, outside the folder", fr.Name, resolved)
			}
			fi, err := os.Stat(p)
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("frame %q is not a regular file: %v", fr.Name, err)
			}
			if fr.Size != fi.Size() || fr.Size == 0 {
				t.Fatalf("frame %q: size %d, the file has %d", fr.Name, fr.Size, fi.Size())
			}
			if !headerChecked(ext) {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := png.DecodeConfig(bytes.NewReader(b))
			if err != nil || !bytes.HasSuffix(b, []byte(pngEnd)) {
				t.Fatalf("frame %q is not a complete image (%v), yet Scan kept it", fr.Name, err)
			}
			if i == 0 {
				w, h = cfg.Width, cfg.Height
			} else if !o.AllowMixedDimensions && (cfg.Width != w || cfg.Height != h) {
				t.Fatalf("frame %q is %dx%d, frame %q %dx%d: mixed sizes returned without AllowMixedDimensions",
					fr.Name, cfg.Width, cfg.Height, seq.Frames[0].Name, w, h)
			}
		}
		if headerChecked(seq.Pattern.Ext) && !o.AllowMixedDimensions && (seq.Width != w || seq.Height != h) {
			t.Fatalf("sequence size %dx%d, frames are %dx%d", seq.Width, seq.Height, w, h)
		}
	})
}
