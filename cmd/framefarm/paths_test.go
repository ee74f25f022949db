package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPathsWithQuotesSpacesAndNonASCII: a frames folder, frame names, --data
// and --out whose paths hold spaces, single and double quotes, backslashes,
// shell and URL characters and non-ASCII letters. The job completes (the
// concat list names the parts inside --data), and the video equals one
// ffmpeg run over the same frames, frame for frame.
func TestPathsWithQuotesSpacesAndNonASCII(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	root := t.TempDir()
	plain := filepath.Join(root, "plain")
	genFrames(t, plain, 12, 1, "64x48")

	frames := filepath.Join(root, `my "frames" ü 'x'`)
	if err := os.Mkdir(frames, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 12; i++ {
		b, err := os.ReadFile(filepath.Join(plain, fmt.Sprintf("f_%04d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf(`shot 'ü' "q" $x %%d #1_%04d.png`, i)
		if err := os.WriteFile(filepath.Join(frames, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(root, `data "d" ü 'x' $HOME \ #?`)
	outDir := filepath.Join(root, ` out 'o' "ü" `)
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, `video 'v' "q" ü.mkv`)
	f := startFarm(t, frames, 2, "--codec", "ffv1", "--sets", "3", "--data", data, "--out", out, "--keep-parts")
	fetched := filepath.Join(outDir, `fetched 'ü'.mkv`)
	f.fetch(t, fetched)

	sameAsOneRun(t, out, plain, 12)
	if a, b := sha(t, out), sha(t, fetched); a != b {
		t.Fatalf("fetched video sha256 %s differs from --out %s", b, a)
	}
	// The parts and the final video are where --data says.
	final := filepath.Join(data, "jobs", f.job, "final.mkv")
	if sha(t, final) != sha(t, out) {
		t.Fatalf("%s differs from --out", final)
	}
	parts, err := os.ReadDir(filepath.Join(data, "jobs", f.job, "parts"))
	if err != nil || len(parts) != 3 {
		t.Fatalf("parts in --data: %v %v, want 3", parts, err)
	}
	if strings.Contains(f.coord.out.String(), "level=ERROR") {
		t.Fatalf("the coordinator logged an error:\n%s", f.coord.out.String())
	}
}

// TestNonUTF8NamesRefused: frame names that are not UTF-8 (from a Latin-1
// disk) cannot travel in the farm's messages: the coordinator refuses them
// up front, naming the files, instead of starting a job no node can get.
func TestNonUTF8NamesRefused(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	frames := filepath.Join(root, "frames")
	if err := os.Mkdir(frames, 0o755); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 16, 16))); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := os.WriteFile(filepath.Join(frames, fmt.Sprintf("caf\xe9_%04d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(root, "data")
	code, stdout, stderr := secRun(t, nil, "coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, `caf\xe9_0001.png`) || !strings.Contains(stderr, "not valid UTF-8") || !strings.Contains(stderr, "rename") {
		t.Fatalf("exit %d, want 1 and a message naming caf\\xe9_0001.png:\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the refused job created --data: %v", err)
	}
}
