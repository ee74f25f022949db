package main

// Helpers of the end-to-end and fault tests (faults_test.go, built with -tags faults): trials and their summary
// line, an event watcher and status client, nodes with a fake or slow
// ffmpeg, signals, a proxy that counts the calls reaching the coordinator,
// network namespaces, and the checks every trial ends with.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/framefarm/framefarm/internal/creds"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	farmpb "github.com/framefarm/framefarm/proto"
)

// scenario runs trials as subtests and prints "name: N passed, M failed"
// on stdout, where `make test-faults` shows it whatever the verbosity.
func scenario(t *testing.T, name string, trials int, trial func(t *testing.T, i int)) {
	t.Helper()
	passed, failed, skipped := 0, 0, 0
	for i := 0; i < trials; i++ {
		skip := false
		ok := t.Run(fmt.Sprintf("trial-%02d", i+1), func(t *testing.T) {
			defer func() { skip = t.Skipped() }()
			trial(t, i)
		})
		switch {
		case !ok:
			failed++
		case skip:
			skipped++
		default:
			passed++
		}
	}
	if skipped > 0 {
		fmt.Printf("%s: %d passed, %d failed, %d skipped\n", name, passed, failed, skipped)
		return
	}
	fmt.Printf("%s: %d passed, %d failed\n", name, passed, failed)
}

// note prints a measurement on stdout (like the summary lines) and logs it.
func note(t *testing.T, format string, args ...any) {
	t.Helper()
	fmt.Printf("  %s: %s\n", t.Name(), fmt.Sprintf(format, args...))
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	// The environment's token, as every framefarm command takes it.
	opts, err := creds.DialOptions(creds.Token(""), creds.ClientTLS{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// watcher follows the farm's event stream (every job's), across
// coordinator restarts.
type watcher struct {
	mu    sync.Mutex
	evs   []*farmpb.Event
	wake  chan struct{}
	close func()
}

func watch(t *testing.T, addr string) *watcher {
	t.Helper()
	w := &watcher{wake: make(chan struct{})}
	conn := dial(t, addr)
	client := farmpb.NewFarmServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var once sync.Once
	w.close = func() { once.Do(func() { cancel(); <-done; conn.Close() }) }
	t.Cleanup(w.close)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w.mu.Lock()
			after := uint64(0)
			if n := len(w.evs); n > 0 {
				after = w.evs[n-1].FarmSeq
			}
			w.mu.Unlock()
			stream, err := client.WatchEvents(ctx, &farmpb.WatchEventsRequest{AfterSeq: after})
			for err == nil {
				var e *farmpb.Event
				if e, err = stream.Recv(); err == nil {
					w.mu.Lock()
					w.evs = append(w.evs, e)
					close(w.wake)
					w.wake = make(chan struct{})
					w.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // the coordinator is away; ask again
			}
		}
	}()
	return w
}

func (w *watcher) events() []*farmpb.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*farmpb.Event(nil), w.evs...)
}

// waitFor returns the first event (from the start of the stream) that
// matches, waiting up to d for it.
func (w *watcher) waitFor(t *testing.T, what string, d time.Duration, match func(*farmpb.Event) bool) *farmpb.Event {
	t.Helper()
	deadline := time.After(d)
	for {
		w.mu.Lock()
		for _, e := range w.evs {
			if match(e) {
				w.mu.Unlock()
				return e
			}
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("no %s after %s; events:\n%s", what, d, formatEvents(w.events()))
		}
	}
}

// waitCount waits up to d for n events that match.
func (w *watcher) waitCount(t *testing.T, what string, d time.Duration, n int, match func(*farmpb.Event) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		w.mu.Lock()
		got := 0
		for _, e := range w.evs {
			if match(e) {
				got++
			}
		}
		wake := w.wake
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("%d of %d %s after %s; events:\n%s", got, n, what, d, formatEvents(w.events()))
		}
	}
}

// waitDone waits for the job to be done; a failed job ends the test.
func (w *watcher) waitDone(t *testing.T, d time.Duration) {
	t.Helper()
	e := w.waitFor(t, "job_done", d, func(e *farmpb.Event) bool { return e.Kind == "job_done" || e.Kind == "job_failed" })
	if e.Kind != "job_done" {
		t.Fatalf("job failed: %s", e.Detail)
	}
}

