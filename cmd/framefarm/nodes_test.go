package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestForgiveExcludedNode: a node whose ffmpeg fails is excluded from the
// job after 3 sets; framefarm nodes says so, and once the node is fixed
// framefarm forgive lets it back in: it renders the job, frame-exact.
func TestForgiveExcludedNode(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 24, 1, "160x120")
	want := reference(t, frames, 1)
	real, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal(err)
	}
	fixed := filepath.Join(t.TempDir(), "fixed")
	script := fmt.Sprintf("if [ -e %s ]; then exec %s \"$@\"; fi\n"+
		"echo '[vist#0:0/png] Error while decoding stream #0:0: Invalid data found when processing input' >&2\nexit 1", fixed, real)
	out := filepath.Join(t.TempDir(), "out.mkv")
	f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "4")
	w := watch(t, f.addr)
	addNode(t, f, "bad", nodeOpts{ffmpeg: script, noOnce: true})
	w.waitFor(t, "the node excluded", time.Minute, kind("node_excluded", -1, "bad"))

	list := runCmd(t, binary, "nodes", "--coordinator", f.addr)
	if !strings.Contains(list, "bad") || !strings.Contains(list, f.job) {
		t.Fatalf("framefarm nodes does not show bad excluded from %s:\n%s", f.job, list)
	}
	if err := os.WriteFile(fixed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	said := runCmd(t, binary, "forgive", "bad", "--coordinator", f.addr)
	// 3 sets or more: the node's two slots may fail a fourth meanwhile.
	if !regexp.MustCompile(`^node bad forgiven: [34] failures forgotten in 1 jobs\n$`).MatchString(said) {
		t.Fatalf("framefarm forgive said %q", said)
	}
	w.waitDone(t, 2*time.Minute)
	checkExact(t, out, want)
	if countKind(w.events(), "node_forgiven") != 1 {
		t.Errorf("events: %s", formatEvents(w.events()))
	}
	if again := runCmd(t, binary, "forgive", "bad", "--coordinator", f.addr); !strings.Contains(again, "no failures to forget") {
		t.Errorf("forgiving again said %q", again)
	}
}
