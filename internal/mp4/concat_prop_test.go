package mp4

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestConcatTimingProperty joins parts of random lengths at random rates,
// some timed at the fps numerator (parts of earlier versions) and some at
// ffmpeg's default time scale for the rate, and checks that every frame of
// the joined track is presented at exactly k frame periods and that the
// track lasts exactly as many: no rounding anywhere, however many parts.
func TestConcatTimingProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1001))
	rates := [][2]uint32{{24, 1}, {25, 1}, {30, 1}, {60, 1}, {24000, 1001}, {30000, 1001}, {60000, 1001}, {2997, 100}, {1, 1}}
	counts := []int{1, 2, 60, 1000}
	for trial := range 12 {
		rate := rates[rng.IntN(len(rates))]
		nparts := counts[trial%len(counts)]
		target := rate[0]
		for target < 10000 {
			target *= 2
		}
		fastStart := trial%2 == 0
		t.Run(fmt.Sprintf("%d-%d_%d-x%d", trial, rate[0], rate[1], nparts), func(t *testing.T) {
			dir := t.TempDir()
			paths := make([]string, nparts)
			total := 0
			for i := range paths {
				n := 1 + rng.IntN(12)
				if rng.IntN(4) == 0 {
					n = 1
				}
				scale := target
				if rng.IntN(2) == 0 {
					scale = rate[0] // an earlier version's part: one tick per frame at the numerator
				}
				period := rate[1] * (scale / rate[0])
				s := synth{timescale: scale, compressor: "Lavc59.37.100 libx264", perChunk: 1}
				for range n {
					s.sizes = append(s.sizes, uint32(1+rng.IntN(40)))
					s.deltas = append(s.deltas, period)
				}
				paths[i] = filepath.Join(dir, fmt.Sprintf("p%04d.mp4", i))
				if err := os.WriteFile(paths[i], s.build(), 0o644); err != nil {
					t.Fatal(err)
				}
				total += n
			}
			out := filepath.Join(dir, "joined.mp4")
			var buf bytes.Buffer
			if err := Concat(&buf, paths, JoinOptions{Timescale: target, FastStart: fastStart}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			tm, err := ReadTiming(out)
			if err != nil {
				t.Fatal(err)
			}
			if tm.Timescale != target || len(tm.Times) != total {
				t.Fatalf("time scale %d with %d frames, want %d with %d", tm.Timescale, len(tm.Times), target, total)
			}
			period := int64(rate[1]) * int64(target/rate[0])
			for k, pts := range tm.Times {
				// k frame periods of Den/Num s are k*Den*target/Num ticks.
				if pts*int64(rate[0]) != int64(k)*int64(rate[1])*int64(target) {
					t.Fatalf("frame %d at %d ticks of 1/%d, want %d", k, pts, target, int64(k)*period)
				}
			}
			if tm.Duration != int64(total)*period {
				t.Fatalf("duration %d ticks, want %d", tm.Duration, int64(total)*period)
			}
			tr, err := ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Samples != int64(total) || tr.Timescale != target || tr.Compressor != "Lavc59.37.100 libx264" {
				t.Fatalf("joined track: %d samples at 1/%d, compressor %q", tr.Samples, tr.Timescale, tr.Compressor)
			}
			if moov, mdat := bytes.Index(buf.Bytes(), []byte("moov")), bytes.Index(buf.Bytes(), []byte("mdat")); (moov < mdat) != fastStart {
				t.Fatalf("moov at %d, mdat at %d, fast start %v", moov, mdat, fastStart)
			}
			// Every sample's bytes land where the joined tables say: the
			// parts' bytes, in order.
			var want []byte
			for _, p := range paths {
				b, _ := os.ReadFile(p)
				i := bytes.Index(b, []byte("mdat"))
				want = append(want, b[i+4:i+4+len(b)-i-4-len(moovOf(t, b))]...)
			}
			jp, err := readJoinPart(out)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for _, c := range jp.chunks {
				got = append(got, buf.Bytes()[c.off:c.off+c.size]...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("the joined samples' bytes differ from the parts' (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

// moovOf returns the moov box at the end of a synth file.
func moovOf(t *testing.T, b []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(b, []byte("moov"))
	if i < 4 {
		t.Fatal("no moov")
	}
	return b[i-4:]
}
