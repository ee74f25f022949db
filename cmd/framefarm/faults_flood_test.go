//go:build faults

package main

import (
	"bytes"
	binenc "encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	farmpb "github.com/framefarm/framefarm/proto"
)

// h2Conn is a hand-driven HTTP/2 client connection, as a hostile client
// drives one: it answers the server's SETTINGS and PINGs (so the server
// keeps it) and follows its connection window, and does whatever else it
// is told.
type h2Conn struct {
	c   net.Conn
	fr  *http2.Framer
	wmu sync.Mutex
	// hb and enc encode headers: one encoder per connection, as HPACK's
	// table is the connection's.
	hb     bytes.Buffer
	enc    *hpack.Encoder
	window atomic.Int64 // the connection's send window
	more   chan struct{}
	closed chan struct{}
	resets atomic.Int32
}

func dialH2(from, addr string) (*h2Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &h2Conn{c: c, fr: http2.NewFramer(c, c), more: make(chan struct{}, 1), closed: make(chan struct{})}
	r.window.Store(65535)
	r.enc = hpack.NewEncoder(&r.hb)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		c.Close()
		return nil, err
	}
	if err := r.fr.WriteSettings(); err != nil {
		c.Close()
		return nil, err
	}
	go r.read()
	return r, nil
}

func (r *h2Conn) read() {
	defer close(r.closed)
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return
		}
		r.wmu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = r.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = r.fr.WritePing(true, f.Data)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				r.window.Add(int64(f.Increment))
				select {
				case r.more <- struct{}{}:
				default:
				}
			}
		case *http2.RSTStreamFrame:
			r.resets.Add(1)
		}
		r.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

// alive reports whether the server still holds the connection.
func (r *h2Conn) alive() bool {
	select {
	case <-r.closed:
		return false
	default:
		return true
	}
}

func (r *h2Conn) Close() { r.c.Close() }

// slowSend opens a call of method on stream id (streams are opened in
// order: one at a time) and sends the first `send` bytes of a message
// announced as `announce` bytes, never the rest.
func (r *h2Conn) slowSend(id uint32, method, token string, announce, send int) error {
	r.wmu.Lock()
	r.hb.Reset()
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "farm"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = r.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	if token != "" {
		_ = r.enc.WriteField(hpack.HeaderField{Name: "authorization", Value: "Bearer " + token})
	}
	err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hb.Bytes(), EndHeaders: true})
	r.wmu.Unlock()
	if err != nil {
		return err
	}
	msg := make([]byte, 5+send)
	binenc.BigEndian.PutUint32(msg[1:5], uint32(announce))
	for len(msg) > 0 {
		n := min(len(msg), 16<<10)
		for r.window.Load() < int64(n) {
			select {
			case <-r.more:
			case <-r.closed:
				return net.ErrClosed
			case <-time.After(500 * time.Millisecond):
				return nil // the server reads no more: it holds what it took
			}
		}
		r.window.Add(-int64(n))
		r.wmu.Lock()
		err := r.fr.WriteData(id, false, msg[:n])
		r.wmu.Unlock()
		if err != nil {
			return err
		}
		msg = msg[n:]
	}
	return nil
}

// procUsage is a process's resident memory (kB) and open descriptors.
func procUsage(t *testing.T, pid int) (rssKB int64, fds int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return rssKB, len(ents)
}

// withNofile runs a command with its descriptor limit (soft and hard) at n.
func withNofile(n int) func(*exec.Cmd) {
	return func(c *exec.Cmd) {
		bin, _ := exec.LookPath("prlimit")
		c.Args = append([]string{bin, fmt.Sprintf("--nofile=%d:%d", n, n)}, c.Args...)
		c.Path = bin
	}
}