func kind(k string, set int32, node string) func(*farmpb.Event) bool {
	return func(e *farmpb.Event) bool {
		return e.Kind == k && (set < 0 || e.SetIndex == set) && (node == "" || e.Node == node)
	}
}

func formatEvents(evs []*farmpb.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %3d %s %-14s set %2d %-10s %s\n", e.Seq, time.UnixMilli(e.UnixMs).Format("15:04:05.000"), e.Kind, e.SetIndex, e.Node, e.Detail)
	}
	return b.String()
}

// checkEvents holds a finished job's event stream to the rules a fault
// must not break: numbered without gap or repeat; every set accepted
// exactly once; no set granted again once accepted (a C set is never
// rendered again).
func checkEvents(t *testing.T, evs []*farmpb.Event, sets int) {
	t.Helper()
	accepted := map[int32]uint64{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d has seq %d: the stream has a gap or a repeat", i+1, e.Seq)
		}
		switch e.Kind {
		case "part_accepted":
			if seq, ok := accepted[e.SetIndex]; ok {
				t.Errorf("set %d accepted twice (events %d and %d)", e.SetIndex, seq, e.Seq)
			}
			accepted[e.SetIndex] = e.Seq
		case "set_granted":
			if seq, ok := accepted[e.SetIndex]; ok {
				t.Errorf("set %d granted again (event %d) after it was accepted (event %d)", e.SetIndex, e.Seq, seq)
			}
		}
	}
	if len(accepted) != sets {
		t.Errorf("%d sets accepted, want %d", len(accepted), sets)
	}
	if t.Failed() {
		t.Logf("events:\n%s", formatEvents(evs))
	}
}

func getJob(t *testing.T, addr string) *farmpb.JobStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := dial(t, addr)
	defer conn.Close()
	st, err := farmpb.NewFarmServiceClient(conn).GetJob(ctx, &farmpb.GetJobRequest{})
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func nodeStatus(st *farmpb.JobStatus, name string) *farmpb.NodeStatus {
	for _, n := range st.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// reference is the framemd5 of one plain ffmpeg run over the frames, FFV1
// as the farm encodes it (TestLosslessMatchesFFmpeg's reference).
func reference(t *testing.T, frames string, startNumber int) []string {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref.mkv")
	_, colour := plainColour(t, filepath.Join(frames, fmt.Sprintf("f_%04d.png", startNumber)), "ffv1", "yuv420p", "mkv")
	args := []string{"-v", "error", "-framerate", "24", "-start_number", fmt.Sprint(startNumber), "-i", filepath.Join(frames, "f_%04d.png"),
		"-c:v", "ffv1", "-level", "3", "-pix_fmt", "yuv420p"}
	runCmd(t, "ffmpeg", append(append(args, colour...), ref)...)
	return framemd5(t, ref)
}

// checkExact holds the farm's video to the reference, frame by frame.
func checkExact(t *testing.T, video string, want []string) {
	t.Helper()
	got := framemd5(t, video)
	if len(got) != len(want) {
		t.Fatalf("%s has %d frames, ffmpeg's %d", video, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frame %d differs: farm %q, ffmpeg %q", i, got[i], want[i])
		}
	}
}

// noTemps fails if any file under the folders is a temp file (.tmp-*).
func noTemps(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
				t.Errorf("temp file left behind: %s", path)
			}
			return nil
		})
	}
}

// empty fails unless dir holds nothing (or does not exist).
func empty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("%s left behind in %s", e.Name(), dir)
	}
}

