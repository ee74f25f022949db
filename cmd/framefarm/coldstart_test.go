package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestColdStart (issue 13): the render machines start before the
// coordinator, in the worst order: two nodes first, their ambassadors 3s
// later, the coordinator 3s after that. Both nodes render, the first set is
// granted within 1s of the coordinator listening (it was 1-2.4s, and one
// node often rendered nothing), and the video is frame by frame ffmpeg's.
func TestColdStart(t *testing.T) {
	needFFmpeg(t)
	const stagger = 3 * time.Second
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	genFrames(t, frames, 96, 1, "320x240")
	want := reference(t, frames, 1)

	coordAddr := freeAddr(t)
	var nodes []*proc
	var ambAddrs []string
	for i := range 2 {
		ambAddrs = append(ambAddrs, freeAddr(t))
		// One streams its frames, one reads them from the coordinator's
		// folder, as startFarm's nodes do.
		from := map[bool]string{false: "auto", true: "stream"}[i%2 == 1]
		n, _ := start(t, fmt.Sprintf("node-%d", i), nil, "node", "--ambassador", ambAddrs[i],
			"--name", fmt.Sprintf("node-%d", i), "--once", "--frames-from", from)
		nodes = append(nodes, n)
	}
	time.Sleep(stagger)
	for i, addr := range ambAddrs {
		start(t, fmt.Sprintf("ambassador-%d", i), ambReady, "ambassador", "--coordinator", coordAddr, "--listen", addr)
	}
	time.Sleep(stagger)
	out := filepath.Join(tmp, "out.mkv")
	coord, _ := start(t, "coordinator", coordReady, "coordinator", "--frames", frames, "--data", filepath.Join(tmp, "data"),
		"--listen", coordAddr, "--codec", "ffv1", "--sets", "8", "--out", out, "--heartbeat-timeout", "5s", "--poll-window", "2s")
	fetched := filepath.Join(tmp, "fetched.mkv")
	f := &farm{coord: coord, addr: coordAddr}
	f.fetch(t, fetched)
	for _, n := range nodes {
		if err := n.wait(t, 30*time.Second); err != nil {
			t.Errorf("%s: %v", n.name, err)
		}
	}

	checkExact(t, out, want)
	if a, b := sha(t, out), sha(t, fetched); a != b {
		t.Fatalf("fetched video sha256 %s differs from --out %s", b, a)
	}
	// Measured on the coordinator's own log: both times come from one clock,
	// and neither depends on when this test looks.
	log := coord.out.String()
	listening := logLineTime(t, log, `msg="coordinator listening"`)
	granted := logLineTime(t, log, `msg=set_granted`)
	first := granted.Sub(listening)
	t.Logf("first set granted %v after the coordinator listened", first)
	if first > time.Second {
		t.Errorf("first set granted %v after the coordinator listened, want within 1s", first)
	}
	for i := range nodes {
		name := fmt.Sprintf("node=node-%d ", i)
		accepted := 0
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "msg=part_accepted") && strings.Contains(l+" ", name) {
				accepted++
			}
		}
		if accepted == 0 {
			t.Errorf("node-%d rendered no set", i)
		}
	}
}

// freeAddr returns a loopback address that nothing listens on now, for a
// process to listen on later.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// logLineTime returns the time of the first slog text line of log that
// contains what.
func logLineTime(t *testing.T, log, what string) time.Time {
	t.Helper()
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, what) {
			continue
		}
		m := logTime.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		return at
	}
	t.Fatalf("no log line with %s in:\n%s", what, log)
	return time.Time{}
}
