package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/framefarm/framefarm/internal/ffmpeg"
	farmpb "github.com/framefarm/framefarm/proto"
)

// fakeAmb is the node's side of the world: an ambassador whose answers the
// test picks.
type fakeAmb struct {
	farmpb.UnimplementedNodeServiceServer

	acquires, heartbeats, streams, uploads, releases atomic.Int64

	mu         sync.Mutex
	acquireErr error                // every AcquireSet fails with it, when set
	grants     []*farmpb.Assignment // handed out in order, then "done"
	frames     [][]byte             // the set's frames
	uploadErrs []error              // the first uploads fail with these
	hbErr      error                // heartbeats fail with it, when set
	problems   []string             // the problems the node reported
	released   []*farmpb.ReleaseSetRequest
	uploaded   []byte
	upDone     chan struct{}
	together   *sync.WaitGroup // when set, StreamFrames waits for this many streams
}

func (f *fakeAmb) AcquireSet(ctx context.Context, _ *farmpb.AcquireSetRequest) (*farmpb.AcquireSetResponse, error) {
	f.acquires.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.acquireErr != nil {
		return nil, f.acquireErr
	}
	if len(f.grants) == 0 {
		return &farmpb.AcquireSetResponse{Result: &farmpb.AcquireSetResponse_Done{Done: "job has no more work"}}, nil
	}
	a := f.grants[0]
	f.grants = f.grants[1:]
	return &farmpb.AcquireSetResponse{Result: &farmpb.AcquireSetResponse_Assignment{Assignment: a}}, nil
}

func (f *fakeAmb) Heartbeat(ctx context.Context, req *farmpb.HeartbeatRequest) (*farmpb.HeartbeatResponse, error) {
	f.heartbeats.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Problem != "" {
		f.problems = append(f.problems, req.Problem)
	}
	if f.hbErr != nil {
		return nil, f.hbErr
	}
	return &farmpb.HeartbeatResponse{}, nil
}

func (f *fakeAmb) StreamFrames(_ *farmpb.StreamFramesRequest, s grpc.ServerStreamingServer[farmpb.FrameChunk]) error {
	f.streams.Add(1)
	if f.together != nil {
		// Hold every stream until the expected number are open at once.
		f.together.Done()
		f.together.Wait()
	}
	for i, b := range f.frames {
		if err := s.Send(&farmpb.FrameChunk{Position: uint32(i), Data: b, Last: true}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeAmb) UploadPart(s grpc.ClientStreamingServer[farmpb.UploadPartRequest, farmpb.UploadPartResponse]) error {
	n := f.uploads.Add(1)
	var data []byte
	var sum []byte
	for {
		m, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, m.GetChunk()...)
		if tr := m.GetTrailer(); tr != nil {
			sum = tr.Sha256
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if int(n) <= len(f.uploadErrs) {
		return f.uploadErrs[n-1]
	}
	if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
		return status.Error(codes.InvalidArgument, "checksum mismatch")
	}
	f.uploaded = data
	if f.upDone != nil {
		close(f.upDone)
		f.upDone = nil
	}
	return s.SendAndClose(&farmpb.UploadPartResponse{})
}

func (f *fakeAmb) ReleaseSet(_ context.Context, req *farmpb.ReleaseSetRequest) (*farmpb.ReleaseSetResponse, error) {
	f.releases.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, req)
	return &farmpb.ReleaseSetResponse{}, nil
}

func serveFake(t *testing.T, f *fakeAmb) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveFakeOn(t, lis, f)
	return lis.Addr().String()
}

