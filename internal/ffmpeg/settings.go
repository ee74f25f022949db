package ffmpeg

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	ffmpeggo "github.com/u2takey/ffmpeg-go"
)

// Settings are the encode settings of a job, identical for every part so
// that the parts can be joined with stream copy.
type Settings struct {
	Codec   string
	Rate    Rate
	CRF     int // -1: encoder default
	Preset  string
	PixFmt  string
	PadEven bool // pad odd dimensions to even
	// ScaleW, ScaleH: scale every frame to this size first (0: keep), with
	// NormalizeArgs, before EncodeArgs.
	ScaleW, ScaleH int
	// Threads is the encoder's thread count (0: ffmpeg's default, about
	// one per core). Unlike the fields above it is the node's choice, not
	// the job's: the parts join whatever it is.
	Threads int
	// FilterThreads is ffmpeg's filter thread count (0: its default, which
	// follows the machine's cores). It is the job's: see AutoFilterThreads.
	FilterThreads int
	// Colour is the job's conversion to YUV and its tags.
	Colour Colour
	// FrameExt is the extension of the job's frame files, which may differ
	// from the pattern's once NormalizeArgs has written them as PNG.
	FrameExt string
}

// AutoFilterThreads is the filter thread count ffmpeg picks by itself on a
// machine with cpus cores (libavutil's slice threads: cores + 1, or 1 on
// one core). Its RGB to YUV conversion of BGR frames (BMP, TGA) comes out
// differently with another count, so every node of a job is given the
// count of the coordinator's machine: the video is then what one plain
// ffmpeg run there makes of the frames, whatever cores the nodes have.
func AutoFilterThreads(cpus int) int {
	if cpus > 1 {
		return cpus + 1
	}
	return 1
}

// SequencePattern is the name pattern (for image2) of the contiguous frame
// files a node writes: 000000.png, 000001.png, ...
func SequencePattern(dir, ext string) string {
	return filepath.Join(dir, "%06d."+ext)
}

// SequenceName is the name of the frame at position i of a part.
func SequenceName(i int, ext string) string {
	return fmt.Sprintf("%06d.%s", i, ext)
}

// EncodeArgs is the ffmpeg command line that encodes the contiguous
// sequence at pattern (starting at 0) into out, a part file.
func EncodeArgs(pattern string, s Settings, out string) ([]string, error) {
	c, err := LookupCodec(s.Codec)
	if err != nil {
		return nil, err
	}
	in := ffmpeggo.KwArgs{
		// Always give the input rate: image2 defaults to 25 fps.
		"framerate":    s.Rate.String(),
		"start_number": "0",
	}
	if a := s.Colour.InputArgs(filepath.Ext(pattern)); len(a) == 2 {
		in[strings.TrimPrefix(a[0], "-")] = a[1]
	}
	outArgs := ffmpeggo.KwArgs{"c:v": c.Name, "pix_fmt": s.PixFmt, "map_metadata": "-1"}
	if s.PixFmt == "" {
		outArgs["pix_fmt"] = c.DefaultPixFmt
	}
	var filters []string
	if s.PadEven {
		filters = append(filters, "pad=ceil(iw/2)*2:ceil(ih/2)*2")
	}
	frameExt := s.FrameExt
	if frameExt == "" {
		frameExt = filepath.Ext(pattern)
	}
	filters = append(filters, s.Colour.filters(outArgs["pix_fmt"].(string), frameExt)...)
	tags := s.Colour.tags(outArgs["pix_fmt"].(string), frameExt)
	for i := 0; i+1 < len(tags); i += 2 {
		outArgs[strings.TrimPrefix(tags[i], "-")] = tags[i+1]
	}
	if len(filters) > 0 {
		outArgs["vf"] = strings.Join(filters, ",")
	}
	if s.Threads > 0 {
		outArgs["threads"] = strconv.Itoa(s.Threads)
	}
	if s.CRF >= 0 && c.CRFMax >= 0 {
		outArgs["crf"] = strconv.Itoa(s.CRF)
	}
	switch c.Name {
	case "libx264":
		// Identical SPS/PPS across parts, so that they join with stream copy.
		outArgs["x264-params"] = "stitchable=1"
		setIf(outArgs, "preset", s.Preset)
	case "libx265":
		outArgs["tag:v"] = "hvc1"
		outArgs["x265-params"] = "log-level=error"
		setIf(outArgs, "preset", s.Preset)
	case "libvpx-vp9":
		if s.CRF >= 0 {
			outArgs["b:v"] = "0" // constant quality mode
		}
		outArgs["row-mt"] = "1"
		setIf(outArgs, "deadline", s.Preset)
	case "libsvtav1":
		setIf(outArgs, "preset", s.Preset)
	case "prores_ks":
		setIf(outArgs, "profile:v", s.Preset)
	case "ffv1":
		outArgs["level"] = "3"
	}
	st := ffmpeggo.Input(pattern, in).Output(out, outArgs).OverWriteOutput()
	args := filterThreads(baseArgs(), s)
	return append(args, st.GetArgs()...), nil
}

