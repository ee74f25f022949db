//go:build faults

package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

// shape makes the link out of dev (in namespace ns when not "") slow and
// lossy: a token bucket of rate with up to 10 s of queue (tbf; netem queues 1000 packets, 12 s at 1 Mbit/s), and
// loss of that share of the packets coming in and going out (iptables'
// statistic match), as on a congested long link. This kernel has no netem;
// the latency is delayProxy's. Skipped where tc or iptables cannot.
func shape(t *testing.T, ns, dev, rate, loss string) {
	t.Helper()
	for _, args := range [][]string{
		{"tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "16kbit", "latency", "10s"},
		{"iptables", "-A", "INPUT", "-i", dev, "-m", "statistic", "--mode", "random", "--probability", loss, "-j", "DROP"},
		{"iptables", "-A", "OUTPUT", "-o", dev, "-m", "statistic", "--mode", "random", "--probability", loss, "-j", "DROP"},
	} {
		c := exec.Command(args[0], args[1:]...)
		if ns != "" {
			c = exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
		} else if args[0] == "iptables" {
			continue // the namespace's side drops both ways
		}
		if out, err := c.CombinedOutput(); err != nil {
			lacking(t, "cannot shape the link (%s: %v: %s)", strings.Join(args, " "), err, out)
		}
	}
}

// delayProxy forwards connections on listen to target, delaying the bytes
// of each direction by d, with a bounded queue (so that TCP's flow control
// still reaches the sender).
func delayProxy(t *testing.T, listen, target string, d time.Duration) string {
	t.Helper()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var open sync.Map
	t.Cleanup(func() {
		lis.Close()
		open.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			open.Store(c, true)
			open.Store(up, true)
			wg.Go(func() { delayCopy(up, c, d) })
			wg.Go(func() { delayCopy(c, up, d) })
		}
	})
	return lis.Addr().String()
}

func delayCopy(dst, src net.Conn, d time.Duration) {
	type piece struct {
		b  []byte
		at time.Time
	}
	q := make(chan piece, 32)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- piece{b[:n], time.Now().Add(d)}
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.at))
		if _, err := dst.Write(p.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range q {
	}
}

// TestFaultSlowLink: a node behind a slow, lossy link (1 Mbit/s each way,
// 150 ms each way so 300 ms round trip, 5% loss each way: tc netem in a
// network namespace, see shape and delayProxy) with --heartbeat-timeout 3s. Its heartbeats must not
// queue behind its frames and parts, a heartbeat that times out must not
// open its breaker, and its leases must hold: the job finishes frame-exact
// with the node's parts accepted.
func TestFaultSlowLink(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 96, 1, "640x360")
	want := reference(t, frames, 1)
	scenario(t, "slow-link", 1, func(t *testing.T, i int) {
		ns, hostIP, _, hostDev := netns(t, 100+i)
		nsDev := "ffn" + strings.TrimPrefix(hostDev, "ffh")
		shape(t, "", hostDev, "1mbit", "")
		shape(t, ns, nsDev, "1mbit", "0.05")
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "8", "--heartbeat-timeout", "3s")
		w := watch(t, f.addr)
		link := delayProxy(t, hostIP+":0", f.addr, 150*time.Millisecond)
		slow := addNode(t, f, "slow", nodeOpts{via: link, prep: inNetns(ns), ambDebug: true})
		t0 := time.Now()
		w.waitDone(t, 3*time.Minute)
		took := time.Since(t0)
		evs := w.events()
		checkEvents(t, evs, 8)
		checkExact(t, out, want)
		expired, accepted := 0, 0
		for _, e := range evs {
			switch {
			case e.Kind == "lease_expired":
				expired++
			case e.Kind == "part_accepted" && e.Node == "slow":
				accepted++
			}
		}
		opens := len(logLines(slow.amb, 0, breakerOpen))
		timeouts := len(logLines(slow.amb, 0, hbTimedOut))
		if expired > 0 || opens > 0 {
			t.Errorf("on the slow link: %d leases expired, the breaker opened %d times; want none", expired, opens)
		}
		if accepted != 8 {
			t.Errorf("the slow node's parts accepted: %d, want 8", accepted)
		}
		rtt := nodeStatus(getJob(t, f.addr), "slow").GetLinkRttMs()
		note(t, "1 Mbit/s, 300 ms round trip, 5%% loss, --heartbeat-timeout 3s: done in %s, %d leases expired, breaker opened %d times, %d heartbeats timed out at the ambassador, heartbeat round trip %d ms at the end, %d parts accepted from the slow node, frame-exact",
			took.Round(100*time.Millisecond), expired, opens, timeouts, rtt, accepted)
	})
}

