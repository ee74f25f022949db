package main

// Colour (issue 16): the farm's finals are converted and tagged as their
// colour settings say, in the bitstream and the container, like one plain
// ffmpeg run with the same settings; decoded the way players do (with the
// matrix the tags name) they come back close to the source frames.

import (
	"bufio"
	"bytes"
	"context"
	be "encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// colourFarm is a standing farm of one node, for many small jobs.
func colourFarm(t *testing.T) *farm {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	coord, m := start(t, "coordinator", farmReady, "coordinator", "--data", data, "--listen", "127.0.0.1:0",
		"--heartbeat-timeout", "5s", "--poll-window", "2s")
	f := &farm{coord: coord, addr: m[1], data: data}
	addNode(t, f, "node", nodeOpts{noOnce: true})
	return f
}

// submit submits a job and returns its id.
func (f *farm) submit(t *testing.T, args ...string) string {
	t.Helper()
	return strings.TrimSpace(runCmd(t, binary, append([]string{"submit", "--coordinator", f.addr}, args...)...))
}

// refused submits a job that must be refused, and returns what submit said.
func (f *farm) refused(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"submit", "--coordinator", f.addr}, args...)...).CombinedOutput()
	if err == nil {
		t.Fatalf("submit %v was accepted:\n%s", args, out)
	}
	return string(out)
}

// fetchJob waits for the job's video and downloads it to out. A job that
// hangs fails the test after five minutes, with the farm's logs, rather
// than the whole run at its timeout with none.
func (f *farm) fetchJob(t *testing.T, id, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if b, err := exec.CommandContext(ctx, binary, "fetch", "--coordinator", f.addr, "--job", id, "-o", out, "--wait").CombinedOutput(); err != nil {
		t.Fatalf("fetch %s: %v\n%s", id, err, b)
	}
}

// fetchExact fetches job id once it is done and checks it frame for frame
// against want (checkExact); it returns the video's path.
func (f *farm) fetchExact(t *testing.T, id string, want []string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.mkv")
	f.fetchJob(t, id, out)
	checkExact(t, out, want)
	return out
}

// colourCodes are a colour space's ISO/IEC 23091-2 code points (what colr
// boxes and Matroska's Colour elements hold) and ffprobe's names for them.
var colourCodes = map[string]struct {
	matrix, primaries, transfer        int
	matrixName, primariesName, trcName string
}{
	"bt709":  {1, 1, 1, "bt709", "bt709", "bt709"},
	"bt601":  {6, 6, 6, "smpte170m", "smpte170m", "smpte170m"},
	"bt2020": {9, 9, 14, "bt2020nc", "bt2020", "bt2020-10"},
}

// probeColour is what ffprobe says of the video's colour: space,
// primaries, transfer, range, pixel format.
func probeColour(t *testing.T, path string) []string {
	t.Helper()
	out := runCmd(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
		"stream=color_space,color_primaries,color_transfer,color_range,pix_fmt", "-of", "default=nw=1", path)
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return []string{m["color_space"], m["color_primaries"], m["color_transfer"], m["color_range"], m["pix_fmt"]}
}

// containerColour is the container's own colour record: an MP4/MOV colr
// box (its type, then primaries, transfer, matrix and, for nclx, the full
// range flag) or Matroska's Colour elements (matrix, range, transfer,
// primaries), as one string.
func containerColour(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	switch filepath.Ext(path) {
	case ".mkv", ".webm":
		names := map[string]string{"55B1": "matrix", "55B9": "range", "55BA": "transfer", "55BB": "primaries"}
		var els []string
		for _, e := range mkvTracks(t, path) {
			p, v, _ := strings.Cut(e, "=")
			if i := strings.Index(p, "/55B0/"); i >= 0 {
				if name, ok := names[p[i+6:]]; ok {
					n, _ := strconv.ParseUint(v, 16, 64)
					els = append(els, fmt.Sprintf("%s=%d", name, n))
				}
			}
		}
		slices.Sort(els)
		return "Colour " + strings.Join(els, " ")
	}
	// The colr box inside the moov (not a chance match in the media).
	var moov []byte
	for off := uint64(0); off+8 <= uint64(len(b)); {
		size := uint64(be.BigEndian.Uint32(b[off:]))
		if size < 8 || off+size > uint64(len(b)) {
			break
		}
		if string(b[off+4:off+8]) == "moov" {
			moov = b[off : off+size]
		}
		off += size
	}
	i := bytes.Index(moov, []byte("colr"))
	if i < 0 || i+14 > len(moov) {
		return "no colr"
	}
	c := moov[i+4:]
	s := fmt.Sprintf("colr %s primaries=%d transfer=%d matrix=%d", c[:4], be.BigEndian.Uint16(c[4:]), be.BigEndian.Uint16(c[6:]), be.BigEndian.Uint16(c[8:]))
	if string(c[:4]) == "nclx" {
		s += fmt.Sprintf(" full=%d", c[10]>>7)
	}
	return s
}