// TestFaultFlood: hostile clients against a coordinator with a token and
// a descriptor limit of 1024 (prlimit), while two nodes render: slow
// senders without the token and with it (HEADERS and all but the end of a
// 4 MiB message on 64 streams of each connection), then a flood of idle
// HTTP/2 connections that answer pings, from one address and from six.
// The coordinator's memory and descriptors stay bounded (measured from
// /proc), no set fails and no node is charged, and once the clients are
// gone the job finishes frame-exact.
func TestFaultFlood(t *testing.T) {
	needFFmpeg(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		lacking(t, "no prlimit (util-linux): %v", err)
	}
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 64, 1, "320x240")
	want := reference(t, frames, 1)
	scenario(t, "flood", 1, func(t *testing.T, _ int) {
		const token, nofile, perPeer = "flood-secret", 1024, 100
		t.Setenv("FRAMEFARM_TOKEN", token)
		data := filepath.Join(t.TempDir(), "data")
		out := filepath.Join(t.TempDir(), "out.mkv")
		args := []string{"coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0", "--codec", "ffv1",
			"--out", out, "--sets", "8", "--heartbeat-timeout", "10s", "--poll-window", "2s", "--max-conns-per-peer", strconv.Itoa(perPeer)}
		coord, m := startCmd(t, "coordinator", withNofile(nofile), coordReady, args...)
		f := &farm{coord: coord, job: m[1], addr: m[2], data: data}
		pid := coord.cmd.Process.Pid
		w := watch(t, f.addr)
		for k := range 2 {
			addNode(t, f, fmt.Sprintf("n%d", k), nodeOpts{slow: 8 * time.Second})
		}
		w.waitFor(t, "a first grant", time.Minute, kind("set_granted", -1, ""))
		rss0, fd0 := procUsage(t, pid)
		t0 := time.Now()

		// Slow senders: connections of 64 streams, each with HEADERS and all
		// but the end of a message, never finished.
		var raws []*h2Conn
		var resets int32
		slowSenders := func(conns int, tok string, announce, send int) (rssKB int64, fds int) {
			for range conns {
				r, err := dialH2("127.0.0.2", f.addr)
				if err != nil {
					t.Fatal(err)
				}
				raws = append(raws, r)
				for s := range 64 {
					_ = r.slowSend(uint32(2*s+1), farmpb.NodeService_Heartbeat_FullMethodName, tok, announce, send)
				}
			}
			time.Sleep(time.Second)
			return procUsage(t, pid)
		}
		// Without the token, 4 MiB announced: refused from the headers.
		rssA, fdA := slowSenders(4, "", 4<<20-1, 1<<20-16)
		// With it, 4 MiB announced: more than any call takes.
		rssB, fdB := slowSenders(4, token, 4<<20-1, 1<<20-16)
		// With it, 1 MiB announced: what an upload's chunk may be.
		rssC, fdC := slowSenders(2, token, 1<<20-16, 1<<20-17)
		for _, r := range raws {
			resets += r.resets.Load()
			r.Close()
		}
		raws = nil

		// Idle connections: 500 from one address, then 250 from each of six.
		flood := func(from string, n int) (kept int) {
			var mine []*h2Conn
			for range n {
				r, err := dialH2(from, f.addr)
				if err != nil {
					continue
				}
				mine = append(mine, r)
			}
			time.Sleep(time.Second)
			for _, r := range mine {
				if r.alive() {
					kept++
				}
			}
			raws = append(raws, mine...)
			return kept
		}
		onePeer := flood("127.0.0.3", 500)
		rss2, fd2 := procUsage(t, pid)
		many := 0
		for k := range 6 {
			many += flood(fmt.Sprintf("127.0.0.%d", 10+k), 250)
		}
		rss3, fd3 := procUsage(t, pid)
		// The nodes' connections were there first: their work goes on.
		time.Sleep(5 * time.Second)
		doneDuring := 0
		for _, e := range w.events() {
			if e.Kind == "part_accepted" && e.UnixMs >= t0.UnixMilli() {
				doneDuring++
			}
		}
		held := 0
		for _, r := range raws {
			if r.alive() {
				held++
			}
			r.Close()
		}
		w.waitDone(t, 3*time.Minute)
		rss4, fd4 := procUsage(t, pid)
		for _, e := range w.events() {
			if e.Kind == "set_failed" || e.Kind == "node_excluded" || e.Kind == "lease_expired" || e.Kind == "job_failed" {
				t.Errorf("the flood was charged to a node: %s", formatEvents([]*farmpb.Event{e}))
			}
		}
		checkExact(t, out, want)
		room := nofile - 512
		switch {
		case rssB-rss0 > 64<<10:
			t.Errorf("slow senders grew the coordinator by %d MiB (RSS %d -> %d kB); want < 64 MiB", (rssB-rss0)>>10, rss0, rssB)
		case rssC-rss0 > 192<<10:
			t.Errorf("slow senders with the token grew the coordinator by %d MiB; want < 192 MiB (2 connections x 64 streams x 1 MiB)", (rssC-rss0)>>10)
		case onePeer > perPeer:
			t.Errorf("one address kept %d connections, more than --max-conns-per-peer %d", onePeer, perPeer)
		case onePeer+many > room:
			t.Errorf("the flood kept %d connections, more than the %d the descriptor limit leaves", onePeer+many, room)
		case fd3 > nofile-64:
			t.Errorf("the coordinator holds %d descriptors of its %d: no reserve left", fd3, nofile)
		case rss3-rss0 > 256<<10:
			t.Errorf("the connection flood grew the coordinator by %d MiB; want < 256 MiB", (rss3-rss0)>>10)
		}
		note(t, "descriptor limit %d: at the start RSS %d MiB, %d fds; slow senders, 64 streams per connection: 4 without the token announcing 4 MiB: RSS %d MiB, %d fds; 4 with it announcing 4 MiB: %d MiB, %d fds; 2 with it announcing 1 MiB: %d MiB, %d fds; %d streams reset; "+
			"500 idle connections from one address: %d kept, RSS %d MiB, %d fds; 1500 more from six addresses: %d kept in all, RSS %d MiB, %d fds (%d held at the end); %d parts accepted during the attacks (%s); after: RSS %d MiB, %d fds; frame-exact",
			nofile, rss0>>10, fd0, rssA>>10, fdA, rssB>>10, fdB, rssC>>10, fdC, resets, onePeer, rss2>>10, fd2, onePeer+many, rss3>>10, fd3, held, doneDuring, time.Since(t0).Round(time.Second), rss4>>10, fd4)
	})
}
