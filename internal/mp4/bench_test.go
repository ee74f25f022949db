package mp4

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/framefarm/framefarm/internal/ffmpeg"
)

// BenchmarkRead reads a realistic part, 75 frames of 1280x720 encoded as
// a node does (libx264, default preset), from its file: what a node or the
// coordinator does per part instead of running ffprobe -count_packets.
// Encoding it takes some seconds; it is made once per run.
func BenchmarkRead(b *testing.B) {
	needFFmpeg(b)
	pattern := makeFrames(b, 1280, 720, 75)
	part := filepath.Join(b.TempDir(), "part.mp4")
	args, err := ffmpeg.EncodeArgs(pattern, ffmpeg.Settings{Codec: "libx264", Rate: ffmpeg.Rate{Num: 24, Den: 1}, CRF: -1}, part)
	if err != nil {
		b.Fatal(err)
	}
	if err := (ffmpeg.Runner{}).Run(b.Context(), args, nil); err != nil {
		b.Fatal(err)
	}
	b.Logf("part: %s", part)
	b.ReportAllocs()
	for b.Loop() {
		t, err := ReadFile(part)
		if err != nil || t.Samples != 75 {
			b.Fatal(t, err)
		}
	}
}

// BenchmarkReadSeeds reads the small seed files from memory: the cost of
// the parsing alone.
func BenchmarkReadSeeds(b *testing.B) {
	for _, f := range seedFiles(b) {
		data := mustRead(b, f)
		b.Run(filepath.Base(f), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Read(bytes.NewReader(data), int64(len(data))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
