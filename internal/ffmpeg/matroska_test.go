package ffmpeg

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The Go reading of a Matroska file's timing must agree with ffprobe's on
// the files the join writes.
func TestReadMatroskaTimingMatchesFFprobe(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed")
	}
	dir := t.TempDir()
	cases := []struct {
		name, rate string
		args       []string
	}{
		{"ffv1.mkv", "24", []string{"-c:v", "ffv1", "-write_crc32", "0"}},
		{"ffv1-crc.mkv", "24", []string{"-c:v", "ffv1"}},
		// B-frames: blocks are stored out of presentation order.
		{"x264.mkv", "24000/1001", []string{"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0"}},
		{"x264-bframes.mkv", "24000/1001", []string{"-c:v", "libx264", "-preset", "medium", "-bf", "3", "-write_crc32", "0"}},
		{"vp9.webm", "24000/1001", []string{"-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name)
			args := append([]string{"-v", "error", "-f", "lavfi", "-i", "testsrc2=s=128x72:r=" + tc.rate, "-frames:v", "61", "-pix_fmt", "yuv420p"}, tc.args...)
			if b, err := exec.Command("ffmpeg", append(args, "-y", out)...).CombinedOutput(); err != nil {
				if strings.Contains(string(b), "Unknown encoder") {
					t.Skip(string(b))
				}
				t.Fatalf("ffmpeg: %v: %s", err, b)
			}
			want, err := Runner{}.ProbeVideo(context.Background(), out, true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadMatroskaTiming(out)
			if err != nil {
				t.Fatal(err)
			}
			if got.Packets != want.Packets || len(got.PTS) != len(want.PTS) {
				t.Fatalf("%d packets, %d timestamps; ffprobe: %d, %d", got.Packets, len(got.PTS), want.Packets, len(want.PTS))
			}
			for i := range got.PTS {
				if math.Abs(got.PTS[i]-want.PTS[i]) > 1e-9 {
					t.Fatalf("frame %d at %.9f s; ffprobe: %.9f", i, got.PTS[i], want.PTS[i])
				}
			}
			if math.Abs(got.Duration-want.Duration) > 1e-6 || want.StreamDuration != 0 {
				t.Errorf("duration %.6f s; ffprobe: %.6f (stream %.6f)", got.Duration, want.Duration, want.StreamDuration)
			}
			if ratio(t, got.TimeBase) != ratio(t, want.TimeBase) {
				t.Errorf("time base %s; ffprobe: %s", got.TimeBase, want.TimeBase)
			}
			// Cut short, it is refused rather than read as fewer frames.
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, cut := range []int{len(b) / 2, len(b) - 1} {
				if p, err := readMatroska(bytesReaderAt(b[:cut]), int64(cut)); err == nil {
					t.Errorf("cut at %d of %d bytes: read as %d frames", cut, len(b), p.Packets)
				}
			}
		})
	}
}

func ratio(t *testing.T, tb string) float64 {
	var num, den float64
	if _, err := fmt.Sscanf(tb, "%g/%g", &num, &den); err != nil || den == 0 {
		t.Fatalf("time base %q: %v", tb, err)
	}
	return num / den
}

// A file that is not Matroska, or is cut short, is refused, never read as
// a shorter video.
func TestReadMatroskaTimingRefuses(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("not a video at all"), {0x1A, 0x45, 0xDF, 0xA3, 0x84, 0, 0}} {
		if p, err := readMatroska(bytesReaderAt(b), int64(len(b))); err == nil {
			t.Errorf("% x: read as %+v", b, p)
		}
	}
}

// Whatever the bytes, reading them fails or succeeds, and never panics.
func FuzzReadMatroska(f *testing.F) {
	f.Add([]byte{0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x80})
	f.Add([]byte{0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x8B,
		0x16, 0x54, 0xAE, 0x6B, 0x86, 0xAE, 0x84, 0xD7, 0x81, 0x01, 0x83, 0x81})
	f.Add([]byte{0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67, 0x95,
		0x16, 0x54, 0xAE, 0x6B, 0x87, 0xAE, 0x85, 0xD7, 0x81, 0x01, 0x83, 0x81, 0x01,
		0x1F, 0x43, 0xB6, 0x75, 0x88, 0xE7, 0x81, 0x00, 0xA3, 0x84, 0x81, 0x00, 0x00, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = readMatroska(bytesReaderAt(b), int64(len(b)))
	})
}
