package node

import (
	"slices"
	"testing"

	"github.com/framefarm/framefarm/internal/ffmpeg"
)

func TestEncoderThreads(t *testing.T) {
	for _, tc := range []struct{ cores, slots, want int }{
		{2, 2, 1}, {2, 1, 2}, {8, 2, 4}, {8, 3, 2}, {1, 2, 1}, {4, 8, 1}, {4, 0, 4},
	} {
		if got := encoderThreads(tc.cores, tc.slots); got != tc.want {
			t.Errorf("encoderThreads(%d cores, %d slots) = %d, want %d", tc.cores, tc.slots, got, tc.want)
		}
	}
}

// The thread count reaches ffmpeg as an output (encoder) option, after the
// input, with the filter graph's threads left at their default, and leaves
// the command line alone when 0.
func TestThreadsOnTheCommandLine(t *testing.T) {
	s := ffmpeg.Settings{Codec: "libx264", Rate: ffmpeg.Rate{Num: 24, Den: 1}, CRF: -1, PixFmt: "yuv420p", Threads: 3}
	args, err := ffmpeg.EncodeArgs("in/%06d.png", s, "out.mp4")
	if err != nil {
		t.Fatal(err)
	}
	i, in := slices.Index(args, "-threads"), slices.Index(args, "-i")
	if i < 0 || args[i+1] != "3" || i < in {
		t.Errorf("-threads 3 missing or before the input: %q", args)
	}
	// Without it the filter graph would take the encoder's thread count,
	// and convert BGR frames otherwise than plain ffmpeg (TestFormats).
	if f := slices.Index(args, "-filter_threads"); f < 0 || f > in || args[f+1] != "0" {
		t.Errorf("-filter_threads 0 missing before the input: %q", args)
	}
	s.Threads = 0
	if args, _ = ffmpeg.EncodeArgs("in/%06d.png", s, "out.mp4"); slices.Contains(args, "-threads") || slices.Contains(args, "-filter_threads") {
		t.Errorf("-threads given for Threads 0: %q", args)
	}
}

// The job's filter thread count reaches ffmpeg whatever the encoder threads,
// for the encode and for the normalising of scaled frames alike.
func TestJobFilterThreadsOnTheCommandLine(t *testing.T) {
	s := ffmpeg.Settings{Codec: "ffv1", Rate: ffmpeg.Rate{Num: 24, Den: 1}, CRF: -1, PixFmt: "yuv420p", Threads: 1, FilterThreads: 5, ScaleW: 64, ScaleH: 48}
	for _, threads := range []int{0, 1} {
		s.Threads = threads
		args, err := ffmpeg.EncodeArgs("in/%06d.png", s, "out.mov")
		if err != nil {
			t.Fatal(err)
		}
		if f, in := slices.Index(args, "-filter_threads"), slices.Index(args, "-i"); f < 0 || f > in || args[f+1] != "5" {
			t.Errorf("threads %d: -filter_threads 5 missing before the input: %q", threads, args)
		}
	}
	args := ffmpeg.NormalizeArgs("in/000000.bmp", s, "out/000000.png")
	if f, in := slices.Index(args, "-filter_threads"), slices.Index(args, "-i"); f < 0 || f > in || args[f+1] != "5" {
		t.Errorf("normalising: -filter_threads 5 missing before the input: %q", args)
	}
}

func TestAutoFilterThreads(t *testing.T) {
	for cpus, want := range map[int]int{1: 1, 2: 3, 16: 17} {
		if got := ffmpeg.AutoFilterThreads(cpus); got != want {
			t.Errorf("AutoFilterThreads(%d) = %d, want %d", cpus, got, want)
		}
	}
}