// partsMatchEvents checks that every stored part is the one accepted: its
// SHA-256 is the one of its part_accepted event (--keep-parts).
func partsMatchEvents(t *testing.T, data, job string, evs []*farmpb.Event) {
	t.Helper()
	re := regexp.MustCompile(`sha256 ([0-9a-f]{64})`)
	for _, e := range evs {
		if e.Kind != "part_accepted" {
			continue
		}
		m := re.FindStringSubmatch(e.Detail)
		if m == nil {
			t.Fatalf("part_accepted without sha256: %q", e.Detail)
		}
		matches, _ := filepath.Glob(filepath.Join(data, "jobs", job, "parts", fmt.Sprintf("set-%05d-t*", e.SetIndex)))
		if len(matches) != 1 {
			t.Errorf("set %d: stored parts %v, want one", e.SetIndex, matches)
			continue
		}
		if got := sha(t, matches[0]); got != m[1] {
			t.Errorf("set %d: stored part %s, accepted %s", e.SetIndex, got, m[1])
		}
	}
}

func sendSignal(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v: %v", p.name, sig, err)
	}
}

// exited waits for p to end and returns its exit code (-1: killed).
func exited(t *testing.T, p *proc, d time.Duration) int {
	t.Helper()
	_ = p.wait(t, d)
	return p.cmd.ProcessState.ExitCode()
}

// nodeOpts describe one render machine: an ambassador and its node.
type nodeOpts struct {
	// ffmpeg, when set, is the body of a shell script found as ffmpeg first
	// on the node's PATH (a fake that fails, say).
	ffmpeg string
	// slow makes the node's ffmpeg wait this long before the real one runs,
	// so that a set is sure to be in progress for that long.
	slow time.Duration
	// via is the address the ambassador dials (a proxy); the farm's by default.
	via string
	// prep runs both processes differently (in a network namespace).
	prep func(*exec.Cmd)
	// noOnce keeps the node running when there is no more work.
	noOnce   bool
	ambDebug bool
	// token is the farm's, given to the ambassador.
	token string
	// framesFrom is the node's --frames-from; stream by default.
	framesFrom string
}

type farmNode struct {
	name      string
	amb, node *proc
	ambAddr   string
	// tmp is the node's TMPDIR (where its default work folder goes); work
	// its --work folder.
	tmp, work string
}