// wantContainer is containerColour's answer for a space and range.
func wantContainer(ext, space, rng string) string {
	c := colourCodes[space]
	full := map[string]int{"tv": 0, "pc": 1}[rng]
	switch ext {
	case "mkv", "webm":
		return fmt.Sprintf("Colour matrix=%d primaries=%d range=%d transfer=%d", c.matrix, c.primaries, full+1, c.transfer)
	case "mp4":
		return fmt.Sprintf("colr nclx primaries=%d transfer=%d matrix=%d full=%d", c.primaries, c.transfer, c.matrix, full)
	}
	// QuickTime's nclc has no range.
	return fmt.Sprintf("colr nclc primaries=%d transfer=%d matrix=%d", c.primaries, c.transfer, c.matrix)
}

// fastEncode are the flags that keep each codec quick for these tests.
var fastEncode = map[string][]string{
	"libx264": {"--preset", "ultrafast"}, "libx265": {"--preset", "ultrafast"}, "libvpx-vp9": {"--preset", "realtime"},
	"libsvtav1": {"--preset", "12"}, "ffv1": nil, "prores_ks": nil,
}

// plainEncode is fastEncode for a plain ffmpeg run.
var plainEncode = map[string][]string{
	"libx264": {"-preset", "ultrafast", "-x264-params", "stitchable=1"}, "libx265": {"-preset", "ultrafast", "-x265-params", "log-level=error"},
	"libvpx-vp9": {"-deadline", "realtime", "-row-mt", "1"}, "libsvtav1": {"-preset", "12"}, "ffv1": {"-level", "3"}, "prores_ks": nil,
}

