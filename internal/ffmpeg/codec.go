// Package ffmpeg is framefarm's one wrapper around ffmpeg and ffprobe: the
// codec table, the encode and join command lines (built with
// github.com/u2takey/ffmpeg-go), running them with graceful cancellation and
// the stderr tail in every error, and probing results.
package ffmpeg

import (
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// Codec describes what framefarm knows about one encoder.
type Codec struct {
	Name string
	// Probed is the codec name ffprobe reports for its output.
	Probed string
	// PartExt is the container of the parts. It must keep exact timestamps
	// (ffmpeg's MP4/MOV track time scale is a multiple of the fps
	// numerator: Rate.TrackTimescale), so that joining them does not round
	// twice. All are MP4 or MOV, so that
	// parts can be checked by reading their moov (internal/mp4) rather than
	// by starting ffprobe; FFV1 goes in MOV, which, unlike MP4, can hold it.
	PartExt string
	// Finals lists the final containers (extensions) that can hold it.
	Finals        []string
	DefaultPixFmt string
	// CRFMin..CRFMax is the valid --crf range; CRFMax < 0 means no --crf.
	CRFMin, CRFMax int
	Presets        []string
}

var codecs = []Codec{
	{Name: "libx264", Probed: "h264", PartExt: "mp4", Finals: []string{"mp4", "mov", "mkv"}, DefaultPixFmt: "yuv420p", CRFMin: 0, CRFMax: 51,
		Presets: []string{"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"}},
	{Name: "libx265", Probed: "hevc", PartExt: "mp4", Finals: []string{"mp4", "mov", "mkv"}, DefaultPixFmt: "yuv420p", CRFMin: 0, CRFMax: 51,
		Presets: []string{"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"}},
	{Name: "libvpx-vp9", Probed: "vp9", PartExt: "mp4", Finals: []string{"webm", "mkv", "mp4"}, DefaultPixFmt: "yuv420p", CRFMin: 0, CRFMax: 63,
		Presets: []string{"good", "best", "realtime"}},
	{Name: "libsvtav1", Probed: "av1", PartExt: "mp4", Finals: []string{"mp4", "mkv", "webm"}, DefaultPixFmt: "yuv420p", CRFMin: 1, CRFMax: 63,
		Presets: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13"}},
	{Name: "ffv1", Probed: "ffv1", PartExt: "mov", Finals: []string{"mkv", "mov"}, DefaultPixFmt: "yuv420p", CRFMin: 0, CRFMax: -1},
	{Name: "prores_ks", Probed: "prores", PartExt: "mov", Finals: []string{"mov", "mkv"}, DefaultPixFmt: "yuv422p10le", CRFMin: 0, CRFMax: -1,
		Presets: []string{"proxy", "lt", "standard", "hq", "4444", "4444xq"}},
}

// Codecs lists the supported encoder names.
func Codecs() []string {
	names := make([]string, len(codecs))
	for i, c := range codecs {
		names[i] = c.Name
	}
	return names
}

// LookupCodec returns the codec called name.
func LookupCodec(name string) (Codec, error) {
	for _, c := range codecs {
		if c.Name == name {
			return c, nil
		}
	}
	return Codec{}, fmt.Errorf("unknown codec %q: use one of %s", name, strings.Join(Codecs(), ", "))
}

// CheckSettings validates codec options and the final container (by its
// extension, without the dot) before any work starts.
func (c Codec) CheckSettings(finalExt string, crf int, preset string) error {
	if !slices.Contains(c.Finals, finalExt) {
		return fmt.Errorf("a .%s file cannot hold %s video: use an output ending in .%s", finalExt, c.Name, strings.Join(c.Finals, ", ."))
	}
	if crf >= 0 {
		if c.CRFMax < 0 {
			return fmt.Errorf("--crf does not apply to %s: leave it out", c.Name)
		}
		if crf < c.CRFMin || crf > c.CRFMax {
			return fmt.Errorf("--crf %d is out of range for %s: use %d to %d", crf, c.Name, c.CRFMin, c.CRFMax)
		}
	}
	if preset != "" && !slices.Contains(c.Presets, preset) {
		if len(c.Presets) == 0 {
			return fmt.Errorf("--preset does not apply to %s: leave it out", c.Name)
		}
		return fmt.Errorf("--preset %q is not a %s preset: use one of %s", preset, c.Name, strings.Join(c.Presets, ", "))
	}
	return nil
}

// Rate is a frame rate as an exact ratio.
type Rate struct{ Num, Den int64 }

func (r Rate) String() string {
	if r.Den == 1 {
		return strconv.FormatInt(r.Num, 10)
	}
	return fmt.Sprintf("%d/%d", r.Num, r.Den)
}

// TrackTimescale is the time scale ffmpeg's MP4/MOV muxer gives a video
// track of this rate when it is not told one: the encoder's time base
// denominator (the rate's numerator) doubled until it reaches 10000. Every
// frame then lasts a whole number of ticks (24 fps: 12288, 512 a frame),
// and the file is timed as one plain ffmpeg run's is; a browser, which
// rounds a seek to whole ticks, seeks in it as in that file.
func (r Rate) TrackTimescale() int64 {
	ts := r.Num
	for ts < 10000 {
		ts *= 2
	}
	return ts
}

// Seconds returns the duration of n frames, exactly, as a decimal with
// microsecond precision (what the concat demuxer reads).
func (r Rate) Seconds(n int64) string {
	d := new(big.Rat).SetFrac64(n*r.Den, r.Num)
	return d.FloatString(6)
}

// ParseRate reads an frame rate given as an integer ("24"), a decimal
// ("23.976") or a ratio ("24000/1001").
func ParseRate(s string) (Rate, error) {
	bad := func() (Rate, error) {
		return Rate{}, fmt.Errorf("--fps %q is not a positive frame rate: give an integer (24), a decimal (29.97) or a ratio (24000/1001)", s)
	}
	r, ok := new(big.Rat).SetString(strings.TrimSpace(s))
	if !ok || r.Sign() <= 0 || !r.Num().IsInt64() || !r.Denom().IsInt64() {
		return bad()
	}
	num, den := r.Num().Int64(), r.Denom().Int64()
	if num > 1_000_000 || den > 1_000_000 || float64(num)/float64(den) > 1000 {
		return bad()
	}
	return Rate{Num: num, Den: den}, nil
}
