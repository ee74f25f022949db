package ffmpeg

import (
	"fmt"
	"slices"
	"strings"
)

// Colour is how a job turns its RGB frames into video and what it tells
// players about the result. The conversion and the tags come from one
// place (colourFilters and colourTags), so they always agree, and every
// part and the reference run of the tests get the same ones.
type Colour struct {
	// Space is "bt709", "bt601" or "bt2020": the matrix, primaries and
	// transfer of the video. "" is a job made before colour settings:
	// ffmpeg's own conversion (BT.601) and no tags, so its parts still join.
	Space string
	// Range is "tv" (limited) or "pc" (full).
	Range string
	// EXRTransfer is the display transfer applied to OpenEXR frames (linear
	// light) before the conversion: "srgb", "bt709" or "linear" (none).
	EXRTransfer string
	// Alpha is "keep" (ProRes 4444 with an alpha pixel format) or "drop".
	Alpha string
}

// Colour flag values, the first of each being the default.
var (
	ColourSpaces = []string{"auto", "bt709", "bt601", "bt2020"}
	Ranges       = []string{"tv", "pc"}
	EXRTransfers = []string{"srgb", "bt709", "linear"}
	Alphas       = []string{"drop", "keep"}
)

// spaceTags are ffmpeg's names for a colour space's matrix, primaries and
// transfer, and swscale's name for its matrix.
var spaceTags = map[string]struct{ matrix, primaries, transfer, sws string }{
	"bt709":  {"bt709", "bt709", "bt709", "bt709"},
	"bt601":  {"smpte170m", "smpte170m", "smpte170m", "bt601"},
	"bt2020": {"bt2020nc", "bt2020", "bt2020-10", "bt2020"},
}

var exrTRC = map[string]string{"srgb": "iec61966_2_1", "bt709": "bt709"}

// ResolveColour checks the colour flags of a job encoding codec c in
// pixFmt into a .finalExt file, and fixes what "auto" means for frames
// height lines tall: BT.709 from 720 lines (HD) up, BT.601 below, as
// players guess for untagged video. An empty range means the default: tv,
// or pc for RGB pixel formats, which have no other.
func ResolveColour(c Codec, pixFmt, finalExt string, height int, space, rng, exr, alpha string) (Colour, error) {
	if space == "" || space == "auto" {
		space = "bt601"
		if height >= 720 {
			space = "bt709"
		}
	}
	if _, ok := spaceTags[space]; !ok {
		return Colour{}, fmt.Errorf("--color %q: use one of %s", space, strings.Join(ColourSpaces, ", "))
	}
	if exr == "" {
		exr = EXRTransfers[0]
	}
	if !slices.Contains(EXRTransfers, exr) {
		return Colour{}, fmt.Errorf("--exr-transfer %q: use one of %s", exr, strings.Join(EXRTransfers, ", "))
	}
	if alpha == "" {
		alpha = Alphas[0]
	}
	if !slices.Contains(Alphas, alpha) {
		return Colour{}, fmt.Errorf("--alpha %q: use one of %s", alpha, strings.Join(Alphas, ", "))
	}
	switch {
	case alpha == "keep" && (c.Name != "prores_ks" || !hasAlpha(pixFmt)):
		return Colour{}, fmt.Errorf("--alpha keep: only prores_ks with --pix-fmt yuva444p10le (profile 4444 or 4444xq) keeps alpha, not %s in %s", c.Name, pixFmt)
	case alpha == "drop" && hasAlpha(pixFmt):
		return Colour{}, fmt.Errorf("--pix-fmt %s holds alpha: give --alpha keep to keep it, or a pixel format without alpha", pixFmt)
	}
	rgb := isRGB(pixFmt)
	switch {
	case rng == "" && rgb:
		rng = "pc"
	case rng == "":
		rng = "tv"
	case !slices.Contains(Ranges, rng):
		return Colour{}, fmt.Errorf("--range %q: use tv or pc", rng)
	case rng == "tv" && rgb:
		return Colour{}, fmt.Errorf("--range tv: the RGB pixel format %s is always full range: leave --range out or give pc", pixFmt)
	}
	if rng == "pc" && !rgb {
		switch {
		case c.Name == "prores_ks":
			return Colour{}, fmt.Errorf("--range pc: ProRes is always limited range: leave --range out or give tv")
		case c.Name == "ffv1" && finalExt == "mov":
			return Colour{}, fmt.Errorf("--range pc: a .mov file cannot say that ffv1 video is full range (its colr box has no range, FFV1 none either): use a .mkv output or --range tv")
		}
	}
	return Colour{Space: space, Range: rng, EXRTransfer: exr, Alpha: alpha}, nil
}

// String is the colour settings as status lines show them.
func (c Colour) String() string {
	if c.Space == "" {
		return "untagged"
	}
	return c.Space + " " + c.Range
}

// IsEXR says whether frames with the file extension ext (without the dot)
// are OpenEXR, which hold linear light.
func IsEXR(ext string) bool { return strings.EqualFold(strings.TrimPrefix(ext, "."), "exr") }

