package mp4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/framefarm/framefarm/internal/ffmpeg"
)

func needFFmpeg(t testing.TB) {
	t.Helper()
	for _, b := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (run scripts/install-deps.sh)", b)
		}
	}
}

// makeFrames writes n RGB PNG frames of w x h into a new folder, named as
// a node names them, and returns their image2 pattern. rgb24 allows odd
// sizes, which testsrc2's own formats do not.
func makeFrames(t testing.TB, w, h, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("frames-%dx%d", w, h))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pattern := ffmpeg.SequencePattern(dir, "png")
	out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=s=%dx%d:r=24,format=rgb24", w, h),
		"-frames:v", strconv.Itoa(n), "-start_number", "0", pattern).CombinedOutput()
	if err != nil {
		t.Fatalf("making frames: %v\n%s", err, out)
	}
	return pattern
}

// encodeCase is one part to encode: with the node's own command line
// (EncodeArgs over s), plus extra output options, or with raw output
// options for encoders framefarm does not offer but files may still hold.
type encodeCase struct {
	name  string
	s     ffmpeg.Settings
	odd   bool     // 65x33 frames instead of 64x64
	extra []string // output options added to EncodeArgs'
	raw   []string // output options instead of EncodeArgs; the file is .mp4
	// remux: output options of a second ffmpeg run that copies the part
	// into another MP4, to set what only the container says (colr).
	remux []string
	// noPix: PixFmt must be "" (the file does not state it cheaply).
	noPix bool
	// boxes the file must hold, to be sure the case tests what it says.
	boxes []string
}

func (c encodeCase) encode(t *testing.T, pattern, dir string) string {
	t.Helper()
	if c.raw != nil {
		out := filepath.Join(dir, c.name+".mp4")
		args := append([]string{"-v", "error", "-y", "-framerate", "24", "-start_number", "0", "-i", pattern, "-map_metadata", "-1"}, c.raw...)
		if o, err := exec.Command("ffmpeg", append(args, out)...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %q: %v\n%s", args, err, o)
		}
		return out
	}
	s := c.s
	if s.Rate == (ffmpeg.Rate{}) {
		s.Rate = ffmpeg.Rate{Num: 24, Den: 1}
	}
	if s.CRF == 0 {
		s.CRF = -1
	}
	codec, err := ffmpeg.LookupCodec(s.Codec)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, c.name+"."+codec.PartExt)
	args, err := ffmpeg.EncodeArgs(pattern, s, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.extra) > 0 {
		i := slices.Index(args, out)
		args = slices.Insert(args, i, c.extra...)
	}
	if err := (ffmpeg.Runner{}).Run(context.Background(), args, nil); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	if c.remux != nil {
		in := out
		out = filepath.Join(dir, c.name+"-remux.mp4")
		args := append([]string{"-v", "error", "-y", "-i", in, "-c", "copy", "-map_metadata", "-1"}, c.remux...)
		if o, err := exec.Command("ffmpeg", append(args, out)...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %q: %v\n%s", args, err, o)
		}
	}
	return out
}

