package mp4

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// The seed files under testdata are ffmpeg 5.1's, made with the node's
// options over 64x64 testsrc2 frames, scaled down to stay tiny:
//
//	h264-bframes.mp4   libx264 yuv420p, 8 frames at 24000/1001, timescale 24000 (ctts, edit list)
//	h264-faststart.mp4 libx264 yuv444p10le, -movflags +faststart (moov first)
//	hevc.mp4           libx265 -tag:v hvc1
//	vp9.mp4            libvpx-vp9
//	av1.mp4            libsvtav1, 64x64
//	prores.mov         prores_ks proxy
//	ffv1.mov           ffv1 -level 3

// pixFmts are the names Read may return.
var pixFmts = map[string]bool{"": true}

func init() {
	for _, base := range []string{"yuv420p", "yuv422p", "yuv444p", "gray", "gbrp"} {
		for _, d := range []string{"", "9le", "10le", "12le", "14le"} {
			pixFmts[base+d] = true
		}
	}
	for _, f := range []string{"yuvj420p", "yuvj422p", "yuvj444p", "yuva422p10le", "yuva444p10le", "yuva422p12le", "yuva444p12le"} {
		pixFmts[f] = true
	}
}

// FuzzRead: whatever the bytes, Read does not panic, and either refuses
// them with an error that wraps ErrNotMP4 or returns a track whose fields
// are consistent.
func FuzzRead(f *testing.F) {
	for _, p := range seedFiles(f) {
		f.Add(mustRead(f, p))
	}
	sizes, ones := []uint32{5, 3, 7, 1}, []uint32{1, 1, 1, 1}
	f.Add(synth{sizes: sizes, deltas: ones, moovFirst: true, largeMdat: true, co64: true, mdhdV1: true}.build())
	f.Add(synth{fourcc: "hvc1", sizes: sizes, deltas: ones, stz2: 4, perChunk: 2}.build())
	f.Add(synth{fourcc: "vp09", sizes: sizes, deltas: ones, moovFirst: true, mdatToEnd: true}.build())
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Read(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrNotMP4) {
				t.Fatalf("error that does not wrap ErrNotMP4: %v", err)
			}
			return
		}
		switch {
		case got.Codec == "":
			t.Fatalf("no codec: %+v", got)
		case got.Width < 0 || got.Width > 65535 || got.Height < 0 || got.Height > 65535:
			t.Fatalf("size %dx%d", got.Width, got.Height)
		case !pixFmts[got.PixFmt]:
			t.Fatalf("pixel format %q", got.PixFmt)
		case got.Timescale == 0:
			t.Fatalf("time scale 0")
		case got.Samples < 0 || got.Duration < 0:
			t.Fatalf("%d samples lasting %d", got.Samples, got.Duration)
		case got.Samples == 0 && (got.Duration != 0 || len(got.Deltas) != 0):
			t.Fatalf("no samples, yet a duration %d and deltas %v", got.Duration, got.Deltas)
		case len(got.Deltas) > maxDeltas:
			t.Fatalf("%d deltas", len(got.Deltas))
		}
		d := slices.Clone(got.Deltas)
		slices.Sort(d)
		if len(slices.Compact(d)) != len(got.Deltas) {
			t.Fatalf("deltas repeat: %v", got.Deltas)
		}
	})
}

// FuzzJoinPart: whatever the bytes, reading them as a part to join does not
// panic, and a part it accepts has consistent tables: presentation times
// for every sample, chunks that hold every sample inside the file, and a
// joined moov that can be built from two copies of it.
func FuzzJoinPart(f *testing.F) {
	for _, p := range seedFiles(f) {
		f.Add(mustRead(f, p))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseJoinPart(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrNotMP4) && !errors.Is(err, ErrCannotJoin) && !strings.HasPrefix(err.Error(), "mp4: reading") {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if n := len(p.presentationTimes()); n != len(p.sizes) {
			t.Fatalf("%d presentation times for %d samples", n, len(p.sizes))
		}
		var held uint64
		for i, c := range p.chunks {
			held += uint64(p.perChunk[i])
			if c.off+c.size > uint64(len(data)) {
				t.Fatalf("chunk %d at %d+%d past the end (%d)", i, c.off, c.size, len(data))
			}
		}
		if held != uint64(len(p.sizes)) {
			t.Fatalf("chunks hold %d samples, not %d", held, len(p.sizes))
		}
		if _, err := joinedMoov([]*joinPart{p, p}, 0); err != nil && !errors.Is(err, ErrCannotJoin) && !errors.Is(err, ErrNotMP4) {
			t.Fatalf("joining: %v", err)
		}
	})
}