func addNode(t *testing.T, f *farm, name string, o nodeOpts) *farmNode {
	t.Helper()
	n := &farmNode{name: name, tmp: t.TempDir(), work: filepath.Join(t.TempDir(), "work")}
	via := o.via
	if via == "" {
		via = f.addr
	}
	args := []string{"ambassador", "--coordinator", via, "--listen", "127.0.0.1:0"}
	if o.ambDebug {
		args = append(args, "--log-level", "debug")
	}
	if o.token != "" {
		args = append(args, "--token", o.token)
	}
	var m []string
	n.amb, m = startCmd(t, "ambassador-"+name, o.prep, ambReady, args...)
	n.ambAddr = m[1]
	env := append(os.Environ(), "TMPDIR="+n.tmp)
	if o.ffmpeg != "" || o.slow > 0 {
		bin := t.TempDir()
		script := o.ffmpeg
		if script == "" {
			real, err := exec.LookPath("ffmpeg")
			if err != nil {
				t.Fatal(err)
			}
			// The sleep must not hold ffmpeg's stdout: the node reads it to the end.
			script = fmt.Sprintf("sleep %.3f </dev/null >/dev/null 2>&1\nexec %s \"$@\"", o.slow.Seconds(), real)
		}
		if err := os.WriteFile(filepath.Join(bin, "ffmpeg"), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		env = append(env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	// Streamed unless said: the faults are the network's, between the
	// machines.
	from := o.framesFrom
	if from == "" {
		from = "stream"
	}
	nodeArgs := []string{"node", "--ambassador", n.ambAddr, "--name", name, "--work", n.work, "--frames-from", from}
	if !o.noOnce {
		nodeArgs = append(nodeArgs, "--once")
	}
	n.node, _ = startCmd(t, name, func(c *exec.Cmd) {
		c.Env = env
		if o.prep != nil {
			o.prep(c)
		}
	}, nil, nodeArgs...)
	return n
}

// restartCoordinator starts the farm's coordinator again on the same data
// folder and address, as an operator would after a crash.
func restartCoordinator(t *testing.T, f *farm, name string) {
	t.Helper()
	args := append(append([]string(nil), f.coordArgs...), "--listen", f.addr)
	var m []string
	f.coord, m = start(t, name, coordReady, args...)
	if m[1] != f.job {
		t.Fatalf("restarted coordinator runs job %s, want %s (resumed)", m[1], f.job)
	}
}

// logLines returns the lines of a process's output after offset that
// match re.
func logLines(p *proc, offset int, re *regexp.Regexp) []string {
	out := p.out.String()
	if offset > len(out) {
		offset = len(out)
	}
	var lines []string
	for _, l := range strings.Split(out[offset:], "\n") {
		if re.MatchString(l) {
			lines = append(lines, l)
		}
	}
	return lines
}

var logTime = regexp.MustCompile(`^time=(\S+)`)

// linesBetween counts the log lines matching re whose time is in [from, to].
func linesBetween(p *proc, re *regexp.Regexp, from, to time.Time) int {
	n := 0
	for _, l := range logLines(p, 0, re) {
		m := logTime.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err == nil && !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// firstLineAfter returns the time of the first log line matching re at or
// after from, waiting up to d for it.
func firstLineAfter(p *proc, re *regexp.Regexp, from time.Time, d time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(d)
	for {
		for _, l := range logLines(p, 0, re) {
			m := logTime.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && !at.Before(from) {
				return at, true
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countingProxy forwards TCP connections to a coordinator and notes when
// each call reaches it: every HTTP/2 HEADERS frame a client sends opens one
// gRPC call.
type countingProxy struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	calls  []time.Time
	conns  []time.Time
}

func startProxy(t *testing.T, listen, target string) *countingProxy {
	t.Helper()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{lis: lis, target: target}
	var wg sync.WaitGroup
	var open sync.Map
	t.Cleanup(func() {
		lis.Close()
		open.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, time.Now())
			p.mu.Unlock()
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			open.Store(c, true)
			open.Store(up, true)
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(c, up); c.Close(); up.Close() }()
			go func() { defer wg.Done(); p.forward(up, c); c.Close(); up.Close() }()
		}
	}()
	return p
}

func (p *countingProxy) addr() string { return p.lis.Addr().String() }

// forward copies the client's bytes to the coordinator, frame by frame,
// noting HEADERS frames as they arrive. Frames are queued, so that a
// coordinator that does not read (stopped) does not hide the calls sent
// meanwhile; HTTP/2 flow control bounds the queue.
func (p *countingProxy) forward(up net.Conn, c net.Conn) {
	q := make(chan []byte, 1<<14)
	go func() {
		defer close(q)
		r := bufio.NewReader(c)
		preface := make([]byte, 24)
		if _, err := io.ReadFull(r, preface); err != nil {
			return
		}
		q <- preface
		for {
			hdr := make([]byte, 9)
			if _, err := io.ReadFull(r, hdr); err != nil {
				return
			}
			n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
			frame := make([]byte, 9+n)
			copy(frame, hdr)
			if _, err := io.ReadFull(r, frame[9:]); err != nil {
				return
			}
			if hdr[3] == 0x1 { // HEADERS
				p.mu.Lock()
				p.calls = append(p.calls, time.Now())
				p.mu.Unlock()
			}
			q <- frame
		}
	}()
	for b := range q {
		if _, err := up.Write(b); err != nil {
			c.Close()
			for range q {
			}
			return
		}
	}
}

func between(ts []time.Time, from, to time.Time) int {
	n := 0
	for _, at := range ts {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

func (p *countingProxy) callsBetween(from, to time.Time) (calls, conns int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return between(p.calls, from, to), between(p.conns, from, to)
}

// netns makes a network namespace joined to this one by a veth pair, with
// addresses hostIP (here) and nsIP (there); it is removed at the end. It
// skips the test where namespaces cannot be made (not root, no ip).
func netns(t *testing.T, id int) (ns, hostIP, nsIP, hostDev string) {
	t.Helper()
	ipBin, err := exec.LookPath("ip")
	if err != nil {
		lacking(t, "network namespace scenario: no ip command (iproute2): %v", err)
	}
	ns = fmt.Sprintf("fffault%d-%d", os.Getpid()%100000, id)
	hostDev, nsDev := fmt.Sprintf("ffh%d%d", os.Getpid()%10000, id), fmt.Sprintf("ffn%d%d", os.Getpid()%10000, id)
	if out, err := exec.Command(ipBin, "netns", "add", ns).CombinedOutput(); err != nil {
		fmt.Printf("  %s: skipped: `ip netns add` is not permitted here (needs root or CAP_SYS_ADMIN): %v: %s\n", t.Name(), err, strings.TrimSpace(string(out)))
		lacking(t, "network namespace scenario: `ip netns add` is not permitted here (it needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command(ipBin, "link", "del", hostDev).Run()
		_ = exec.Command(ipBin, "netns", "del", ns).Run()
	})
	octet := 16 + (os.Getpid()+id)%200
	hostIP, nsIP = fmt.Sprintf("10.213.%d.1", octet), fmt.Sprintf("10.213.%d.2", octet)
	for _, args := range [][]string{
		{"link", "add", hostDev, "type", "veth", "peer", "name", nsDev},
		{"link", "set", nsDev, "netns", ns},
		{"addr", "add", hostIP + "/30", "dev", hostDev},
		{"link", "set", hostDev, "up"},
		{"netns", "exec", ns, ipBin, "addr", "add", nsIP + "/30", "dev", nsDev},
		{"netns", "exec", ns, ipBin, "link", "set", nsDev, "up"},
		{"netns", "exec", ns, ipBin, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(ipBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return ns, hostIP, nsIP, hostDev
}

// inNetns runs a command in the namespace ns.
func inNetns(ns string) func(*exec.Cmd) {
	return func(c *exec.Cmd) {
		ipBin, _ := exec.LookPath("ip")
		c.Args = append([]string{ipBin, "netns", "exec", ns}, c.Args...)
		c.Path = ipBin
		c.Args[4] = binary
	}
}

func ipLink(t *testing.T, dev, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "set", dev, state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s %s: %v: %s", dev, state, err, out)
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// plainColour are the options that give one plain ffmpeg run over frames
// like frame (a file, whose height picks the colour space) the colour the
// farm gives a job with default colour flags: ffmpeg.InputArgs (for before
// -i) and ffmpeg.ColourArgs (for after it), with the filters vf first.
func plainColour(t *testing.T, frame, codec, pixFmt, finalExt string, vf ...string) (in, out []string) {
	t.Helper()
	return plainColourOf(t, frame, codec, pixFmt, finalExt, "", "", vf...)
}

// plainColourOf is plainColour for the flags --color space --range rng
// (and --alpha keep for a pixel format with alpha).
func plainColourOf(t *testing.T, frame, codec, pixFmt, finalExt, space, rng string, vf ...string) (in, out []string) {
	t.Helper()
	c, err := ffmpeg.LookupCodec(codec)
	if err != nil {
		t.Fatal(err)
	}
	h, err := strconv.Atoi(strings.TrimSpace(runCmd(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=height", "-of", "csv=p=0", frame)))
	if err != nil {
		t.Fatalf("height of %s: %v", frame, err)
	}
	alpha := ""
	if strings.HasPrefix(pixFmt, "yuva") {
		alpha = "keep"
	}
	col, err := ffmpeg.ResolveColour(c, pixFmt, finalExt, h, space, rng, "", alpha)
	if err != nil {
		t.Fatal(err)
	}
	ext := filepath.Ext(frame)
	return col.InputArgs(ext), ffmpeg.ColourArgs(col, pixFmt, ext, vf...)
}

// countKind counts the events of a kind.
func countKind(evs []*farmpb.Event, kind string) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// lacking skips a test whose machine lacks what it needs (a tool, root, a
// file system) on a developer's machine, but fails it where the make
// target installed that and said so with FRAMEFARM_REQUIRE=1 (test-faults,
// test-deploy): there a skip would hide the test not running.
func lacking(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("FRAMEFARM_REQUIRE") == "1" {
		t.Fatalf("required here (FRAMEFARM_REQUIRE=1): "+format, args...)
	}
	t.Skipf("skipped: "+format, args...)
}