// hbTimedOut is the ambassador's debug line of a heartbeat that got no
// answer in time.
var hbTimedOut = regexp.MustCompile(`method=Heartbeat .*code=DeadlineExceeded`)

// TestFaultNodeEnv: a node's own machine fails it: one node has no ffmpeg
// on its PATH, another's --work is full (a small tmpfs). Each says so in
// its log and in status, and asks for no work: no set is granted to them,
// none fails, neither is excluded. Once ffmpeg is installed and space
// freed, both render and the job finishes frame-exact.
func TestFaultNodeEnv(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 32, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "node-env", 1, func(t *testing.T, _ int) {
		mnt := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", mnt).CombinedOutput(); err != nil {
			lacking(t, "cannot mount a tmpfs here (%v: %s)", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
		filler := filepath.Join(mnt, "filler")
		if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=40").CombinedOutput(); err != nil {
			t.Fatalf("filling the tmpfs: %v: %s", err, out)
		}
		bin := t.TempDir() // no ffmpeg in it, yet
		out := filepath.Join(t.TempDir(), "out.mkv")
		f := startFarm(t, frames, 0, "--codec", "ffv1", "--out", out, "--sets", "4", "--heartbeat-timeout", "10s")
		w := watch(t, f.addr)
		bare := addNode(t, f, "bare", nodeOpts{prep: func(c *exec.Cmd) {
			if c.Env != nil {
				c.Env = append(c.Env, "PATH="+bin)
			}
		}})
		full := addNode(t, f, "full", nodeOpts{prep: func(c *exec.Cmd) {
			for i, a := range c.Args {
				if a == "--work" {
					c.Args[i+1] = filepath.Join(mnt, "work")
				}
			}
		}})
		problems := map[string]string{}
		deadline := time.Now().Add(time.Minute)
		for len(problems) < 2 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			for _, ns := range getJob(t, f.addr).Nodes {
				if ns.Problem != "" {
					problems[ns.Name] = ns.Problem
				}
			}
		}
		if !strings.Contains(problems["bare"], "ffmpeg") || !strings.Contains(problems["full"], "free") {
			t.Fatalf("status did not show both nodes' problems: %q\nbare:\n%s\nfull:\n%s", problems, bare.node.out.String(), full.node.out.String())
		}
		time.Sleep(3 * time.Second) // they keep asking for nothing
		granted := countKind(w.events(), "set_granted")
		real, err := exec.LookPath("ffmpeg")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(bin, "ffmpeg")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		fixed := time.Now()
		w.waitDone(t, 2*time.Minute)
		evs := w.events()
		for _, e := range evs {
			if e.Kind == "set_failed" || e.Kind == "node_excluded" || e.Kind == "job_failed" {
				t.Errorf("a node's own fault was charged to a set: %s", formatEvents([]*farmpb.Event{e}))
			}
		}
		if granted > 0 {
			t.Errorf("%d sets were granted to nodes that said they cannot render", granted)
		}
		checkExact(t, out, want)
		parts := map[string]int{}
		for _, e := range evs {
			if e.Kind == "part_accepted" {
				parts[e.Node]++
			}
		}
		for _, ns := range getJob(t, f.addr).Nodes {
			if ns.Problem != "" {
				t.Errorf("status still shows %s's problem once fixed: %q", ns.Name, ns.Problem)
			}
		}
		note(t, "no ffmpeg / --work with %s free: status showed %q and %q, 0 sets granted, failed or excluded while broken; fixed, done in %s (parts: bare %d, full %d), frame-exact",
			"< 64 MiB", problems["bare"], problems["full"], time.Since(fixed).Round(100*time.Millisecond), parts["bare"], parts["full"])
	})
}
