package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// runBinary runs the real binary to its end and returns its exit code and
// output.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("running framefarm %v: %v", args, err)
		return -1, "", ""
	}
}

// snapshot lists every file below dir with its size and modification time,
// to show that a refused job changed nothing.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err == nil {
			fmt.Fprintf(&b, "%s %d %d\n", p, fi.Size(), fi.ModTime().UnixNano())
		}
		return nil
	})
	return b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBadInputIsRefused: each bad input or setting stops the coordinator
// before any work, with exit 1, a message naming what is wrong and a hint,
// and nothing on disk changed.
func TestBadInputIsRefused(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	tmp := t.TempDir()
	good := filepath.Join(tmp, "good")
	genFrames(t, good, 6, 1, "64x48")

	tests := []struct {
		name  string
		setup func(dir string) // makes the frames folder
		args  []string
		words []string // all must appear in stderr
	}{
		{"missing folder", nil, nil, []string{"does not exist", "--frames"}},
		{"empty folder", func(d string) { os.MkdirAll(d, 0o755) }, nil, []string{"empty"}},
		{"no numbered images", func(d string) {
			writeFile(t, filepath.Join(d, "notes.txt"), "x")
			writeFile(t, filepath.Join(d, "cover.png"), "x")
		},
			nil, []string{"no numbered images", "png"}},
		{"two patterns", func(d string) {
			genFrames(t, d, 3, 1, "64x48")
			runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "2", filepath.Join(d, "g_%04d.png"))
		}, nil, []string{"f_####.png", "g_####.png", "--pattern"}},
		{"gaps", func(d string) {
			genFrames(t, d, 12, 1, "64x48")
			for _, n := range []int{5, 6, 7, 10} {
				os.Remove(filepath.Join(d, fmt.Sprintf("f_%04d.png", n)))
			}
		}, nil, []string{"5-7", "10", "--gaps hold", "--gaps skip"}},
		{"mixed dimensions", func(d string) {
			genFrames(t, d, 4, 1, "64x48")
			runCmd(t, "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=80x48", "-frames:v", "1", "-update", "1", filepath.Join(d, "f_0003.png"))
		}, nil, []string{"f_0003.png", "80x48", "64x48", "--scale"}},
		{"mixed pixel formats", func(d string) {
			genFrames(t, d, 4, 1, "64x48")
			runCmd(t, "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1", "-update", "1", "-pix_fmt", "gray", filepath.Join(d, "f_0002.png"))
		}, nil, []string{"f_0002.png", "gray", "pixel formats", "--scale"}},
		{"truncated png", func(d string) {
			genFrames(t, d, 4, 1, "64x48")
			b, _ := os.ReadFile(filepath.Join(d, "f_0002.png"))
			os.WriteFile(filepath.Join(d, "f_0002.png"), b[:len(b)/2], 0o644)
		}, nil, []string{"f_0002.png", "frame 2"}},
		{"text file named png", func(d string) {
			genFrames(t, d, 4, 1, "64x48")
			writeFile(t, filepath.Join(d, "f_0004.png"), "this is not an image\n")
		}, nil, []string{"f_0004.png", "frame 4"}},
		{"unknown codec", copyOf(t, good), []string{"--codec", "h266"}, []string{"h266", "libx264"}},
		{"container cannot hold codec", copyOf(t, good), []string{"--codec", "ffv1", "--out", "{tmp}/x.mp4"}, []string{".mp4", "ffv1", ".mkv"}},
		{"no container extension", copyOf(t, good), []string{"--out", "{tmp}/video"}, []string{"no extension"}},
		{"bad fps word", copyOf(t, good), []string{"--fps", "fast"}, []string{"--fps", "fast", "24000/1001"}},
		{"zero fps", copyOf(t, good), []string{"--fps", "0"}, []string{"--fps", "positive"}},
		{"negative fps ratio", copyOf(t, good), []string{"--fps", "-24/1"}, []string{"--fps"}},
		{"zero sets", copyOf(t, good), []string{"--sets", "0"}, []string{"--sets", "at least 1"}},
		{"crf out of range", copyOf(t, good), []string{"--crf", "60"}, []string{"--crf 60", "0 to 51"}},
		{"crf on ffv1", copyOf(t, good), []string{"--codec", "ffv1", "--out", "{tmp}/x.mkv", "--crf", "10"}, []string{"--crf", "ffv1"}},
		{"bad preset", copyOf(t, good), []string{"--preset", "ludicrous"}, []string{"ludicrous", "veryfast"}},
		{"hold over a huge jump", func(d string) {
			genFrames(t, d, 3, 1, "64x48")
			os.Rename(filepath.Join(d, "f_0003.png"), filepath.Join(d, "f_99999999.png"))
		}, []string{"--gaps", "hold"}, []string{"--gaps hold", "99999999", "--gaps skip"}},
		{"bad gaps policy", copyOf(t, good), []string{"--gaps", "fill"}, []string{"--gaps", "hold", "skip"}},
		{"bad scale", copyOf(t, good), []string{"--scale", "big"}, []string{"--scale", "WIDTHxHEIGHT"}},
		{"out folder missing", copyOf(t, good), []string{"--out", "{tmp}/nowhere/x.mp4"}, []string{"--out", "cannot write"}},
		{"out is a folder", func(d string) { copyOf(t, good)(d); os.MkdirAll(filepath.Join(filepath.Dir(d), "v.mp4"), 0o755) },
			[]string{"--out", "{tmp}/v.mp4"}, []string{"--out", "is a folder"}},
		{"pattern matches nothing", copyOf(t, good), []string{"--pattern", "zz_####.png"}, []string{"zz_####.png"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(tmp, fmt.Sprintf("case%02d", i), "frames")
			if tc.setup != nil {
				tc.setup(dir)
			}
			before := snapshot(t, filepath.Dir(dir))
			args := []string{"coordinator", "--frames", dir, "--data", filepath.Join(tmp, fmt.Sprintf("case%02d", i), "data"), "--listen", "127.0.0.1:0"}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "{tmp}", filepath.Dir(dir)))
			}
			code, stdout, stderr := runBinary(t, nil, args...)
			if code != 1 {
				t.Fatalf("exit code %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			for _, w := range tc.words {
				if !strings.Contains(stderr, w) {
					t.Errorf("message lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stdout, "listening") {
				t.Errorf("the coordinator started serving: %s", stdout)
			}
			after := snapshot(t, filepath.Dir(dir))
			// A refused job may leave an empty --data folder, never a
			// changed frame or a stray file elsewhere.
			if strip(after, "/data") != strip(before, "/data") {
				t.Errorf("files changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// copyOf returns a setup that copies the frames of src into the case's folder.
func copyOf(t *testing.T, src string) func(dir string) {
	return func(dir string) {
		if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
	}
}

func strip(listing, sub string) string {
	var keep []string
	for _, l := range strings.Split(listing, "\n") {
		if !strings.Contains(l, sub) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// sameAsFFmpeg renders frames on a one-node farm with FFV1 and holds the
// decoded result against one ffmpeg run over ref (a printf pattern) with
// the same filters.
func sameAsFFmpeg(t *testing.T, frames, refPattern string, refStart int, vf string, farmArgs ...string) *farm {
	t.Helper()
	tmp := t.TempDir()
	out := filepath.Join(tmp, "farm.mkv")
	f := startFarm(t, frames, 1, append([]string{"--codec", "ffv1", "--out", out, "--sets", "2"}, farmArgs...)...)
	f.fetch(t, filepath.Join(tmp, "fetched.mkv"))
	// On the coordinator's host the node reads the frames from its folder:
	// the video below is made from them, not from streamed copies.
	waitOutput(t, f.nodes[0], "frames=shared", 10*time.Second)
	sameFramesAsFFmpeg(t, out, refPattern, refStart, vf)
	return f
}

// sameFramesAsFFmpeg holds the farm's FFV1 video out, decoded, against one
// plain ffmpeg run over refPattern (a printf pattern) with the filters vf.
func sameFramesAsFFmpeg(t *testing.T, out, refPattern string, refStart int, vf string) {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref.mkv")
	var before []string
	if vf != "" {
		before = append(before, vf)
	}
	in, colour := plainColour(t, fmt.Sprintf(refPattern, refStart), "ffv1", "yuv420p", "mkv", before...)
	args := append(in, "-v", "error", "-framerate", "24", "-start_number", fmt.Sprint(refStart), "-i", refPattern)
	runCmd(t, "ffmpeg", append(append(append(args, "-c:v", "ffv1", "-level", "3", "-pix_fmt", "yuv420p"), colour...), ref)...)
	got, want := framemd5(t, out), framemd5(t, ref)
	if len(got) != len(want) {
		t.Fatalf("farm has %d frames, ffmpeg %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frame %d differs: farm %q, ffmpeg %q", i, got[i], want[i])
		}
	}
}

// TestVideoIndependentOfNodeCores: ffmpeg converts BGR frames (BMP, TGA)
// to YUV a little differently with another filter thread count, and its
// default count follows the machine's cores. A node that sees one core
// still renders what one plain ffmpeg run on the coordinator's machine
// makes of the frames, whichever way the sets were spread over the farm.
func TestVideoIndependentOfNodeCores(t *testing.T) {
	needFFmpeg(t)
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs: with one, a node cannot see fewer cores than the coordinator")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		lacking(t, "no taskset (util-linux) to give the node one core")
	}
	t.Parallel()
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	os.MkdirAll(frames, 0o755)
	pattern := filepath.Join(frames, "f_%04d.bmp")
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=24", "-frames:v", "6", "-start_number", "1", "-pix_fmt", "bgr24", pattern)
	out := filepath.Join(tmp, "farm.mkv")
	f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "2")
	_, am := start(t, "ambassador", ambReady, "ambassador", "--coordinator", f.addr, "--listen", "127.0.0.1:0")
	startCmd(t, "node (one core)", func(c *exec.Cmd) {
		c.Args = append([]string{taskset, "-c", "0"}, c.Args...)
		c.Path = taskset
	}, nil, "node", "--ambassador", am[1], "--name", "one-core", "--once")
	f.fetch(t, filepath.Join(tmp, "fetched.mkv"))
	sameFramesAsFFmpeg(t, out, pattern, 1, "")
}

// TestFormats: one farm run per supported image format, each frame-exact.
func TestFormats(t *testing.T) {
	needFFmpeg(t)
	for _, ext := range []string{"png", "jpg", "tif", "exr", "bmp", "webp", "dpx", "tga"} {
		t.Run(ext, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "frames")
			os.MkdirAll(dir, 0o755)
			pattern := filepath.Join(dir, "f_%04d."+ext)
			// image2 by name, and still WebP: ".webp" alone gives one animated file.
			runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=24", "-frames:v", "6", "-start_number", "1", "-f", "image2", "-c:v", codecFor(ext), pattern)
			sameAsFFmpeg(t, dir, pattern, 1, "")
		})
	}
}

// TestGapPolicies: --gaps hold repeats the previous frame for each missing
// number; --gaps skip closes the gaps up. Each equals ffmpeg over a folder
// filled or renumbered by hand.
func TestGapPolicies(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	genFrames(t, frames, 12, 1, "64x48")
	missing := map[int]bool{5: true, 6: true, 7: true, 10: true}
	for n := range missing {
		os.Remove(filepath.Join(frames, fmt.Sprintf("f_%04d.png", n)))
	}
	held, skipped := filepath.Join(tmp, "held"), filepath.Join(tmp, "skipped")
	os.MkdirAll(held, 0o755)
	os.MkdirAll(skipped, 0o755)
	last, k := 0, 0
	for n := 1; n <= 12; n++ {
		if !missing[n] {
			last = n
			link(t, filepath.Join(frames, fmt.Sprintf("f_%04d.png", n)), filepath.Join(skipped, fmt.Sprintf("f_%04d.png", k)))
			k++
		}
		link(t, filepath.Join(frames, fmt.Sprintf("f_%04d.png", last)), filepath.Join(held, fmt.Sprintf("f_%04d.png", n)))
	}
	t.Run("hold", func(t *testing.T) {
		sameAsFFmpeg(t, frames, filepath.Join(held, "f_%04d.png"), 1, "", "--gaps", "hold")
	})
	t.Run("skip", func(t *testing.T) {
		sameAsFFmpeg(t, frames, filepath.Join(skipped, "f_%04d.png"), 0, "", "--gaps", "skip")
	})
}

func link(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestScaleAndPad: --scale brings mixed sizes to one; odd sizes are padded
// to even for 4:2:0, and the job says so.
func TestScaleAndPad(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	t.Run("scale", func(t *testing.T) {
		frames := filepath.Join(t.TempDir(), "frames")
		genFrames(t, frames, 6, 1, "64x48")
		runCmd(t, "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=80x60", "-frames:v", "1", "-update", "1", filepath.Join(frames, "f_0004.png"))
		// Mixed sizes make ffmpeg rebuild its filters mid-stream, so one run
		// over them depends on where the sizes change; the farm scales each
		// frame on its own first, and so does this reference.
		ref := filepath.Join(t.TempDir(), "normalized")
		os.MkdirAll(ref, 0o755)
		for i := 1; i <= 6; i++ {
			name := fmt.Sprintf("f_%04d.png", i)
			runCmd(t, "ffmpeg", "-v", "error", "-i", filepath.Join(frames, name), "-vf", "scale=64:48,setsar=1", "-pix_fmt", "rgb48be", filepath.Join(ref, name))
		}
		sameAsFFmpeg(t, frames, filepath.Join(ref, "f_%04d.png"), 1, "", "--scale", "64x48")
	})
	t.Run("odd size padded", func(t *testing.T) {
		frames := filepath.Join(t.TempDir(), "frames")
		// testsrc2 rounds its size to even, and so does crop in 4:2:0.
		os.MkdirAll(frames, 0o755)
		runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=66x50", "-frames:v", "6", "-vf", "format=rgb24,crop=65:49:0:0", filepath.Join(frames, "f_%04d.png"))
		f := sameAsFFmpeg(t, frames, filepath.Join(frames, "f_%04d.png"), 1, "pad=ceil(iw/2)*2:ceil(ih/2)*2")
		if out := f.coord.out.String(); !strings.Contains(out, "padded from 65x49") {
			t.Fatalf("the coordinator did not say it padded the frames:\n%s", out)
		}
	})
}

// TestFrameChangedFailsJob: a frame rewritten after the job started fails
// the job, naming the frame, rather than mixing two versions.
func TestFrameChangedFailsJob(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	genFrames(t, frames, 8, 1, "64x48")
	f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", filepath.Join(tmp, "x.mkv"), "--sets", "2")
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(frames, "f_0003.png"), future, future); err != nil {
		t.Fatal(err)
	}
	_, am := start(t, "ambassador", ambReady, "ambassador", "--coordinator", f.addr, "--listen", "127.0.0.1:0")
	start(t, "node", nil, "node", "--ambassador", am[1], "--name", "n1", "--once")
	code, _, stderr := runBinary(t, nil, "fetch", "--coordinator", f.addr, "-o", filepath.Join(tmp, "fetched.mkv"), "--wait")
	if code != 1 || !strings.Contains(stderr, "f_0003.png") || !strings.Contains(stderr, "changed") {
		t.Fatalf("fetch: exit %d, want 1 naming f_0003.png as changed:\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(tmp, "x.mkv")); err == nil {
		t.Fatal("a video was written although a frame changed")
	}
}

// codecFor is the still-image encoder of each format's extension.
func codecFor(ext string) string {
	switch ext {
	case "jpg":
		return "mjpeg"
	case "tif":
		return "tiff"
	case "webp":
		return "libwebp"
	case "tga":
		return "targa"
	}
	return ext
}
