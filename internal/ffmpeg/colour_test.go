package ffmpeg

import (
	"slices"
	"strings"
	"testing"
)

func TestResolveColour(t *testing.T) {
	for _, tc := range []struct {
		codec, pix, ext        string
		height                 int
		space, rng, exr, alpha string
		want                   Colour
		err                    string // part of the error; "" for none
	}{
		{codec: "libx264", pix: "yuv420p", ext: "mp4", height: 719, want: Colour{"bt601", "tv", "srgb", "drop"}},
		{codec: "libx264", pix: "yuv420p", ext: "mp4", height: 720, want: Colour{"bt709", "tv", "srgb", "drop"}},
		{codec: "libx264", pix: "yuv420p", ext: "mp4", height: 2160, space: "auto", rng: "pc", want: Colour{"bt709", "pc", "srgb", "drop"}},
		{codec: "libx265", pix: "yuv420p10le", ext: "mkv", height: 480, space: "bt2020", exr: "linear", want: Colour{"bt2020", "tv", "linear", "drop"}},
		{codec: "ffv1", pix: "gbrp", ext: "mkv", height: 480, want: Colour{"bt601", "pc", "srgb", "drop"}},
		{codec: "ffv1", pix: "yuv420p", ext: "mkv", height: 480, rng: "pc", want: Colour{"bt601", "pc", "srgb", "drop"}},
		{codec: "prores_ks", pix: "yuva444p10le", ext: "mov", height: 1080, alpha: "keep", want: Colour{"bt709", "tv", "srgb", "keep"}},
		{codec: "ffv1", pix: "gbrp", ext: "mkv", height: 480, rng: "tv", err: "--range tv"},
		{codec: "ffv1", pix: "yuv420p", ext: "mov", height: 480, rng: "pc", err: "--range pc"},
		{codec: "prores_ks", pix: "yuv422p10le", ext: "mov", height: 480, rng: "pc", err: "--range pc"},
		{codec: "libx264", pix: "yuv420p", ext: "mp4", height: 480, rng: "full", err: "--range"},
		{codec: "libx264", pix: "yuv420p", ext: "mp4", height: 480, space: "p3", err: "--color"},
		{codec: "libx264", pix: "yuv420p", ext: "mp4", height: 480, exr: "pq", err: "--exr-transfer"},
		{codec: "libx264", pix: "yuv420p", ext: "mp4", height: 480, alpha: "keep", err: "--alpha keep"},
		{codec: "prores_ks", pix: "yuv422p10le", ext: "mov", height: 480, alpha: "keep", err: "--alpha keep"},
		{codec: "prores_ks", pix: "yuva444p10le", ext: "mov", height: 480, err: "--alpha keep"},
	} {
		c, err := LookupCodec(tc.codec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ResolveColour(c, tc.pix, tc.ext, tc.height, tc.space, tc.rng, tc.exr, tc.alpha)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%+v: %v", tc, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%+v: error %v, want one naming %s", tc, err, tc.err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%+v: %+v, want %+v", tc, got, tc.want)
		}
	}
}

// TestEncodeArgsColour: the conversion and the tags of a part come from the
// same colour, the EXR transfer goes before the input, and a job made
// before colour settings gets neither.
func TestEncodeArgsColour(t *testing.T) {
	s := Settings{Codec: "libx264", Rate: Rate{Num: 24, Den: 1}, CRF: -1, PixFmt: "yuv420p", PadEven: true,
		Colour: Colour{Space: "bt709", Range: "tv", EXRTransfer: "srgb", Alpha: "drop"}}
	args, err := EncodeArgs("in/%06d.exr", s, "out.mp4")
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"-apply_trc iec61966_2_1 -framerate 24", "-colorspace bt709", "-color_primaries bt709", "-color_trc bt709", "-color_range tv",
		"-vf pad=ceil(iw/2)*2:ceil(ih/2)*2,scale=out_color_matrix=bt709:out_range=tv:flags=bicubic,setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv "} {
		if !strings.Contains(line, want) {
			t.Errorf("%s\nlacks %q", line, want)
		}
	}
	s.Colour.EXRTransfer = "linear"
	args, _ = EncodeArgs("in/%06d.exr", s, "out.mp4")
	if line := strings.Join(args, " "); strings.Contains(line, "apply_trc") || !strings.Contains(line, "-color_trc linear") {
		t.Errorf("--exr-transfer linear: %s", line)
	}
	s.Colour = Colour{}
	args, _ = EncodeArgs("in/%06d.png", s, "out.mp4")
	if slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "color") || strings.Contains(a, "setparams") }) {
		t.Errorf("a job without colour settings: %v", args)
	}
}