// TestColourTags: for every codec and final container, an HD job (720
// lines: BT.709 by default) and an SD one (BT.601) come out with the tags
// their settings name, in what ffprobe reads (the bitstream, or the
// container where the codec has no word for it) and in the container's
// own colour record, equal to one plain ffmpeg run's; as do forced
// spaces, full range and ProRes 4444 with alpha. What no file can say is
// refused, naming the flag.
func TestColourTags(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	root := t.TempDir()
	hd, sd := filepath.Join(root, "hd"), filepath.Join(root, "sd")
	for dir, size := range map[string]string{hd: "128x720", sd: "160x120"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "smptehdbars=s="+size+":r=24", "-frames:v", "4", "-start_number", "1", filepath.Join(dir, "f_%04d.png"))
	}
	f := colourFarm(t)

	type tagCase struct {
		frames, codec, ext string
		space, rng, pix    string // what the job should come out as
		flags              []string
	}
	var cases []tagCase
	for _, codec := range []string{"libx264", "libx265", "libvpx-vp9", "libsvtav1", "ffv1", "prores_ks"} {
		c := map[string][]string{"libx264": {"mp4", "mov", "mkv"}, "libx265": {"mp4", "mov", "mkv"}, "libvpx-vp9": {"webm", "mkv", "mp4"},
			"libsvtav1": {"mp4", "mkv", "webm"}, "ffv1": {"mkv", "mov"}, "prores_ks": {"mov", "mkv"}}[codec]
		for _, ext := range c {
			cases = append(cases, tagCase{frames: hd, codec: codec, ext: ext, space: "bt709", rng: "tv"},
				tagCase{frames: sd, codec: codec, ext: ext, space: "bt601", rng: "tv"})
		}
	}
	cases = append(cases,
		tagCase{frames: sd, codec: "libx264", ext: "mp4", space: "bt709", rng: "pc", flags: []string{"--color", "bt709", "--range", "pc"}},
		tagCase{frames: hd, codec: "libx265", ext: "mkv", space: "bt2020", rng: "tv", pix: "yuv420p10le", flags: []string{"--color", "bt2020"}},
		tagCase{frames: sd, codec: "libvpx-vp9", ext: "webm", space: "bt601", rng: "pc", flags: []string{"--range", "pc"}},
		tagCase{frames: hd, codec: "libsvtav1", ext: "mp4", space: "bt601", rng: "pc", flags: []string{"--color", "bt601", "--range", "pc"}},
		tagCase{frames: sd, codec: "ffv1", ext: "mkv", space: "bt2020", rng: "pc", flags: []string{"--color", "bt2020", "--range", "pc"}},
		tagCase{frames: sd, codec: "prores_ks", ext: "mov", space: "bt601", rng: "tv", pix: "yuva444p10le", flags: []string{"--preset", "4444", "--alpha", "keep"}},
	)
	ids := make([]string, len(cases))
	for i, c := range cases {
		if c.pix == "" {
			c.pix = map[string]string{"prores_ks": "yuv422p10le"}[c.codec]
			if c.pix == "" {
				c.pix = "yuv420p"
			}
			cases[i].pix = c.pix
		}
		args := append([]string{"--frames", c.frames, "--codec", c.codec, "--out", filepath.Join(root, fmt.Sprintf("%d.%s", i, c.ext)), "--sets", "2",
			"--pix-fmt", c.pix}, fastEncode[c.codec]...)
		if c.pix == "yuva444p10le" {
			args = slices.DeleteFunc(args, func(s string) bool { return s == "--pix-fmt" || s == "yuva444p10le" })
		}
		ids[i] = f.submit(t, append(args, c.flags...)...)
	}
	for _, r := range []struct {
		args []string
		flag string
	}{
		{[]string{"--codec", "prores_ks", "--range", "pc", "--out", filepath.Join(root, "x.mov")}, "--range pc"},
		{[]string{"--codec", "ffv1", "--range", "pc", "--out", filepath.Join(root, "x.mov")}, "--range pc"},
		{[]string{"--codec", "libx264", "--alpha", "keep"}, "--alpha keep"},
		{[]string{"--color", "p3"}, "--color"},
	} {
		if out := f.refused(t, append([]string{"--frames", sd}, r.args...)...); !strings.Contains(out, r.flag) {
			t.Errorf("submit %v: the refusal does not name %s:\n%s", r.args, r.flag, out)
		}
	}

	var table []string
	for i, c := range cases {
		out := filepath.Join(root, fmt.Sprintf("fetched-%d.%s", i, c.ext))
		f.fetchJob(t, ids[i], out)
		cc := colourCodes[c.space]
		got := probeColour(t, out)
		want := []string{cc.matrixName, cc.primariesName, cc.trcName, c.rng, c.pix}
		if c.codec == "ffv1" && c.ext == "mov" {
			want[3] = "unknown" // neither FFV1 nor QuickTime's colr box has a word for the range
		}
		if c.rng == "pc" && (c.codec == "libx264" || c.codec == "libx265") {
			want[4] = "yuvj" + strings.TrimPrefix(c.pix, "yuv") // what H.264 and HEVC decoders call full range
		}
		if c.pix == "yuva444p10le" {
			want[4] = "yuva444p12le" // ProRes 4444 decodes at 12 bits
		}
		name := fmt.Sprintf("%s .%s %s %v", c.codec, c.ext, filepath.Base(c.frames), c.flags)
		if !slices.Equal(got, want) {
			t.Errorf("%s: ffprobe says %v, want %v", name, got, want)
		}
		box := containerColour(t, out)
		if w := wantContainer(c.ext, c.space, c.rng); box != w {
			t.Errorf("%s: the container says %q, want %q", name, box, w)
		}

		// One plain ffmpeg run with the same settings says the same.
		plain := filepath.Join(root, fmt.Sprintf("plain-%d.%s", i, c.ext))
		space, rng := "", ""
		if len(c.flags) > 0 {
			space, rng = c.space, c.rng
		}
		in, colour := plainColourOf(t, filepath.Join(c.frames, "f_0001.png"), c.codec, c.pix, c.ext, space, rng)
		args := append(append(in, "-v", "error", "-framerate", "24", "-start_number", "1", "-i", filepath.Join(c.frames, "f_%04d.png"),
			"-c:v", c.codec, "-pix_fmt", c.pix), plainEncode[c.codec]...)
		if c.pix == "yuva444p10le" {
			args = append(args, "-profile:v", "4444")
		}
		runCmd(t, "ffmpeg", append(append(args, colour...), plain)...)
		if p := probeColour(t, plain); !slices.Equal(got, p) {
			t.Errorf("%s: ffprobe says %v of the farm's, %v of a plain run's", name, got, p)
		}
		if p := containerColour(t, plain); p != box {
			t.Errorf("%s: the container says %q in the farm's, %q in a plain run's", name, box, p)
		}
		table = append(table, fmt.Sprintf("%-40s %-55s %s", name, strings.Join(got, ","), box))
	}
	t.Logf("tags per codec and container:\n%s", strings.Join(table, "\n"))
}