func encodeCases() []encodeCase {
	x264 := func(name, pix string, extra ...string) encodeCase {
		return encodeCase{name: name, s: ffmpeg.Settings{Codec: "libx264", PixFmt: pix}, extra: extra}
	}
	x265 := func(name, pix string) encodeCase {
		return encodeCase{name: name, s: ffmpeg.Settings{Codec: "libx265", PixFmt: pix, Preset: "ultrafast"}}
	}
	vp9 := func(name, pix string) encodeCase {
		return encodeCase{name: name, s: ffmpeg.Settings{Codec: "libvpx-vp9", PixFmt: pix, Preset: "realtime"}}
	}
	prores := func(name, profile, pix string) encodeCase {
		return encodeCase{name: name, s: ffmpeg.Settings{Codec: "prores_ks", PixFmt: pix, Preset: profile}}
	}
	cases := []encodeCase{
		// x264's default preset uses B-frames, so ctts and an edit list.
		{name: "x264-yuv420p", s: ffmpeg.Settings{Codec: "libx264", PixFmt: "yuv420p"}, boxes: []string{"ctts", "elst"}},
		x264("x264-yuv422p", "yuv422p"),
		x264("x264-yuv444p", "yuv444p"),
		x264("x264-yuv420p10le", "yuv420p10le"),
		x264("x264-yuv422p10le", "yuv422p10le"),
		x264("x264-yuv444p10le", "yuv444p10le"),
		// Monochrome H.264 decodes as 4:2:0; x264 marks gray full range.
		x264("x264-gray", "gray"),
		x264("x264-gray10le", "gray10le"),
		x264("x264-yuvj420p", "yuvj420p"),
		x264("x264-yuvj444p", "yuvj444p"),
		// Range and matrix in the SPS's VUI.
		x264("x264-range-pc", "yuv420p", "-color_range", "pc"),
		x264("x264-bt709", "yuv420p", "-color_range", "tv", "-colorspace", "bt709"),
		// Range and matrix only in the container (colr), which the
		// decoder uses where the SPS does not say them.
		{name: "x264-colr-pc", s: ffmpeg.Settings{Codec: "libx264", Preset: "ultrafast"},
			remux: []string{"-color_range", "pc", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"}},
		{name: "x264-colr-rgb", s: ffmpeg.Settings{Codec: "libx264", PixFmt: "yuv444p", Preset: "ultrafast"},
			remux: []string{"-colorspace", "rgb", "-color_primaries", "bt709", "-color_trc", "bt709"}},
		{name: "x264-yuvj420p-colr-tv", s: ffmpeg.Settings{Codec: "libx264", PixFmt: "yuvj420p", Preset: "ultrafast"},
			remux: []string{"-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"}},
		{name: "x264-faststart", s: ffmpeg.Settings{Codec: "libx264"}, extra: []string{"-movflags", "+faststart"}, boxes: []string{"ctts", "elst"}},
		x264("x264-no-editlist", "yuv420p", "-movflags", "+faststart", "-use_editlist", "0"),
		{name: "x264-24000-1001", s: ffmpeg.Settings{Codec: "libx264", Rate: ffmpeg.Rate{Num: 24000, Den: 1001}}},
		{name: "x264-30000-1001-faststart", s: ffmpeg.Settings{Codec: "libx264", Rate: ffmpeg.Rate{Num: 30000, Den: 1001}}, extra: []string{"-movflags", "+faststart"}},
		{name: "x264-odd-yuv444p", s: ffmpeg.Settings{Codec: "libx264", PixFmt: "yuv444p"}, odd: true},
		{name: "x264rgb-gbrp", raw: []string{"-c:v", "libx264rgb", "-pix_fmt", "bgr24"}, odd: true},
		{name: "x264-padded", s: ffmpeg.Settings{Codec: "libx264", PadEven: true, Preset: "ultrafast"}, odd: true},

		x265("x265-yuv420p", "yuv420p"),
		x265("x265-yuv422p", "yuv422p"),
		x265("x265-yuv444p", "yuv444p"),
		x265("x265-yuv420p10le", "yuv420p10le"),
		x265("x265-yuv444p12le", "yuv444p12le"),
		x265("x265-gray", "gray"),
		x265("x265-gray10le", "gray10le"),
		x265("x265-yuvj420p", "yuvj420p"),
		x265("x265-gbrp", "gbrp"),
		{name: "x265-medium", s: ffmpeg.Settings{Codec: "libx265"}},
		{name: "x265-odd-yuv444p", s: ffmpeg.Settings{Codec: "libx265", PixFmt: "yuv444p", Preset: "ultrafast"}, odd: true},

		vp9("vp9-yuv420p", "yuv420p"),
		vp9("vp9-yuv422p", "yuv422p"),
		vp9("vp9-yuv444p", "yuv444p"),
		vp9("vp9-yuv420p10le", "yuv420p10le"),
		vp9("vp9-yuv444p12le", "yuv444p12le"),
		vp9("vp9-gbrp", "gbrp"),
		vp9("vp9-yuvj420p", "yuvj420p"),
		{name: "vp9-crf", s: ffmpeg.Settings{Codec: "libvpx-vp9", CRF: 40, Preset: "realtime"}},
		{name: "vp9-odd-yuv420p", s: ffmpeg.Settings{Codec: "libvpx-vp9", PixFmt: "yuv420p", Preset: "realtime"}, odd: true},

		{name: "svtav1-yuv420p", s: ffmpeg.Settings{Codec: "libsvtav1", PixFmt: "yuv420p", Preset: "12"}},
		{name: "svtav1-yuv420p10le", s: ffmpeg.Settings{Codec: "libsvtav1", PixFmt: "yuv420p10le", Preset: "12"}},
		{name: "aom-gray", raw: []string{"-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "gray"}},
		{name: "aom-yuv444p", raw: []string{"-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv444p"}, noPix: true},
		{name: "aom-gbrp", raw: []string{"-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "gbrp"}, noPix: true},

		prores("prores-proxy", "proxy", ""),
		prores("prores-lt", "lt", ""),
		prores("prores-standard", "standard", ""),
		prores("prores-hq", "hq", ""),
		prores("prores-4444", "4444", ""),
		prores("prores-4444xq", "4444xq", ""),
		prores("prores-hq-yuv444p10le", "hq", "yuv444p10le"),
		prores("prores-4444-yuv444p10le", "4444", "yuv444p10le"),
		prores("prores-4444-alpha", "4444", "yuva444p10le"),
		prores("prores-4444xq-alpha", "4444xq", "yuva444p10le"),
		prores("prores-auto-yuv444p10le", "", "yuv444p10le"),
		{name: "prores-odd", s: ffmpeg.Settings{Codec: "prores_ks"}, odd: true},

		{name: "ffv1-yuv420p", s: ffmpeg.Settings{Codec: "ffv1"}, noPix: true},
		{name: "ffv1-yuv444p16le", s: ffmpeg.Settings{Codec: "ffv1", PixFmt: "yuv444p16le"}, noPix: true},
		{name: "ffv1-odd-gbrp", s: ffmpeg.Settings{Codec: "ffv1", PixFmt: "gbrp"}, odd: true, noPix: true},
	}
	return cases
}

const testFrames = 6

// TestReadMatchesFFprobe encodes parts the way nodes do and holds every
// field of Read's answer against ffprobe's, as ffmpeg.ProbeVideo asks it.
func TestReadMatchesFFprobe(t *testing.T) {
	needFFmpeg(t)
	if testing.Short() {
		t.Skip("encodes about 60 small files")
	}
	even := makeFrames(t, 64, 64, testFrames) // SVT-AV1 needs 64 at least
	odd := makeFrames(t, 65, 33, testFrames)
	dir := t.TempDir()
	for _, c := range encodeCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pattern := even
			if c.odd {
				pattern = odd
			}
			path := c.encode(t, pattern, dir)
			if len(c.boxes) > 0 {
				b := mustRead(t, path)
				for _, box := range c.boxes {
					if !bytes.Contains(b, []byte(box)) {
						t.Fatalf("%s has no %s box", path, box)
					}
				}
			}
			got, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			p, err := (ffmpeg.Runner{}).ProbeVideo(context.Background(), path, false)
			if err != nil {
				t.Fatal(err)
			}
			checkAgainstProbe(t, got, p, c.noPix)
			rate := c.s.Rate
			if rate == (ffmpeg.Rate{}) {
				rate = ffmpeg.Rate{Num: 24, Den: 1}
			}
			// The node's parts have ffmpeg's own time scale for the rate,
			// a multiple of its numerator, so every frame lasts a whole
			// number of ticks, exactly.
			scale := rate.TrackTimescale()
			tick := rate.Den * scale / rate.Num
			if int64(got.Timescale) != scale || !slices.Equal(got.Deltas, []uint32{uint32(tick)}) {
				t.Errorf("time scale %d, deltas %v; want %d and [%d]", got.Timescale, got.Deltas, scale, tick)
			}
			if got.Samples != testFrames || got.Duration != testFrames*tick {
				t.Errorf("%d samples lasting %d; want %d lasting %d", got.Samples, got.Duration, testFrames, testFrames*tick)
			}
			encoder := c.s.Codec
			if c.raw != nil {
				encoder = c.raw[1]
			}
			// A remuxed file has lost its encoder's name.
			if c.remux == nil && (!strings.HasPrefix(got.Compressor, "Lavc") || !strings.HasSuffix(got.Compressor, " "+encoder)) {
				t.Errorf("compressor name %q, want ffmpeg's encoder (Lavc... %s)", got.Compressor, encoder)
			}
		})
	}
}

func checkAgainstProbe(t *testing.T, got Track, p ffmpeg.Probe, noPix bool) {
	t.Helper()
	if got.Codec != p.Codec || got.Width != p.Width || got.Height != p.Height || got.Samples != p.Packets {
		t.Errorf("Read: %s %dx%d, %d samples; ffprobe: %s %dx%d, %d packets", got.Codec, got.Width, got.Height, got.Samples, p.Codec, p.Width, p.Height, p.Packets)
	}
	switch {
	case noPix && got.PixFmt != "":
		t.Errorf("pixel format %q, want \"\" (ffprobe says %q)", got.PixFmt, p.PixFmt)
	case !noPix && got.PixFmt != p.PixFmt:
		t.Errorf("pixel format %q, ffprobe says %q", got.PixFmt, p.PixFmt)
	}
	if want := "1/" + strconv.FormatUint(uint64(got.Timescale), 10); p.TimeBase != want {
		t.Errorf("time scale %d, ffprobe's time base is %s", got.Timescale, p.TimeBase)
	}
	if d := float64(got.Duration) / float64(got.Timescale); math.Abs(d-p.StreamDuration) > 1e-6 {
		t.Errorf("duration %d/%d = %.6f s, ffprobe says %.6f s", got.Duration, got.Timescale, d, p.StreamDuration)
	}
}

// TestSeeds reads the small real files under testdata, which the fuzz test
// starts from, and checks them against ffprobe when it is installed.
func TestSeeds(t *testing.T) {
	files := seedFiles(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			got, err := ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if got.Samples == 0 || got.Codec == "" {
				t.Fatalf("%+v", got)
			}
			if _, err := exec.LookPath("ffprobe"); err != nil {
				return
			}
			p, err := (ffmpeg.Runner{}).ProbeVideo(context.Background(), f, false)
			if err != nil {
				t.Fatal(err)
			}
			checkAgainstProbe(t, got, p, got.Codec == "ffv1")
		})
	}
}

func seedFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, ext := range []string{"mp4", "mov"} {
		m, err := filepath.Glob(filepath.Join("testdata", "*."+ext))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no seed files under testdata")
	}
	slices.Sort(files)
	return files
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNotMP4(t *testing.T) {
	for name, data := range map[string]string{
		"empty":      "",
		"short":      "abc",
		"png":        "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01",
		"text":       strings.Repeat("hello world ", 10),
		"no moov":    "\x00\x00\x00\x10ftypisom\x00\x00\x02\x00\x00\x00\x00\x08free",
		"moov runs":  "\x00\x00\x00\x10ftypisom\x00\x00\x02\x00\x00\x00\x01\x00moov",
		"tiny box":   "\x00\x00\x00\x04ftyp",
		"empty moov": "\x00\x00\x00\x08moov",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Read(strings.NewReader(data), int64(len(data)))
			if !isFormatError(err) {
				t.Fatalf("err = %v, want one that wraps ErrNotMP4", err)
			}
		})
	}
}

func isFormatError(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "mp4: ") && errors.Is(err, ErrNotMP4)
}