func serveFakeOn(t *testing.T, lis net.Listener, f *fakeAmb) {
	srv := grpc.NewServer()
	farmpb.RegisterNodeServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// runNode runs a node against addr until it returns or the test's bound.
func runNode(t *testing.T, addr string, mod func(*Config)) (*logBuf, chan error, context.CancelFunc) {
	t.Helper()
	logs := &logBuf{}
	// One slot, so that each test follows one loop's calls; TestSlots
	// covers more.
	cfg := Config{Ambassador: addr, Name: "n1", Work: t.TempDir(), Once: true, Slots: 1,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan error, 1)
	go func() {
		err := n.Run(ctx)
		done <- err
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("node did not stop")
		}
	})
	return logs, done, cancel
}

func waitDone(t *testing.T, done chan error, logs *logBuf) {
	t.Helper()
	select {
	case err, ok := <-done:
		if ok && err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("node still running\n%s", logs)
	}
}

// The node's backoff after failed calls is exponential with full jitter and
// capped: within a window it makes a bounded number of calls, whatever the
// failure, and waits at least as long as the ambassador says to.
func TestBackoffBounds(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 1600 * time.Millisecond}
	want := []time.Duration{100, 200, 400, 800, 1600, 1600, 1600}
	for i, cur := range want {
		cur *= time.Millisecond
		d := b.next()
		if d < cur/2 || d > cur {
			t.Fatalf("wait %d = %v, want within [%v, %v]", i, d, cur/2, cur)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
	hinted := status.New(codes.Unavailable, "breaker open")
	hinted, _ = hinted.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)})
	b.reset()
	for range 5 {
		if d := waitAfter(hinted.Err(), &b); d < 3*time.Second || d > 3*time.Second+600*time.Millisecond {
			t.Fatalf("wait with a 3s hint = %v", d)
		}
	}
	if d := waitAfter(status.Error(codes.Unavailable, "no hint"), &backoff{min: time.Millisecond, max: time.Millisecond}); d > time.Millisecond {
		t.Fatalf("wait without hint = %v", d)
	}
	// A hint shorter than the backoff grown meanwhile is obeyed too: after
	// a cold start the ambassador knows better than the node's history.
	short, _ := status.New(codes.Unavailable, "waited for the coordinator").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(100 * time.Millisecond)})
	for range 10 {
		b.next()
	}
	if d := waitAfter(short.Err(), &b); d < 100*time.Millisecond || d > 120*time.Millisecond {
		t.Fatalf("wait with a 100ms hint after a long backoff = %v, want 100-120ms", d)
	}
	zero, _ := status.New(codes.Unavailable, "now").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(0)})
	if d := waitAfter(zero.Err(), &b); d < b.min/2 {
		t.Fatalf("wait with a zero hint = %v, want at least %v: no busy loop", d, b.min/2)
	}
}

// An ambassador that keeps answering Unavailable (its breaker open, the
// coordinator away) is asked again after growing waits, never in a loop.
func TestAcquireBacksOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		max  int64
	}{
		// Waits of [10,20], [20,40], [40,80], [80,160], then [100,200] ms:
		// at most 4 + 1500/100 + 1 calls in 1.5s.
		{"no hint", status.Error(codes.Unavailable, "down"), 20},
		// At least 500ms each: at most 1500/500 + 1.
		{"breaker hint", func() error {
			st, _ := status.New(codes.Unavailable, "open").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(500 * time.Millisecond)})
			return st.Err()
		}(), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAmb{acquireErr: tc.err}
			addr := serveFake(t, f)
			_, _, cancel := runNode(t, addr, nil)
			time.Sleep(1500 * time.Millisecond)
			cancel()
			if got := f.acquires.Load(); got < 2 || got > tc.max {
				t.Errorf("%d AcquireSet calls in 1.5s, want 2 to %d", got, tc.max)
			}
		})
	}
}

func needFFmpeg(t *testing.T) {
	t.Helper()
	for _, b := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", b)
		}
	}
}