// rgbPSNR decodes video to RGB with the matrix and range its tags name (or,
// untagged, what players guess: BT.709 from 720 lines), and returns its
// PSNR against the frames (a printf pattern). rgb is the RGB format the
// decode ends in, which picks swscale's chroma upsampling: rgb24 takes its
// usual YUV-to-RGB path, which gives each chroma sample to the pixels it
// covers (as Chromium's libyuv does, and as the issue measured); gbrp
// interpolates chroma between samples, which costs 4:2:0 video far more at
// sharp coloured edges.
func rgbPSNR(t *testing.T, video, frames string, start int, rgb string) float64 {
	t.Helper()
	p := probeColour(t, video)
	h, _ := strconv.Atoi(strings.TrimSpace(runCmd(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=height", "-of", "csv=p=0", video)))
	matrix := map[string]string{"bt709": "bt709", "smpte170m": "bt601", "bt470bg": "bt601", "bt2020nc": "bt2020"}[p[0]]
	if matrix == "" {
		matrix = "bt601"
		if h >= 720 {
			matrix = "bt709"
		}
	}
	rng := "tv"
	if p[3] == "pc" {
		rng = "pc"
	}
	return psnrVia(t, video, frames, start, fmt.Sprintf("scale=in_color_matrix=%s:in_range=%s,format=%s", matrix, rng, rgb), "format="+rgb)
}

// TestColourAccuracy: SMPTE HD bars and testsrc2, x264 at crf 12, come
// back within 40 dB RGB PSNR of the source frames when decoded with the
// matrix their tags name (swscale's usual YUV-to-RGB path, see rgbPSNR),
// in 4:4:4 and 4:2:0. Beside each, what one plain ffmpeg run without colour
// settings gives (BT.601, untagged, which players decode HD as BT.709):
// the figure the issue started from; and the farm's figure with chroma
// interpolated on decode, which in 4:2:0 the subsampling itself holds
// below 40 dB at these sources' sharp coloured edges whatever the matrix
// (a lossless 4:2:0 encode of the HD bars measured 37.5 dB).
func TestColourAccuracy(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	root := t.TempDir()
	f := colourFarm(t)
	type acc struct {
		source, size, pix string
		min               float64
	}
	cases := []acc{{"smptehdbars", "1280x720", "yuv444p", 40}, {"smptehdbars", "640x480", "yuv444p", 40},
		{"testsrc2", "1280x720", "yuv444p", 40}, {"testsrc2", "640x480", "yuv444p", 40},
		{"smptehdbars", "1280x720", "yuv420p", 40}, {"testsrc2", "1280x720", "yuv420p", 40}}
	ids := make([]string, len(cases))
	dirs := map[string]string{}
	for i, c := range cases {
		dir := filepath.Join(root, c.source+"-"+c.size)
		if dirs[dir] == "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", fmt.Sprintf("%s=s=%s:r=24", c.source, c.size), "-frames:v", "4", "-start_number", "1", filepath.Join(dir, "f_%04d.png"))
			dirs[dir] = dir
		}
		ids[i] = f.submit(t, "--frames", dir, "--codec", "libx264", "--crf", "12", "--pix-fmt", c.pix, "--sets", "2", "--out", filepath.Join(root, fmt.Sprintf("%d.mp4", i)))
	}
	for i, c := range cases {
		frames := filepath.Join(root, c.source+"-"+c.size, "f_%04d.png")
		out := filepath.Join(root, fmt.Sprintf("fetched-%d.mp4", i))
		f.fetchJob(t, ids[i], out)
		before := filepath.Join(root, fmt.Sprintf("before-%d.mp4", i))
		runCmd(t, "ffmpeg", "-v", "error", "-framerate", "24", "-start_number", "1", "-i", frames, "-c:v", "libx264", "-crf", "12", "-pix_fmt", c.pix, before)
		got, old := rgbPSNR(t, out, frames, 1, "rgb24"), rgbPSNR(t, before, frames, 1, "rgb24")
		t.Logf("%s %s %s, x264 crf 12: RGB PSNR %.2f dB (without colour settings: %.2f dB; chroma interpolated: %.2f dB)",
			c.source, c.size, c.pix, got, old, rgbPSNR(t, out, frames, 1, "gbrp"))
		if got < c.min {
			t.Errorf("%s %s %s: RGB PSNR %.2f dB against the source, want at least %.0f", c.source, c.size, c.pix, got, c.min)
		}
	}
}

// writeLinearEXR writes img as an uncompressed scanline OpenEXR file of
// 32-bit float B, G and R channels holding linear light: each sRGB value
// through the sRGB inverse transfer, as a renderer would have written it.
// (Debian's ffmpeg reads EXR but cannot write it.)
func writeLinearEXR(path string, img image.Image) error {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	le := be.LittleEndian
	var hdr []byte
	attr := func(name, typ string, v []byte) {
		hdr = append(append(append(append(hdr, name...), 0), typ...), 0)
		hdr = append(le.AppendUint32(hdr, uint32(len(v))), v...)
	}
	var ch []byte
	for _, n := range []string{"B", "G", "R"} { // channels in name order
		ch = append(append(ch, n...), 0)
		ch = le.AppendUint32(ch, 2) // FLOAT
		ch = append(ch, 0, 0, 0, 0) // pLinear, reserved
		ch = le.AppendUint32(le.AppendUint32(ch, 1), 1)
	}
	ch = append(ch, 0)
	box := le.AppendUint32(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 0), 0), uint32(w-1)), uint32(h-1))
	attr("channels", "chlist", ch)
	attr("compression", "compression", []byte{0})
	attr("dataWindow", "box2i", box)
	attr("displayWindow", "box2i", box)
	attr("lineOrder", "lineOrder", []byte{0})
	attr("pixelAspectRatio", "float", le.AppendUint32(nil, math.Float32bits(1)))
	attr("screenWindowCenter", "v2f", make([]byte, 8))
	attr("screenWindowWidth", "float", le.AppendUint32(nil, math.Float32bits(1)))
	head := append([]byte{0x76, 0x2f, 0x31, 0x01, 2, 0, 0, 0}, append(hdr, 0)...)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	bw.Write(head)
	lineSize := 8 + 3*4*w
	for y := 0; y < h; y++ {
		bw.Write(le.AppendUint64(nil, uint64(len(head)+8*h+y*lineSize)))
	}
	line := make([]byte, 0, lineSize)
	for y := 0; y < h; y++ {
		line = le.AppendUint32(le.AppendUint32(line[:0], uint32(y)), uint32(3*4*w))
		for c := 2; c >= 0; c-- {
			for x := 0; x < w; x++ {
				r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
				v := float64([3]uint32{r, g, bl}[c]) / 65535
				if v <= 0.04045 {
					v /= 12.92
				} else {
					v = math.Pow((v+0.055)/1.055, 2.4)
				}
				line = le.AppendUint32(line, math.Float32bits(float32(v)))
			}
		}
		bw.Write(line)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// TestLinearEXR: OpenEXR frames of linear light, made from PNG frames
// with the sRGB inverse transfer, come out within 40 dB RGB PSNR of the
// PNGs (the sRGB transfer given back by default), and the coordinator says
// once what it did; with --exr-transfer linear they stay linear and are
// tagged so.
func TestLinearEXR(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	root := t.TempDir()
	src, exr := filepath.Join(root, "png"), filepath.Join(root, "exr")
	for _, d := range []string{src, exr} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=24", "-frames:v", "4", "-start_number", "1", filepath.Join(src, "f_%04d.png"))
	for i := 1; i <= 4; i++ {
		r, err := os.Open(filepath.Join(src, fmt.Sprintf("f_%04d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := writeLinearEXR(filepath.Join(exr, fmt.Sprintf("f_%04d.exr", i)), img); err != nil {
			t.Fatal(err)
		}
	}
	f := colourFarm(t)
	// 4:4:4, as testsrc2 loses more than the transfer could to 4:2:0 (see
	// TestColourAccuracy).
	srgb := f.submit(t, "--frames", exr, "--codec", "libx264", "--crf", "12", "--pix-fmt", "yuv444p", "--sets", "2", "--out", filepath.Join(root, "srgb.mp4"))
	linear := f.submit(t, "--frames", exr, "--codec", "ffv1", "--exr-transfer", "linear", "--sets", "2", "--out", filepath.Join(root, "linear.mkv"))
	out := filepath.Join(root, "fetched.mp4")
	f.fetchJob(t, srgb, out)
	db := rgbPSNR(t, out, filepath.Join(src, "f_%04d.png"), 1, "rgb24")
	t.Logf("linear EXR, sRGB transfer applied, x264 crf 12 yuv444p: RGB PSNR %.2f dB against the sRGB PNGs", db)
	if db < 40 {
		t.Errorf("RGB PSNR %.2f dB against the sRGB source, want at least 40", db)
	}
	lin := filepath.Join(root, "fetched.mkv")
	f.fetchJob(t, linear, lin)
	if p := probeColour(t, lin); p[2] != "linear" {
		t.Errorf("--exr-transfer linear: transfer %q, want linear (%v)", p[2], p)
	}
	if db := rgbPSNR(t, lin, filepath.Join(src, "f_%04d.png"), 1, "rgb24"); db > 30 {
		t.Errorf("--exr-transfer linear: %.2f dB against the sRGB source: the transfer was applied anyway", db)
	}
	said := logLines(f.coord, 0, regexp.MustCompile(`msg="OpenEXR frames hold linear light`))
	if len(said) != 2 || !strings.Contains(said[0], "exr_transfer=srgb") || !strings.Contains(said[1], "exr_transfer=linear") {
		t.Errorf("the coordinator should say once per job what it does to EXR frames; it said:\n%s", strings.Join(said, "\n"))
	}
	st := runCmd(t, binary, "status", "--coordinator", f.addr, "--job", srgb)
	if !strings.Contains(st, "colour bt601 tv, exr-transfer srgb") {
		t.Errorf("status does not show the colour settings:\n%s", st)
	}
}

// TestHighBitDepthKeepsPrecision: 16-bit PNG frames of a smooth ramp reach
// 10-bit videos with more distinct levels than 8 bits can hold: no round
// trip through 8 bits on the way.
func TestHighBitDepthKeepsPrecision(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	root := t.TempDir()
	frames := filepath.Join(root, "frames")
	if err := os.MkdirAll(frames, 0o755); err != nil {
		t.Fatal(err)
	}
	const w, h = 1024, 64
	img := image.NewNRGBA64(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := uint16(x * 65535 / (w - 1))
			img.SetNRGBA64(x, y, color.NRGBA64{R: v, G: v, B: v, A: 0xffff})
		}
	}
	for i := 1; i <= 4; i++ {
		fh, err := os.Create(filepath.Join(frames, fmt.Sprintf("f_%04d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(fh, img); err != nil {
			t.Fatal(err)
		}
		fh.Close()
	}
	f := colourFarm(t)
	cases := []struct {
		codec, ext, pix string
		flags           []string
	}{
		{"libx265", "mp4", "yuv420p10le", []string{"--crf", "12", "--preset", "ultrafast"}},
		{"prores_ks", "mov", "yuv422p10le", nil},
		{"libsvtav1", "mp4", "yuv420p10le", []string{"--crf", "12", "--preset", "12"}},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		ids[i] = f.submit(t, append([]string{"--frames", frames, "--codec", c.codec, "--pix-fmt", c.pix, "--sets", "2",
			"--out", filepath.Join(root, fmt.Sprintf("%d.%s", i, c.ext))}, c.flags...)...)
	}
	for i, c := range cases {
		out := filepath.Join(root, fmt.Sprintf("fetched-%d.%s", i, c.ext))
		f.fetchJob(t, ids[i], out)
		cmd := exec.Command("ffmpeg", "-v", "error", "-i", out, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", c.pix, "-")
		raw, err := cmd.Output()
		if err != nil || len(raw) < 2*w*h {
			t.Fatalf("decoding %s: %v", out, err)
		}
		levels := map[uint16]bool{}
		for x := 0; x < w; x++ { // the middle row of the luma plane
			levels[be.LittleEndian.Uint16(raw[2*(h/2*w+x):])] = true
		}
		t.Logf("%s %s: %d distinct luma levels across a %d-pixel 16-bit ramp", c.codec, c.pix, len(levels), w)
		if len(levels) <= 400 {
			t.Errorf("%s %s: %d distinct luma levels, want more than 400 (8 bits hold at most 220)", c.codec, c.pix, len(levels))
		}
	}
}
