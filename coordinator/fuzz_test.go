package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/chunk"
	"github.com/framefarm/framefarm/internal/ffmpeg"
	farmpb "github.com/framefarm/framefarm/proto"
)

// fzFixture is one real Coordinator (New on a folder of five 16x16 PNGs,
// FFV1, 3 sets) whose handlers the fuzzer calls directly. Its job is reset
// before every input, so that an input's outcome does not depend on the
// ones before it.
type fzFixture struct {
	c      *Coordinator
	dir    string
	now    time.Time
	mtimes map[string]time.Time
	// parts holds a real part (FFV1 in MOV, as nodes encode it) of every
	// set size, by frame count.
	parts map[int][]byte
}

const fzFrames, fzSets = 5, 3

var fzStart = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func newFzFixture(t testing.TB) *fzFixture {
	t.Helper()
	dir := t.TempDir()
	frames := filepath.Join(dir, "frames")
	if err := os.Mkdir(frames, 0o755); err != nil {
		t.Fatal(err)
	}
	fx := &fzFixture{dir: dir, now: fzStart, mtimes: map[string]time.Time{}}
	for i := 1; i <= fzFrames; i++ {
		img := image.NewGray(image.Rect(0, 0, 16, 16))
		for p := range img.Pix {
			img.Pix[p] = uint8(p * i)
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("f_%04d.png", i)
		p := filepath.Join(frames, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		fx.mtimes[p] = fi.ModTime()
	}
	fx.parts = fzParts(t, frames)
	c, err := New(context.Background(), Config{
		JobSpec: JobSpec{FramesDir: frames, Sets: fzSets, Codec: "ffv1", FPS: "24", CRF: -1},
		Data:    filepath.Join(dir, "data"), Listen: "127.0.0.1:0",
		Lease: time.Minute, HeartbeatTimeout: 10 * time.Second, PollWindow: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
		Now:    func() time.Time { return fx.now },
		FFmpeg: ffmpeg.Runner{FFmpeg: filepath.Join(dir, "no-ffmpeg"), FFprobe: filepath.Join(dir, "no-ffprobe")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	fx.c = c
	return fx
}

// reset gives the coordinator a fresh job (same id, tokens from 1 again),
// persisted, with no nodes, no parts and the frames as they were.
func (fx *fzFixture) reset(t testing.TB) {
	t.Helper()
	c := fx.c
	ctx := context.Background()
	fx.now = fzStart
	for p, mt := range fx.mtimes {
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(c.only().partDir)
	for _, e := range entries {
		os.Remove(filepath.Join(c.only().partDir, e.Name()))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	jr := c.only()
	jr.job = &job.Job{ID: jr.rec.ID, State: job.JobRunning, Sets: job.Partition(len(jr.frames), fzSets), NodeFailures: map[string]int{}}
	c.nodes = map[string]*nodeInfo{}
	if _, err := c.sqlite().db.ExecContext(ctx, `DELETE FROM events WHERE job_id=?`, jr.rec.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.sqlite().commit(ctx, jr.job, jr.job.Sets, []job.Event{{At: fx.now, Kind: "job_created", Set: -1}}); err != nil {
		t.Fatal(err)
	}
	// As numbered by commit: the farm's events are this job's.
	c.lastFSeq = 1
}

// Fake gRPC server streams.

type fzStream struct{ ctx context.Context }

func (s *fzStream) SetHeader(metadata.MD) error  { return nil }
func (s *fzStream) SendHeader(metadata.MD) error { return nil }
func (s *fzStream) SetTrailer(metadata.MD)       {}
func (s *fzStream) Context() context.Context     { return s.ctx }
func (s *fzStream) SendMsg(any) error            { return nil }
func (s *fzStream) RecvMsg(any) error            { return io.EOF }

// fzSend collects what a server-streaming handler sends (copied: handlers
// reuse their buffers, as gRPC lets them).
type fzSend[T any] struct {
	fzStream
	sent   []*T
	onSend func()
}

func (s *fzSend[T]) Send(m *T) error {
	s.sent = append(s.sent, proto.Clone(any(m).(proto.Message)).(any).(*T))
	if s.onSend != nil {
		s.onSend()
	}
	return nil
}

// SendMsg takes what a handler hands gRPC directly (a chunk.Out), encoded
// by the server's codec and decoded as the client would.
func (s *fzSend[T]) SendMsg(m any) error {
	if t, ok := m.(*T); ok {
		return s.Send(t)
	}
	codec := chunk.NewCodec()
	data, err := codec.Marshal(m)
	if err != nil {
		return err
	}
	defer data.Free()
	t := new(T)
	if err := codec.Unmarshal(data, t); err != nil {
		return err
	}
	return s.Send(t)
}

// fzUpload feeds an UploadPart handler; after msgs, it sends empty messages
// forever when endless is set, else io.EOF.
type fzUpload struct {
	fzStream
	msgs    []*farmpb.UploadPartRequest
	endless bool
	read    int
	closed  bool
}

func (s *fzUpload) Recv() (*farmpb.UploadPartRequest, error) {
	s.read++
	if len(s.msgs) > 0 {
		m := s.msgs[0]
		s.msgs = s.msgs[1:]
		return m, nil
	}
	if s.endless {
		if s.read > 1000 {
			// The handler should have stopped long ago: end the test's wait.
			return nil, status.Error(codes.Canceled, "the test stopped streaming")
		}
		return &farmpb.UploadPartRequest{}, nil
	}
	return nil, io.EOF
}

func (s *fzUpload) SendAndClose(*farmpb.UploadPartResponse) error { s.closed = true; return nil }

// wire is what the request looks like after crossing gRPC: ok is false when
// it cannot be sent at all (proto3 strings must be valid UTF-8).
func wire[T proto.Message](m T) (T, bool) {
	b, err := proto.Marshal(m)
	if err != nil {
		return m, false
	}
	out := m.ProtoReflect().New().Interface().(T)
	if err := proto.Unmarshal(b, out); err != nil {
		return m, false
	}
	return out, true
}

// FuzzNodeRequests drives the node and farm handlers with fuzzed node
// names, job ids, set indices, fencing tokens, frames done, error texts and
// upload contents, in a fuzzed order, mixing real leases (to reach deep
// states) with made-up ones. Nothing may panic; every error must be one
// of InvalidArgument, NotFound or FailedPrecondition once mapped by
// toStatus; after every call the job's state must be valid, its status must
// be sendable, and the parts folder must hold only completed parts; after
// the input, the stored state must equal the state in memory.
func FuzzNodeRequests(f *testing.F) {
	long := "x" + strings.Repeat("é", 2500) // cut at 4000 bytes, inside a rune
	for _, s := range []struct {
		node, job string
		set       uint32
		token     uint64
		done      uint32
		text      string
		ops       []byte
	}{
		{"n", "", 0, 1, 1, "", []byte{0, 0, 1, 0, 5, 0}},
		{"n", "../../etc/passwd", 0, 1, 1, "", []byte{1, 2, 2, 2, 3, 2, 4, 2, 5, 2, 6, 2, 7, 2}},
		{"/etc/passwd", "\x00", 99999, 1 << 63, 1 << 31, "", []byte{0, 1, 1, 9, 2, 9, 3, 9, 4, 9}},
		{"n", "", 0, 0, 1000, "", []byte{0, 0, 1, 0x80, 5, 0}},
		{"n", "", 0, 0, 0, long, []byte{0, 0, 2, 0, 5, 0}},
		{"n", "", 0, 0, 0, "boom", []byte{0, 0x00, 2, 0x00, 0, 0x10, 2, 0x10, 0, 0x20, 2, 0x20, 0, 0, 2, 0}},
		{"n", "", 0, 0, 0, "part bytes", []byte{0, 0, 4, 0, 0, 0, 4, 1, 0, 0, 4, 2, 0, 0, 4, 3}},
		{"n", "", 0, 0, 0, "part bytes", []byte{0, 0, 4, 4, 0, 0, 4, 5, 0, 0, 4, 6}},
		{"n", "", 0, 0, 0, "\xff\xfeffprobe: bad \xc3", []byte{0, 0, 4, 7, 5, 0}},
		{"n", "", 0, 0, 0, "part", []byte{0, 0, 4, 8, 0, 0x10, 4, 0x18, 0, 0x20, 4, 0x28, 5, 0, 6, 0}},
		{"n", "", 0, 0, 0, "", []byte{0, 0, 3, 0, 9, 0, 3, 0, 5, 0, 0, 0}},
		{"n", "", 0, 0, 30, "", []byte{0, 0, 8, 0, 1, 0, 8, 0xff, 0, 0}},
		{"n", "", 0, 5, 0, "", []byte{7, 0, 7, 0x80, 6, 0}},
	} {
		f.Add(s.node, s.job, s.set, s.token, s.done, s.text, s.ops)
	}
	fx := newFzFixture(f)
	f.Fuzz(func(t *testing.T, node, job string, set uint32, token uint64, done uint32, text string, ops []byte) {
		fx.reset(t)
		c := fx.c
		ctx := context.Background()
		pool := []string{"n0", "n1", "n2", "n3"}
		if len(ops) > 64 {
			ops = ops[:64]
		}
		for i := 0; i+1 < len(ops); i += 2 {
			op, fl := ops[i]%10, ops[i+1]
			// Flags: 0x01 fuzzed node (else one of the pool, 0x06); 0x08
			// fuzzed job id (else ours, or "" with 0x10); 0x20 fuzzed set
			// index (else a set the node holds); 0x40 fuzzed token (else the
			// set's); 0x80 fuzzed frames done (else the set's count).
			n := pool[int(fl>>1)%len(pool)]
			if fl&0x01 != 0 {
				n = node
			}
			jid := c.only().rec.ID
			switch {
			case fl&0x08 != 0:
				jid = job
			case fl&0x10 != 0:
				jid = ""
			}
			idx, tok, fd := fx.lease(n)
			if fl&0x20 != 0 {
				idx = set
			}
			if fl&0x40 != 0 {
				tok = token
			}
			if fl&0x80 != 0 {
				fd = done
			}
			what, err := fx.call(t, ctx, op, fl, n, jid, idx, tok, fd, text)
			if err != nil {
				code := status.Code(toStatus(err))
				switch code {
				case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
				default:
					t.Fatalf("%s: %v (%s): not one of InvalidArgument, NotFound, FailedPrecondition", what, err, code)
				}
			}
			fx.check(t, what)
		}
		fx.checkStored(t)
	})
}

// lease returns the set node holds (or else the first one in B, or set 0),
// its token and its frame count.
func (fx *fzFixture) lease(node string) (uint32, uint64, uint32) {
	c := fx.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var pick *job.Set
	for _, s := range c.only().job.Sets {
		if s.State == job.Assigned && (s.Node == node || pick == nil) {
			pick = s
		}
	}
	if pick == nil {
		pick = c.only().job.Sets[0]
	}
	return uint32(pick.Index), pick.Token, uint32(pick.Count)
}

func (fx *fzFixture) call(t *testing.T, ctx context.Context, op, fl byte, node, job string, idx uint32, tok uint64, fd uint32, text string) (string, error) {
	c := fx.c
	ns, fs := newNodeService(c), &farmService{c: c}
	switch op {
	case 0:
		req, ok := wire(&farmpb.AcquireSetRequest{Node: node})
		if !ok {
			return "AcquireSet (not sendable)", nil
		}
		resp, err := ns.AcquireSet(ctx, req)
		if err == nil {
			if a := resp.GetAssignment(); a != nil {
				if a.JobId != c.only().rec.ID || int(a.SetIndex) >= fzSets || len(a.Frames) == 0 {
					t.Fatalf("AcquireSet(%q) granted %v", node, a)
				}
				for _, fr := range a.Frames {
					if strings.ContainsAny(fr.Name, "/\x00") || fr.Name == ".." {
						t.Fatalf("AcquireSet sent the frame name %q", fr.Name)
					}
				}
			}
			if _, err := proto.Marshal(resp); err != nil {
				t.Fatalf("AcquireSet(%q) answer cannot be sent: %v", node, err)
			}
		}
		return fmt.Sprintf("AcquireSet(%q)", node), err
	case 1:
		req, ok := wire(&farmpb.HeartbeatRequest{Node: node, JobId: job, SetIndex: idx, Token: tok, FramesDone: fd, CpuLoad: float64(fd), FreeCores: -1})
		if !ok {
			return "Heartbeat (not sendable)", nil
		}
		_, err := ns.Heartbeat(ctx, req)
		return fmt.Sprintf("Heartbeat(%q, %q, set %d, token %d, done %d)", node, job, idx, tok, fd), err
	case 2:
		req, ok := wire(&farmpb.ReleaseSetRequest{Node: node, JobId: job, SetIndex: idx, Token: tok, Error: text})
		if !ok {
			return "ReleaseSet (not sendable)", nil
		}
		_, err := ns.ReleaseSet(ctx, req)
		return fmt.Sprintf("ReleaseSet(%q, %q, set %d, token %d, %d bytes of error)", node, job, idx, tok, len(text)), err
	case 3:
		req, ok := wire(&farmpb.StreamFramesRequest{Node: node, JobId: job, SetIndex: idx, Token: tok})
		if !ok {
			return "StreamFrames (not sendable)", nil
		}
		st := &fzSend[farmpb.FrameChunk]{fzStream: fzStream{ctx: ctx}}
		err := ns.StreamFrames(req, st)
		what := fmt.Sprintf("StreamFrames(%q, %q, set %d, token %d)", node, job, idx, tok)
		if err == nil {
			fx.checkFrames(t, what, int(idx), st.sent)
		}
		return what, err
	case 4:
		return fx.upload(t, ctx, ns, fl, node, job, idx, tok, fd, text)
	case 5:
		req, ok := wire(&farmpb.GetJobRequest{JobId: job})
		if !ok {
			return "GetJob (not sendable)", nil
		}
		_, err := fs.GetJob(ctx, req)
		return fmt.Sprintf("GetJob(%q)", job), err
	case 6:
		req, ok := wire(&farmpb.DownloadVideoRequest{JobId: job})
		if !ok {
			return "DownloadVideo (not sendable)", nil
		}
		st := &fzSend[farmpb.VideoChunk]{fzStream: fzStream{ctx: ctx}}
		err := fs.DownloadVideo(req, st)
		if err == nil {
			t.Fatalf("DownloadVideo(%q) sent %d chunks of a job that has no video", job, len(st.sent))
		}
		return fmt.Sprintf("DownloadVideo(%q)", job), err
	case 7:
		req, ok := wire(&farmpb.WatchEventsRequest{JobId: job, AfterSeq: tok})
		if !ok {
			return "WatchEvents (not sendable)", nil
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		defer cancel()
		st := &fzSend[farmpb.Event]{fzStream: fzStream{ctx: wctx}, onSend: cancel}
		err := fs.WatchEvents(req, st)
		if err != nil && wctx.Err() != nil {
			err = nil // the watcher went away: what it is told does not matter
		}
		for i, e := range st.sent {
			if e.JobId != c.only().rec.ID || e.Seq <= tok || (i > 0 && e.Seq <= st.sent[i-1].Seq) {
				t.Fatalf("WatchEvents(after %d) sent event %d: %v", tok, i, e)
			}
		}
		return fmt.Sprintf("WatchEvents(%q, after %d)", job, tok), err
	case 8:
		// Time passes (up to 3 heartbeat timeouts), with the sweeper
		// running every second as it does.
		for range fl / 8 {
			fx.now = fx.now.Add(time.Second)
			err := c.change(ctx, c.expireLeases)
			if err != nil {
				return "sweep", err
			}
		}
		return fmt.Sprintf("sweeps up to +%s", fx.now.Sub(fzStart)), nil
	default:
		// A frame of the folder changes under the job.
		p := filepath.Join(c.only().rec.FramesDir, c.only().frames[int(fl)%len(c.only().frames)].Name)
		mt := fzStart.Add(time.Duration(fl+1) * time.Hour)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return "touch " + p, nil
	}
}

// upload sends a part in one of several shapes, picked by fl&7.
func (fx *fzFixture) upload(t *testing.T, ctx context.Context, ns *nodeService, fl byte, node, job string, idx uint32, tok uint64, fd uint32, text string) (string, error) {
	data := []byte(text)
	// With 0x08 the part is a real one of the set's size (it passes the
	// checks), else the fuzzer's bytes.
	if fl&0x08 != 0 && int(idx) < fzSets {
		data = fx.parts[fx.c.only().job.Sets[idx].Count]
	}
	sum := sha256.Sum256(data)
	size := int64(len(data))
	if fl&0x80 != 0 {
		size = int64(fd) - 1<<31 // any size, negative ones too
	}
	header := &farmpb.PartHeader{Node: node, JobId: job, SetIndex: idx, Token: tok, Size: size, Frames: fd}
	hdr := &farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Header{Header: header}}
	chunk := &farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Chunk{Chunk: data}}
	trailer := &farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Trailer{Trailer: &farmpb.PartTrailer{Sha256: sum[:]}}}
	bad := &farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Trailer{Trailer: &farmpb.PartTrailer{Sha256: []byte("not a sum")}}}
	st := &fzUpload{fzStream: fzStream{ctx: ctx}}
	shape := ""
	switch fl & 7 {
	case 0:
		shape, st.msgs = "header chunk trailer", []*farmpb.UploadPartRequest{hdr, chunk, trailer}
	case 1:
		shape, st.msgs = "nothing", nil
	case 2:
		shape, st.msgs = "chunk first", []*farmpb.UploadPartRequest{chunk, hdr, trailer}
	case 3:
		shape, st.msgs = "no trailer", []*farmpb.UploadPartRequest{hdr, chunk}
	case 4:
		shape, st.msgs = "wrong sum", []*farmpb.UploadPartRequest{hdr, chunk, bad}
	case 5:
		shape, st.msgs = "chunk twice", []*farmpb.UploadPartRequest{hdr, chunk, chunk, trailer}
	case 6:
		shape, st.msgs, st.endless = "empty messages forever", []*farmpb.UploadPartRequest{hdr, chunk}, true
	case 7:
		shape, st.msgs = "header twice", []*farmpb.UploadPartRequest{hdr, hdr, chunk, trailer}
	}
	for i, m := range st.msgs {
		w, ok := wire(m)
		if !ok {
			return "UploadPart (not sendable)", nil
		}
		st.msgs[i] = w
	}
	err := ns.UploadPart(st)
	what := fmt.Sprintf("UploadPart(%q, %q, set %d, token %d, size %d, %s)", node, job, idx, tok, size, shape)
	if st.read > 1000 {
		t.Fatalf("%s: the coordinator read %d messages of an upload of %d bytes", what, st.read, len(data))
	}
	if err == nil && !st.closed {
		t.Fatalf("%s: no error and no answer", what)
	}
	return what, err
}

// checkFrames checks what StreamFrames sent: every frame of the set, in
// order, whole, each ending with one Last chunk.
func (fx *fzFixture) checkFrames(t *testing.T, what string, idx int, sent []*farmpb.FrameChunk) {
	c := fx.c
	s := c.only().job.Sets[idx]
	got := make([][]byte, s.Count)
	lasts := make([]int, s.Count)
	prev := uint32(0)
	for _, ch := range sent {
		if int(ch.Position) >= s.Count || ch.Position < prev {
			t.Fatalf("%s: chunk for position %d after %d (set of %d frames)", what, ch.Position, prev, s.Count)
		}
		prev = ch.Position
		got[ch.Position] = append(got[ch.Position], ch.Data...)
		if ch.Last {
			lasts[ch.Position]++
		}
	}
	for i := range got {
		want, err := os.ReadFile(filepath.Join(c.only().rec.FramesDir, c.only().frames[s.First+i].Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[i], want) || lasts[i] != 1 {
			t.Fatalf("%s: frame %d arrived as %d bytes with %d last marks, want %d bytes and 1", what, i, len(got[i]), lasts[i], len(want))
		}
	}
}

// check asserts that the job is a valid state of the machine.
func (fx *fzFixture) check(t *testing.T, after string) {
	t.Helper()
	c := fx.c
	c.mu.Lock()
	j := c.only().job
	fail := func(format string, a ...any) {
		c.mu.Unlock()
		t.Fatalf("after %s: "+format, append([]any{after}, a...)...)
	}
	if !slices.Contains([]job.JobState{job.JobRunning, job.JobJoining, job.JobDone, job.JobFailed}, j.State) {
		fail("job state %q", j.State)
	}
	if (j.State == job.JobFailed) != (j.Reason != "") {
		fail("job %s with reason %q", j.State, j.Reason)
	}
	want := job.Partition(len(c.only().frames), fzSets)
	tokens := map[uint64]bool{}
	failures := map[string]int{}
	parts := map[string]bool{}
	allC, anyF := true, false
	for i, s := range j.Sets {
		if s.Index != i || s.First != want[i].First || s.Count != want[i].Count {
			fail("set %d covers %d+%d, want %d+%d", i, s.First, s.Count, want[i].First, want[i].Count)
		}
		if s.FramesDone < 0 || s.FramesDone > s.Count {
			fail("set %d has %d of %d frames done", i, s.FramesDone, s.Count)
		}
		switch s.State {
		case job.Available:
			if s.Node != "" {
				fail("set %d is A but held by %q", i, s.Node)
			}
		case job.Assigned:
			if s.Node == "" || s.Token == 0 || s.Token > j.NextToken || tokens[s.Token] {
				fail("set %d is B with node %q token %d (next %d)", i, s.Node, s.Token, j.NextToken)
			}
			tokens[s.Token] = true
		case job.Completed:
			if s.Part.Name == "" || s.FramesDone != s.Count {
				fail("set %d is C without its part: %+v", i, s.Part)
			}
			parts[s.Part.Name] = true
		case job.Failed:
			anyF = true
			if len(s.FailedOn) < job.MaxFailures {
				fail("set %d is F after failing on %d nodes", i, len(s.FailedOn))
			}
		default:
			fail("set %d has state %q", i, s.State)
		}
		allC = allC && s.State == job.Completed
		if len(s.FailedOn) > job.MaxFailures {
			fail("set %d failed on %d nodes: %q", i, len(s.FailedOn), s.FailedOn)
		}
		if s.State != job.Failed && len(s.FailedOn) >= job.MaxFailures {
			fail("set %d failed %d times and is %c", i, len(s.FailedOn), s.State)
		}
		for k, n := range s.FailedOn {
			if !slices.Contains(s.FailedOn[:k], n) {
				failures[n]++ // NodeFailures counts the sets a node failed
			}
		}
	}
	for n, k := range failures {
		if j.NodeFailures[n] != k {
			fail("node %q failed %d sets, counted %d", n, k, j.NodeFailures[n])
		}
	}
	if anyF && j.State != job.JobFailed {
		fail("a set is F and the job is %s", j.State)
	}
	if (j.State == job.JobJoining || j.State == job.JobDone) && !allC {
		fail("job %s with sets not completed", j.State)
	}
	if allC && j.State == job.JobRunning {
		fail("every set completed and the job is still running")
	}
	c.mu.Unlock()

	st, err := (&farmService{c: c}).GetJob(context.Background(), &farmpb.GetJobRequest{})
	if err != nil {
		t.Fatalf("after %s: status: %v", after, err)
	}
	if _, err := proto.Marshal(st); err != nil {
		t.Fatalf("after %s: the job's status cannot be sent: %v", after, err)
	}
	if st.FramesDone > st.TotalFrames {
		t.Fatalf("after %s: status says %d of %d frames done", after, st.FramesDone, st.TotalFrames)
	}
	for _, s := range st.Sets {
		if !utf8.ValidString(s.LastError) {
			t.Fatalf("after %s: set %d error is not UTF-8", after, s.Index)
		}
	}
	entries, err := os.ReadDir(c.only().partDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !parts[e.Name()] {
			t.Fatalf("after %s: the parts folder holds %q, which is no completed set's part", after, e.Name())
		}
	}
}

// checkStored asserts that what SQLite holds is the state in memory.
func (fx *fzFixture) checkStored(t *testing.T) {
	t.Helper()
	c := fx.c
	_, _, stored, err := c.sqlite().loadJob(context.Background(), c.only().rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	j := c.only().job
	if stored.State != j.State || stored.Reason != j.Reason || stored.NextToken != j.NextToken || stored.LastSeq != j.LastSeq {
		t.Fatalf("stored job %s %q token %d seq %d, in memory %s %q token %d seq %d",
			stored.State, stored.Reason, stored.NextToken, stored.LastSeq, j.State, j.Reason, j.NextToken, j.LastSeq)
	}
	for i, s := range j.Sets {
		d := stored.Sets[i]
		if d.State != s.State || d.Node != s.Node || d.Token != s.Token || d.LastError != s.LastError ||
			!slices.Equal(d.FailedOn, s.FailedOn) || d.Part != s.Part {
			t.Fatalf("set %d stored as %c %q token %d failed on %q, in memory %c %q token %d failed on %q",
				i, d.State, d.Node, d.Token, d.FailedOn, s.State, s.Node, s.Token, s.FailedOn)
		}
	}
}

// fzParts encodes, once per set size, the part a node would upload for the
// frames in dir.
func fzParts(t testing.TB, dir string) map[int][]byte {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg is not installed")
	}
	parts := map[int][]byte{}
	for _, s := range job.Partition(fzFrames, fzSets) {
		if parts[s.Count] != nil {
			continue
		}
		seq := t.TempDir()
		for i := range s.Count {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f_%04d.png", s.First+i+1)))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(seq, ffmpeg.SequenceName(i, "png")), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out := filepath.Join(seq, "part.mov")
		args, err := ffmpeg.EncodeArgs(ffmpeg.SequencePattern(seq, "png"), ffmpeg.Settings{Codec: "ffv1", Rate: ffmpeg.Rate{Num: 24, Den: 1}, CRF: -1, PixFmt: "yuv420p"}, out)
		if err != nil {
			t.Fatal(err)
		}
		if err := (ffmpeg.Runner{}).Run(context.Background(), args, nil); err != nil {
			t.Fatal(err)
		}
		if parts[s.Count], err = os.ReadFile(out); err != nil {
			t.Fatal(err)
		}
	}
	return parts
}

// only is the fixture's one job.
func (c *Coordinator) only() *jobRun { return c.queue[0] }