func pngFrame(t *testing.T, i int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 16, 16))
	for y := range 16 {
		for x := range 16 {
			img.Set(x, y, color.RGBA{uint8(x * 16), uint8(y * 16), uint8(i * 40), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// setOf returns a 3-frame FFV1 assignment and its frames.
func setOf(t *testing.T) (*farmpb.Assignment, [][]byte) {
	a := &farmpb.Assignment{JobId: "j", SetIndex: 2, Token: 7, HeartbeatIntervalMs: 50,
		Settings: &farmpb.EncodeSettings{Codec: "ffv1", FpsNum: 24, FpsDen: 1, Crf: -1, PixFmt: "yuv420p",
			PartExt: "mov", FrameExt: "png", Width: 16, Height: 16}}
	var frames [][]byte
	for i := range 3 {
		b := pngFrame(t, i)
		frames = append(frames, b)
		a.Frames = append(a.Frames, &farmpb.FrameInfo{Number: int64(100 + i), Name: fmt.Sprintf("f_%04d.png", 100+i), Size: int64(len(b))})
	}
	return a, frames
}

// fakeFFmpeg writes an ffmpeg that runs script instead.
func fakeFFmpeg(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ffmpeg")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// An upload cut off by the link (a coordinator restarting, a breaker open)
// is sent again until it is taken: the work is not thrown away, and the
// set is not given back as failed.
func TestUploadRetriedUntilTaken(t *testing.T) {
	needFFmpeg(t)
	a, frames := setOf(t)
	unavailable := status.Error(codes.Unavailable, "coordinator restarting")
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames,
		uploadErrs: []error{unavailable, unavailable, status.Error(codes.DeadlineExceeded, "slow"), unavailable}}
	logs, done, _ := runNode(t, serveFake(t, f), nil)
	waitDone(t, done, logs)
	if got := f.uploads.Load(); got != 5 {
		t.Errorf("%d upload attempts, want 5", got)
	}
	if f.releases.Load() != 0 {
		t.Errorf("the set was given back: %v", f.released)
	}
	if len(f.uploaded) == 0 {
		t.Fatal("no part was taken")
	}
	if !strings.Contains(logs.String(), "part uploaded") {
		t.Errorf("log:\n%s", logs)
	}
}

// A refused upload (the lease moved on) drops the set: no give-back, no
// retry, and the node asks for more work.
func TestLeaseLostOnUploadDropsTheSet(t *testing.T) {
	needFFmpeg(t)
	a, frames := setOf(t)
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames,
		uploadErrs: []error{status.Error(codes.FailedPrecondition, "stale fencing token")}}
	logs, done, _ := runNode(t, serveFake(t, f), nil)
	waitDone(t, done, logs)
	if got := f.uploads.Load(); got != 1 {
		t.Errorf("%d upload attempts, want 1", got)
	}
	if f.releases.Load() != 0 {
		t.Errorf("a set whose lease is lost was given back: %v", f.released)
	}
	if got := f.acquires.Load(); got != 2 {
		t.Errorf("%d AcquireSet calls, want 2 (the node moves on)", got)
	}
	if !strings.Contains(logs.String(), "lease lost") {
		t.Errorf("log:\n%s", logs)
	}
}

// A heartbeat refused (the lease expired, say after the node was stopped
// for a while) stops the encode at once; the set is not given back.
func TestLeaseLostOnHeartbeatStopsTheEncode(t *testing.T) {
	a, frames := setOf(t)
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames,
		hbErr: status.Error(codes.FailedPrecondition, "stale fencing token: set 2 is B under token 8")}
	slow := fakeFFmpeg(t, "exec sleep 30")
	logs, done, _ := runNode(t, serveFake(t, f), func(c *Config) { c.FFmpeg = ffmpeg.Runner{FFmpeg: slow} })
	waitDone(t, done, logs)
	if f.releases.Load() != 0 || f.uploads.Load() != 0 {
		t.Errorf("%d releases, %d uploads; want none", f.releases.Load(), f.uploads.Load())
	}
	if !strings.Contains(logs.String(), "stale fencing token") {
		t.Errorf("the log does not say why the set was dropped:\n%s", logs)
	}
}

// ffmpeg failing gives the set back with ffmpeg's own words, which the
// coordinator counts as a failure of the set on this node.
func TestFFmpegFailureGivesSetBackWithItsText(t *testing.T) {
	a, frames := setOf(t)
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	bad := fakeFFmpeg(t, `echo "[vist#0:0/png] Error while decoding stream #0:0: Invalid data found when processing input" >&2; exit 1`)
	logs, done, _ := runNode(t, serveFake(t, f), func(c *Config) { c.FFmpeg = ffmpeg.Runner{FFmpeg: bad} })
	waitDone(t, done, logs)
	if len(f.released) != 1 {
		t.Fatalf("%d releases, want 1", len(f.released))
	}
	r := f.released[0]
	if r.Token != 7 || r.SetIndex != 2 || !strings.Contains(r.Error, "Invalid data found") || !strings.Contains(r.Error, "frames 100-102") {
		t.Errorf("release = %v, want set 2 token 7 with ffmpeg's text", r)
	}
}

// ffmpeg failing on this machine's full disk is the machine's fault, not
// the set's: the set goes back without a failure, and the node says why.
func TestOwnDiskFullIsNotTheSets(t *testing.T) {
	a, frames := setOf(t)
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	bad := fakeFFmpeg(t, `echo "[out#0/nut] Error writing trailer: No space left on device" >&2; exit 1`)
	logs, done, _ := runNode(t, serveFake(t, f), func(c *Config) { c.FFmpeg = ffmpeg.Runner{FFmpeg: bad} })
	waitDone(t, done, logs)
	if len(f.released) != 1 || f.released[0].Error != "" || f.released[0].Token != 7 {
		t.Fatalf("releases %v, want set 2 given back without a failure", f.released)
	}
	if !strings.Contains(logs.String(), "this machine's own reason") {
		t.Errorf("the log does not say the fault is the machine's:\n%s", logs)
	}
}

// A machine that looks fit (ffmpeg there, space free) yet whose sets keep
// failing "for want of space" is given the benefit of the doubt only
// maxOwnFaults times in a row: then its failures count, so that it cannot
// hold the job up forever.
func TestOwnFaultsInARowCountAtLast(t *testing.T) {
	a, frames := setOf(t)
	var grants []*farmpb.Assignment
	for i := range maxOwnFaults + 1 {
		g := proto.CloneOf(a)
		g.Token = uint64(10 + i)
		grants = append(grants, g)
	}
	f := &fakeAmb{grants: grants, frames: frames}
	bad := fakeFFmpeg(t, `echo "[out#0/nut] Error writing trailer: No space left on device" >&2; exit 1`)
	logs, done, _ := runNode(t, serveFake(t, f), func(c *Config) { c.FFmpeg = ffmpeg.Runner{FFmpeg: bad} })
	waitDone(t, done, logs)
	if len(f.released) != maxOwnFaults+1 {
		t.Fatalf("%d releases, want %d", len(f.released), maxOwnFaults+1)
	}
	for i, r := range f.released {
		if charged := r.Error != ""; charged != (i == maxOwnFaults) {
			t.Errorf("release %d (token %d) error %q: want a failure only after %d in a row", i, r.Token, r.Error, maxOwnFaults)
		}
	}
}

// Without ffmpeg the node asks for no work, and tells the coordinator why
// (a heartbeat without a lease, shown in status).
func TestNoFFmpegAsksForNoWork(t *testing.T) {
	a, frames := setOf(t)
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	logs, _, _ := runNode(t, serveFake(t, f), func(c *Config) {
		c.FFmpeg = ffmpeg.Runner{FFmpeg: filepath.Join(t.TempDir(), "no-ffmpeg")}
	})
	time.Sleep(time.Second)
	f.mu.Lock()
	problems := slices.Clone(f.problems)
	f.mu.Unlock()
	if n := f.acquires.Load(); n != 0 {
		t.Errorf("%d requests for work without ffmpeg, want none", n)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "ffmpeg cannot be run") {
		t.Errorf("problems reported %q, want one naming ffmpeg\n%s", problems, logs)
	}
}

// A frame that does not decode stops ffmpeg with its own message, instead
// of a part one frame short.
func TestUndecodableFrameFailsWithFFmpegsText(t *testing.T) {
	needFFmpeg(t)
	a, frames := setOf(t)
	frames[1] = frames[1][:len(frames[1])/2]
	a.Frames[1].Size = int64(len(frames[1]))
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	logs, done, _ := runNode(t, serveFake(t, f), nil)
	waitDone(t, done, logs)
	if len(f.released) != 1 {
		t.Fatalf("%d releases, want 1\n%s", len(f.released), logs)
	}
	if r := f.released[0].Error; !strings.Contains(r, "ffmpeg") || !strings.Contains(r, "png") {
		t.Errorf("release reason %q, want ffmpeg's message about the PNG", r)
	}
}

// Stopping the node (SIGINT, SIGTERM) gives the set back at once, as a
// clean release that is no failure.
func TestStopGivesTheSetBack(t *testing.T) {
	a, frames := setOf(t)
	f := &fakeAmb{grants: []*farmpb.Assignment{a}, frames: frames}
	slow := fakeFFmpeg(t, "exec sleep 30")
	logs, done, cancel := runNode(t, serveFake(t, f), func(c *Config) { c.FFmpeg = ffmpeg.Runner{FFmpeg: slow}; c.Once = false })
	deadline := time.Now().Add(10 * time.Second)
	for f.heartbeats.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	waitDone(t, done, logs)
	if len(f.released) != 1 || f.released[0].Error != "" || f.released[0].Token != 7 {
		t.Fatalf("releases %v, want one clean release of token 7", f.released)
	}
}

// A node with two slots works on two sets at once: the fake ambassador holds
// each frame stream until two are open, which one slot never does.
func TestSlots(t *testing.T) {
	needFFmpeg(t)
	a, frames := setOf(t)
	b := proto.Clone(a).(*farmpb.Assignment)
	b.SetIndex++
	var together sync.WaitGroup
	together.Add(2)
	f := &fakeAmb{grants: []*farmpb.Assignment{a, b}, frames: frames, together: &together}
	logs, done, _ := runNode(t, serveFake(t, f), func(c *Config) { c.Slots = 2 })
	waitDone(t, done, logs)
	if got := f.uploads.Load(); got != 2 {
		t.Errorf("%d parts uploaded, want 2\n%s", got, logs)
	}
	if got := strings.Count(logs.String(), "part uploaded"); got != 2 {
		t.Errorf("%d sets logged as uploaded, want 2\n%s", got, logs)
	}
}

// A node started before its ambassador asks for work as soon as the
// ambassador listens, not after a backoff grown meanwhile.
func TestNodeStartedBeforeItsAmbassador(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	f := &fakeAmb{}
	logs, _, _ := runNode(t, addr, func(c *Config) { c.MaxBackoff = 10 * time.Second })
	time.Sleep(2500 * time.Millisecond)
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveFakeOn(t, lis, f)
	up := time.Now()
	for f.acquires.Load() == 0 {
		if time.Since(up) > 5*time.Second {
			t.Fatalf("no AcquireSet 5s after the ambassador listened; node log:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// gRPC's reconnect backoff is at most 200ms (+20% jitter) here.
	if took := time.Since(up); took > 500*time.Millisecond {
		t.Errorf("first AcquireSet %v after the ambassador listened, want within 500ms", took)
	}
	if !strings.Contains(logs.String(), "waiting for the ambassador") {
		t.Errorf("the node did not say it waits for its ambassador:\n%s", logs)
	}
}
