package mp4

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/framefarm/framefarm/internal/ffmpeg"
)

// encodeParts encodes frames [splits[i], splits[i+1]) of the sequence at
// pattern as the node does (its own folder of renumbered frames, then
// EncodeArgs) and returns the parts' paths.
func encodeParts(t *testing.T, pattern string, s ffmpeg.Settings, splits []int) []string {
	t.Helper()
	codec, err := ffmpeg.LookupCodec(s.Codec)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for k := 0; k+1 < len(splits); k++ {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("part%d", k))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := splits[k]; i < splits[k+1]; i++ {
			src := fmt.Sprintf(pattern, i)
			if err := os.Symlink(src, filepath.Join(dir, ffmpeg.SequenceName(i-splits[k], "png"))); err != nil {
				t.Fatal(err)
			}
		}
		out := filepath.Join(dir, "part."+codec.PartExt)
		args, err := ffmpeg.EncodeArgs(ffmpeg.SequencePattern(dir, "png"), s, out)
		if err != nil {
			t.Fatal(err)
		}
		if err := (ffmpeg.Runner{}).Run(context.Background(), args, nil); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		parts = append(parts, out)
	}
	return parts
}

// packets lists a file's video packets as ffprobe reads them, in decoding
// order: presentation time (seconds), size and flags.
func packets(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "packet=pts_time,size,flags", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	return strings.Fields(string(out))
}

// decodedMD5 is the md5 of every decoded frame, in presentation order.
func decodedMD5(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", path, "-map", "0:v", "-f", "framemd5", "-").Output()
	if err != nil {
		t.Fatalf("framemd5 of %s: %v", path, err)
	}
	var sums []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Split(l, ","); len(f) == 6 && !strings.HasPrefix(l, "#") {
			sums = append(sums, strings.TrimSpace(f[5]))
		}
	}
	return sums
}

func concatFile(t *testing.T, out string, parts []string) error {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Concat(f, parts, JoinOptions{})
}

