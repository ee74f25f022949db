package coordinator

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/framefarm/framefarm/internal/reason"
	farmpb "github.com/framefarm/framefarm/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLimitListener: connections beyond a peer's share or the total are
// closed as they come, and a closed one makes room again.
func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(raw, connLimits{total: 3, perPeer: 2}, slog.New(slog.DiscardHandler), time.Now)
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	// open dials from one loopback address and reports whether the server
	// kept the connection (a refused one is closed at once: EOF).
	open := func(from string) (net.Conn, bool) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		return c, !errors.Is(err, io.EOF)
	}
	var kept []net.Conn
	for i, tc := range []struct {
		from string
		want bool
	}{
		{"127.0.0.1", true}, {"127.0.0.1", true}, {"127.0.0.1", false}, // its share: 2
		{"127.0.0.2", true}, {"127.0.0.3", false}, // the total: 3
	} {
		c, ok := open(tc.from)
		defer c.Close()
		if ok != tc.want {
			t.Fatalf("connection %d from %s kept: %v, want %v", i, tc.from, ok, tc.want)
		}
		if ok {
			kept = append(kept, <-accepted)
		}
	}
	kept[0].Close()
	if _, ok := open("127.0.0.3"); !ok {
		t.Fatal("a connection closed did not make room for another")
	}
}

// TestMethodCaps: each call is held to the size it needs.
func TestMethodCaps(t *testing.T) {
	hb := &farmpb.HeartbeatRequest{Node: "n", Breaker: &farmpb.BreakerInfo{State: strings.Repeat("x", 8<<10)}}
	if err := checkSize(farmpb.NodeService_Heartbeat_FullMethodName, hb); !errors.Is(err, errTooLarge) {
		t.Errorf("an 8 KiB heartbeat: %v, want errTooLarge", err)
	}
	hb.Breaker.State = "closed"
	if err := checkSize(farmpb.NodeService_Heartbeat_FullMethodName, hb); err != nil {
		t.Errorf("a heartbeat: %v", err)
	}
	chunk := &farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Chunk{Chunk: make([]byte, 1<<20)}}
	if err := checkSize(farmpb.NodeService_UploadPart_FullMethodName, chunk); err != nil {
		t.Errorf("an upload's 1 MiB chunk: %v", err)
	}
	if err := checkSize(farmpb.NodeService_ReleaseSet_FullMethodName, &farmpb.ReleaseSetRequest{Error: strings.Repeat("e", 4000)}); err != nil {
		t.Errorf("a release with a 4000-byte error: %v", err)
	}
}

// TestOutOfDescriptorsIsOwnFault: a frame that cannot be opened because the
// coordinator ran out of descriptors is its own fault (ResourceExhausted,
// COORDINATOR_FAULT), not a changed frame that would fail the job.
func TestOutOfDescriptorsIsOwnFault(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f_0001.png"), []byte("png"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "f_0001.png"))
	if err != nil {
		t.Fatal(err)
	}
	f := frameRecord{Number: 1, Name: "f_0001.png", Size: fi.Size(), ModTime: fi.ModTime()}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	// No new descriptor at all, for the moment of the open.
	low := rl
	low.Cur = 0
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	_, err = openFrame(dir, f)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); rerr != nil {
		t.Fatal(rerr)
	}
	c := farmFixture(t)
	st := c.answer(err)
	if !errors.Is(err, errOwnFault) || errors.Is(err, ErrFrameChanged) || status.Code(st) != codes.ResourceExhausted || reason.Of(st) != reason.CoordinatorFault {
		t.Fatalf("out of descriptors: %v (%v), want the coordinator's own fault", err, st)
	}
	// Answered, it is noted for status and counted in the metrics.
	if c.lastOwnFault.msg == "" || testutil.ToFloat64(c.metrics.ownFaults) != 1 {
		t.Errorf("own fault noted %q, counted %v; want noted and counted once", c.lastOwnFault.msg, testutil.ToFloat64(c.metrics.ownFaults))
	}
	fh, err := openFrame(dir, f)
	if err != nil {
		t.Fatalf("with descriptors again: %v", err)
	}
	fh.Close()
}
