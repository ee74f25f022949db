package node

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/framefarm/framefarm/internal/ffmpeg"
	farmpb "github.com/framefarm/framefarm/proto"
)

// sharedSet writes frames named in names into a new folder and returns the
// assignment a coordinator would give for them.
func sharedSet(t *testing.T, names ...string) *farmpb.Assignment {
	t.Helper()
	a := &farmpb.Assignment{Settings: &farmpb.EncodeSettings{FrameExt: "png"}}
	var frames [][]byte
	for i, name := range names {
		frames = append(frames, []byte(strings.Repeat("x", 10+i)))
		a.Frames = append(a.Frames, &farmpb.FrameInfo{Number: int64(i + 1), Name: name})
	}
	sharedFrames(t, a, frames)
	return a
}

func TestLinkSharedNamesTheSequence(t *testing.T) {
	// The same file twice, as --gaps hold repeats a frame.
	a := sharedSet(t, "a 1.png", "b'2.png")
	a.Frames = append(a.Frames, a.Frames[1])
	dir := t.TempDir()
	if err := linkShared(dir, a); err != nil {
		t.Fatal(err)
	}
	for pos, want := range []string{"a 1.png", "b'2.png", "b'2.png"} {
		got, err := os.Readlink(filepath.Join(dir, []string{"000000.png", "000001.png", "000002.png"}[pos]))
		if err != nil {
			t.Fatal(err)
		}
		if got != filepath.Join(a.FramesDir, want) {
			t.Errorf("position %d links to %s, want %s", pos, got, want)
		}
	}
	if err := sharedUnchanged(a); err != nil {
		t.Errorf("unchanged frames: %v", err)
	}
}

func TestLinkSharedRefusesFramesThatAreNotTheCoordinators(t *testing.T) {
	cases := map[string]func(a *farmpb.Assignment){
		"no folder":       func(a *farmpb.Assignment) { a.FramesDir = "" },
		"relative folder": func(a *farmpb.Assignment) { a.FramesDir = "frames" },
		"older coordinator, no time": func(a *farmpb.Assignment) {
			a.Frames[1].MtimeNs = 0
		},
		"name outside the folder": func(a *farmpb.Assignment) { a.Frames[1].Name = "../f2.png" },
		"other size":              func(a *farmpb.Assignment) { a.Frames[1].Size++ },
		"other time":              func(a *farmpb.Assignment) { a.Frames[1].MtimeNs++ },
		"missing here":            func(a *farmpb.Assignment) { os.Remove(filepath.Join(a.FramesDir, a.Frames[1].Name)) },
		"rewritten since": func(a *farmpb.Assignment) {
			p := filepath.Join(a.FramesDir, a.Frames[1].Name)
			os.WriteFile(p, []byte("yyyyyyyyyyy"), 0o644) // the same size
			later := time.Unix(0, a.Frames[1].MtimeNs).Add(time.Second)
			os.Chtimes(p, later, later)
		},
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			a := sharedSet(t, "f1.png", "f2.png", "f3.png")
			spoil(a)
			dir := t.TempDir()
			if err := linkShared(dir, a); err == nil {
				t.Fatal("linked frames that are not the coordinator's")
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("left %d files behind", len(left))
			}
		})
	}
}

func TestSharedFrameChangedAfterLinking(t *testing.T) {
	a := sharedSet(t, "f1.png", "f2.png")
	if err := linkShared(t.TempDir(), a); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(a.FramesDir, "f2.png")
	later := time.Unix(0, a.Frames[1].MtimeNs).Add(time.Millisecond)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	if err := sharedUnchanged(a); err == nil || !strings.Contains(err.Error(), "f2.png") {
		t.Errorf("a frame touched after linking: %v, want an error naming f2.png", err)
	}
}

// sharedFrames writes the set's frames into a folder, as the coordinator's
// own, points the assignment at it and records each frame's size and
// modification time as the coordinator does.
func sharedFrames(t *testing.T, a *farmpb.Assignment, frames [][]byte) {
	t.Helper()
	a.FramesDir = t.TempDir()
	for i, f := range a.Frames {
		p := filepath.Join(a.FramesDir, f.Name)
		if err := os.WriteFile(p, frames[i], 0o644); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Size, f.MtimeNs = fi.Size(), fi.ModTime().UnixNano()
	}
}

// A node that sees the coordinator's folder encodes the frames from there:
// nothing is streamed.
func TestSharedFramesAreNotStreamed(t *testing.T) {
	needFFmpeg(t)
	a, frames := setOf(t)
	sharedFrames(t, a, frames)
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	logs, done, _ := runNode(t, serveFake(t, f), nil)
	waitDone(t, done, logs)
	if n := f.streams.Load(); n != 0 || len(f.uploaded) == 0 || !strings.Contains(logs.String(), "frames=shared") {
		t.Errorf("%d streams, %d bytes uploaded, want 0 and a part read from the folder:\n%s", n, len(f.uploaded), logs)
	}
	// With --frames-from stream the same set is streamed.
	a, frames = setOf(t)
	sharedFrames(t, a, frames)
	f = &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	logs, done, _ = runNode(t, serveFake(t, f), func(c *Config) { c.FramesFrom = FramesStream })
	waitDone(t, done, logs)
	if n := f.streams.Load(); n != 1 || !strings.Contains(logs.String(), "frames=streamed") {
		t.Errorf("--frames-from stream: %d streams, want 1:\n%s", n, logs)
	}
}

// A frame rewritten while ffmpeg reads it from the shared folder sends the
// set down the streamed path, where the coordinator checks every frame: the
// part is not made of two versions of the frames.
func TestSharedFrameChangedDuringTheEncodeIsStreamed(t *testing.T) {
	needFFmpeg(t)
	a, frames := setOf(t)
	sharedFrames(t, a, frames)
	real, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal(err)
	}
	// Touches the second frame, then encodes.
	touching := fakeFFmpeg(t, fmt.Sprintf("touch -d '+1 hour' %q\nexec %q \"$@\"", filepath.Join(a.FramesDir, a.Frames[1].Name), real))
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	logs, done, _ := runNode(t, serveFake(t, f), func(c *Config) { c.FFmpeg = ffmpeg.Runner{FFmpeg: touching} })
	waitDone(t, done, logs)
	if n := f.streams.Load(); n != 1 || !strings.Contains(logs.String(), "a frame changed during the encode") || !strings.Contains(logs.String(), "frames=streamed") {
		t.Errorf("%d streams, want 1 after the frame changed:\n%s", n, logs)
	}
	if len(f.uploaded) == 0 {
		t.Error("no part was uploaded")
	}
}