// TestConcatMatchesFFmpeg joins parts of every codec framefarm writes in
// MP4/MOV, at an integer and a fractional rate, and holds the result
// against ffmpeg's concat demuxer with stream copy (what the coordinator
// ran before): the same packets (sizes, key flags) in the same order, the
// same decoded frames, and presentation times exactly on the n/fps grid.
func TestConcatMatchesFFmpeg(t *testing.T) {
	needFFmpeg(t)
	pattern := makeFrames(t, 64, 64, 25)
	// Unequal parts, one of a single frame: x264 and x265 write no
	// B-frames and no initial delay for it.
	splitsLast, splitsFirst := []int{0, 10, 24, 25}, []int{0, 1, 13, 25}
	rates := []ffmpeg.Rate{{Num: 24, Den: 1}, {Num: 24000, Den: 1001}}
	cases := []ffmpeg.Settings{
		{Codec: "libx264", Preset: "veryfast", PixFmt: "yuv420p"}, // B-frames: ctts and an edit list
		{Codec: "libx265", Preset: "ultrafast", PixFmt: "yuv420p"},
		{Codec: "libvpx-vp9", Preset: "realtime", PixFmt: "yuv420p"},
		{Codec: "libsvtav1", Preset: "12", PixFmt: "yuv420p"},
		{Codec: "prores_ks", PixFmt: "yuv422p10le"},
		{Codec: "ffv1", PixFmt: "yuv420p"},
	}
	for _, s := range cases {
		for k, rate := range rates {
			s := s
			s.Rate, s.CRF = rate, -1
			splits := splitsLast
			if k == 1 {
				splits = splitsFirst
			}
			t.Run(fmt.Sprintf("%s-%s", s.Codec, strings.ReplaceAll(rate.String(), "/", "_")), func(t *testing.T) {
				t.Parallel()
				parts := encodeParts(t, pattern, s, splits)
				ext := filepath.Ext(parts[0])
				dir := t.TempDir()
				ours := filepath.Join(dir, "ours"+ext)
				if err := concatFile(t, ours, parts); err != nil {
					t.Fatalf("Concat: %v", err)
				}
				theirs := filepath.Join(dir, "theirs"+ext)
				list := filepath.Join(dir, "list.txt")
				lf, err := os.Create(list)
				if err != nil {
					t.Fatal(err)
				}
				var cp []ffmpeg.ConcatPart
				for k, p := range parts {
					cp = append(cp, ffmpeg.ConcatPart{Path: p, Frames: int64(splits[k+1] - splits[k])})
				}
				if err := ffmpeg.WriteConcatList(lf, rate, cp); err != nil {
					t.Fatal(err)
				}
				lf.Close()
				if err := (ffmpeg.Runner{}).Run(context.Background(), ffmpeg.ConcatArgs(list, theirs), nil); err != nil {
					t.Fatal(err)
				}

				tr, err := ReadFile(ours)
				if err != nil {
					t.Fatal(err)
				}
				delta := int64(tr.Timescale) * rate.Den / rate.Num
				if tr.Samples != 25 || !slices.Equal(tr.Deltas, []uint32{uint32(delta)}) || tr.Duration != 25*delta ||
					int64(tr.Timescale)*rate.Den != delta*rate.Num {
					t.Errorf("joined track: %+v, want 25 samples of %d ticks at %s fps", tr, delta, rate)
				}
				timing, err := ReadTiming(ours)
				if err != nil {
					t.Fatal(err)
				}
				times, scale := timing.Times, timing.Timescale
				for i, pts := range times {
					if pts != int64(i)*delta || scale != tr.Timescale {
						t.Fatalf("frame %d presented at %d/%d, want %d", i, pts, scale, int64(i)*delta)
					}
				}
				// ffprobe reads our file as ffmpeg's, packet for packet; the
				// times are printed to the microsecond, where ffmpeg's own
				// join may be off by its rounding, so they are held against
				// the exact grid instead.
				po, pt := packets(t, ours), packets(t, theirs)
				if len(po) != 25 || len(pt) != 25 {
					t.Fatalf("packets: ours %d, ffmpeg's %d, want 25", len(po), len(pt))
				}
				var ptsOurs []string
				for i := range po {
					a, b := strings.Split(po[i], ","), strings.Split(pt[i], ",")
					// ffmpeg's concat demuxer turns H.264 from MP4 into Annex
					// B (its auto_convert), and the muxer keeps the SPS and
					// PPS that this puts in front of every key frame: those
					// packets are larger by that much. Ours keep the
					// encoder's bytes, whose parameter sets are in avcC.
					sizeOK := a[1] == b[1] || s.Codec == "libx264" && a[2] == "K_"
					if !sizeOK || a[2] != b[2] {
						t.Errorf("packet %d: ours %s, ffmpeg's %s (size, flags)", i, po[i], pt[i])
					}
					ptsOurs = append(ptsOurs, a[0])
				}
				slices.Sort(ptsOurs)
				for i, p := range ptsOurs {
					if want := rate.Seconds(int64(i)); p != want {
						t.Errorf("ffprobe: frame %d presented at %s s, want %s", i, p, want)
					}
				}
				if a, b := decodedMD5(t, ours), decodedMD5(t, theirs); !slices.Equal(a, b) || len(a) != 25 {
					t.Errorf("decoded frames differ from ffmpeg's join:\nours   %v\ntheirs %v", a, b)
				}
			})
		}
	}
}

// TestConcatRefusesMismatch: parts that one track cannot hold (another
// codec, another time scale) are refused with ErrCannotJoin, and nothing
// is written.
func TestConcatRefusesMismatch(t *testing.T) {
	needFFmpeg(t)
	pattern := makeFrames(t, 64, 64, 6)
	x264 := ffmpeg.Settings{Codec: "libx264", Preset: "veryfast", PixFmt: "yuv420p", Rate: ffmpeg.Rate{Num: 24, Den: 1}, CRF: -1}
	a := encodeParts(t, pattern, x264, []int{0, 3, 6})
	other := x264 // CABAC off and one reference: another SPS and PPS
	other.Preset = "ultrafast"
	b := encodeParts(t, pattern, other, []int{0, 3})
	slower := x264
	slower.Rate = ffmpeg.Rate{Num: 25, Den: 1}
	c := encodeParts(t, pattern, slower, []int{0, 3})
	for name, parts := range map[string][]string{
		"other settings":   {a[0], b[0]},
		"other time scale": {a[0], c[0]},
		"not a part":       {a[0], pattern[:len(pattern)-len("%06d.png")] + "000000.png"},
	} {
		out := filepath.Join(t.TempDir(), "out.mp4")
		err := concatFile(t, out, parts)
		if err == nil {
			t.Errorf("%s: joined", name)
			continue
		}
		if name != "not a part" && !errors.Is(err, ErrCannotJoin) {
			t.Errorf("%s: %v, want ErrCannotJoin", name, err)
		}
		if fi, _ := os.Stat(out); fi.Size() != 0 {
			t.Errorf("%s: %d bytes written before the refusal", name, fi.Size())
		}
	}
	if err := concatFile(t, filepath.Join(t.TempDir(), "ok.mp4"), a); err != nil {
		t.Errorf("two parts of one encode: %v", err)
	}
}