// filterThreads adds the filter thread count to args. ffmpeg gives a simple
// filter graph the encoder's thread count unless -filter_threads is set, so
// with Threads and no FilterThreads it is 0: the graph's own default.
func filterThreads(args []string, s Settings) []string {
	switch {
	case s.FilterThreads > 0:
		return append(args, "-filter_threads", strconv.Itoa(s.FilterThreads))
	case s.Threads > 0:
		return append(args, "-filter_threads", "0")
	}
	return args
}

// NormalizeArgs is the command line that scales one frame to w x h in one
// pixel format (16-bit RGB, which loses nothing of 8- or 16-bit frames),
// written as the PNG out. It runs once per frame: frames of mixed sizes or
// formats in one ffmpeg run make it rebuild its filters mid-stream, and its
// output then depends on which frames came before, so the video would
// depend on how the frames were split into sets. An OpenEXR frame gets its
// display transfer here, as EncodeArgs would give it.
func NormalizeArgs(in string, s Settings, out string) []string {
	inArgs := ffmpeggo.KwArgs{}
	if a := s.Colour.InputArgs(filepath.Ext(in)); len(a) == 2 {
		inArgs[strings.TrimPrefix(a[0], "-")] = a[1]
	}
	st := ffmpeggo.Input(in, inArgs).
		Output(out, ffmpeggo.KwArgs{"vf": fmt.Sprintf("scale=%d:%d,setsar=1", s.ScaleW, s.ScaleH), "pix_fmt": "rgb48be", "frames:v": "1", "update": "1"}).
		OverWriteOutput()
	return append(filterThreads(baseArgs(), Settings{FilterThreads: s.FilterThreads}), st.GetArgs()...)
}

// ConcatArgs is the command line that joins the parts listed in list (a
// concat demuxer script) into out with stream copy.
func ConcatArgs(list, out string) []string {
	kw := ffmpeggo.KwArgs{"c": "copy", "map": "0:v", "map_metadata": "-1"}
	if ext := strings.ToLower(filepath.Ext(out)); ext == ".mkv" || ext == ".webm" {
		// The Matroska muxer checksums every cluster it writes (optional
		// CRC-32 elements): for a join of 149 MB of FFV1 that was 130 ms of
		// a 520 ms ffmpeg run. The coordinator verifies the joined file
		// itself and records its SHA-256.
		kw["write_crc32"] = "0"
	}
	st := ffmpeggo.Input(list, ffmpeggo.KwArgs{"f": "concat", "safe": "0"}).
		Output(out, kw).
		OverWriteOutput()
	return append(baseArgs(), st.GetArgs()...)
}

// Remux says what RemuxArgs writes besides the packets: what one plain
// ffmpeg run's encoder would have told the muxer, which a file joined from
// parts no longer says by itself.
type Remux struct {
	// ColorRange is the encoder's colour range ("tv" or "pc"), which MP4
	// keeps only beside colour tags: Matroska writes it as Range.
	ColorRange string
	// Encoder is the encoder's name and version ("Lavc59.37.100 libx264"),
	// the track's ENCODER tag in Matroska and its compressor name in MOV.
	Encoder string
	// FastStart puts an MP4/MOV file's index before its media data.
	FastStart bool
}

// RemuxArgs is the command line that copies the video of in, a joined file
// whose timestamps are exact integers in its track's time scale, into out,
// a file of another container. ffmpeg then rounds each timestamp to out's
// time base once, as one plain ffmpeg run does, so every packet has the
// plain run's pts, dts and duration (unlike a join by the concat demuxer,
// which adds up part durations in microseconds and drifts).
func RemuxArgs(in, out string, m Remux) []string {
	kw := ffmpeggo.KwArgs{
		"c": "copy", "map": "0:v", "map_metadata": "-1",
		// One plain run's encoder states no chroma siting (the MP4 reader
		// would take the H.264/HEVC default) and no default disposition.
		"chroma_sample_location": "unspecified",
		"disposition:v:0":        "0",
	}
	setIf(kw, "color_range", m.ColorRange)
	if m.Encoder != "" {
		kw["metadata:s:v:0"] = "ENCODER=" + m.Encoder
	}
	if ext := strings.ToLower(filepath.Ext(out)); m.FastStart && (ext == ".mp4" || ext == ".mov") {
		kw["movflags"] = "+faststart"
	}
	st := ffmpeggo.Input(in).Output(out, kw).OverWriteOutput()
	return append(baseArgs(), st.GetArgs()...)
}

// ColorRange is the colour range ffmpeg's encoder is given for frames in
// pixel format pixFmt: full ("pc") for RGB, grey and the JPEG (yuvj) formats,
// limited ("tv") for every other YUV format.
func ColorRange(pixFmt string) string {
	for _, p := range []string{"yuvj", "gray", "ya"} {
		if strings.HasPrefix(pixFmt, p) {
			return "pc"
		}
	}
	if isRGB(pixFmt) {
		return "pc"
	}
	return "tv"
}

func baseArgs() []string {
	return []string{"-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1"}
}

func setIf(k ffmpeggo.KwArgs, key, v string) {
	if v != "" {
		k[key] = v
	}
}
