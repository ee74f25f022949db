package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

// sharedSet writes frames named in names into a new folder and returns the
// assignment a coordinator would give for them.
func sharedSet(t *testing.T, names ...string) *farmpb.Assignment {
	t.Helper()
	frames := t.TempDir()
	a := &farmpb.Assignment{FramesDir: frames, Settings: &farmpb.EncodeSettings{FrameExt: "png"}}
	for i, name := range names {
		p := filepath.Join(frames, name)
		if err := os.WriteFile(p, []byte(strings.Repeat("x", 10+i)), 0o644); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		a.Frames = append(a.Frames, &farmpb.FrameInfo{Number: int64(i + 1), Name: name, Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()})
	}
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