// InputArgs are the input options that decode frames with the file
// extension ext in the colour the video is made from: OpenEXR frames get
// the display transfer.
func (c Colour) InputArgs(ext string) []string {
	if c.Space == "" || !IsEXR(ext) {
		return nil
	}
	if trc, ok := exrTRC[c.EXRTransfer]; ok {
		return []string{"-apply_trc", trc}
	}
	return nil
}

// transfer is the transfer tag of a video made from frames with the file
// extension ext: EXR frames left linear are tagged so.
func (c Colour) transfer(ext string) string {
	if c.EXRTransfer == "linear" && IsEXR(ext) {
		return "linear"
	}
	return spaceTags[c.Space].transfer
}

// filters are the filters, after any padding, that convert the frames to
// pixFmt with the job's matrix and range, and set the frames' colour
// properties, which encoders that write them per frame (ProRes) read. The
// conversion is one step from the frames' own depth to pixFmt's, so 16-bit
// frames reach a 10-bit video without passing through 8 bits. BT.2020
// also converts the primaries (zscale), from the BT.709 ones the frames
// are taken to be in (as sRGB renders are), so that colours keep their hue
// rather than being stretched to the wider gamut.
func (c Colour) filters(pixFmt, ext string) []string {
	if c.Space == "" {
		return nil
	}
	t := spaceTags[c.Space]
	var conv string
	switch {
	case isRGB(pixFmt):
		conv = "format=" + pixFmt
	case c.Space == "bt2020":
		zr := map[string]string{"tv": "limited", "pc": "full"}[c.Range]
		conv = "zscale=primariesin=709:transferin=709:primaries=2020:transfer=2020_10:matrix=2020_ncl:range=" + zr
	default:
		// bicubic, as the scaler ffmpeg inserts by itself (the filter's
		// own default is bilinear, whose chroma is softer).
		conv = fmt.Sprintf("scale=out_color_matrix=%s:out_range=%s:flags=bicubic", t.sws, c.Range)
	}
	// setparams names RGB "gbr" where the encoder options say "rgb".
	return []string{conv, fmt.Sprintf("setparams=colorspace=%s:color_primaries=%s:color_trc=%s:range=%s",
		c.matrix(pixFmt, "gbr"), t.primaries, c.transfer(ext), c.Range)}
}

// tags are the encoder options that write the colour into the bitstream
// (x264's and x265's VUI, VP9's and AV1's headers, ProRes's frame header)
// and, through the codec parameters, into the container (MP4's colr nclx,
// MOV's nclc, Matroska's Colour).
func (c Colour) tags(pixFmt, ext string) []string {
	if c.Space == "" {
		return nil
	}
	t := spaceTags[c.Space]
	return []string{"-colorspace", c.matrix(pixFmt, "rgb"), "-color_primaries", t.primaries, "-color_trc", c.transfer(ext), "-color_range", c.Range}
}

// matrix is the matrix tag of c for pixFmt: rgb (as each tool spells it)
// for RGB pixel formats, the space's own otherwise.
func (c Colour) matrix(pixFmt, rgb string) string {
	if isRGB(pixFmt) {
		return rgb
	}
	return spaceTags[c.Space].matrix
}

// ColourArgs are the output options that convert frames with the file
// extension ext to pixFmt and tag the result, after the filters before:
// what EncodeArgs gives its encoder, for the tests' plain ffmpeg runs to
// be given the same (with InputArgs before their -i).
func ColourArgs(c Colour, pixFmt, ext string, before ...string) []string {
	var args []string
	if f := append(slices.Clone(before), c.filters(pixFmt, ext)...); len(f) > 0 {
		args = append(args, "-vf", strings.Join(f, ","))
	}
	return append(args, c.tags(pixFmt, ext)...)
}

// ProbedPixFmt is the pixel format ffprobe reports for video encoded in
// pixFmt with range rng by the codec probed as codec: H.264 and HEVC
// decoders name full range 8-bit YUV as the JPEG (yuvj) formats, and the
// ProRes decoder gives 4:4:4 (ProRes 4444) at 12 bits.
func ProbedPixFmt(codec, pixFmt, rng string) string {
	switch {
	case rng == "pc" && (codec == "h264" || codec == "hevc") && slices.Contains([]string{"yuv420p", "yuv422p", "yuv444p"}, pixFmt):
		return "yuvj" + strings.TrimPrefix(pixFmt, "yuv")
	case codec == "prores" && (pixFmt == "yuv444p10le" || pixFmt == "yuva444p10le"):
		return strings.TrimSuffix(pixFmt, "10le") + "12le"
	}
	return pixFmt
}

func hasAlpha(pixFmt string) bool {
	return strings.HasPrefix(pixFmt, "yuva") || strings.HasPrefix(pixFmt, "gbrap") || strings.HasPrefix(pixFmt, "rgba") ||
		strings.HasPrefix(pixFmt, "bgra") || strings.HasPrefix(pixFmt, "argb") || strings.HasPrefix(pixFmt, "abgr") || strings.HasPrefix(pixFmt, "ya")
}

func isRGB(pixFmt string) bool {
	for _, p := range []string{"gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr"} {
		if strings.HasPrefix(pixFmt, p) {
			return true
		}
	}
	return false
}
