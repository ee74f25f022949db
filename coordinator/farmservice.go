package coordinator

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	farmpb "github.com/framefarm/framefarm/proto"
)

type farmService struct {
	farmpb.UnimplementedFarmServiceServer
	c *Coordinator
}

func (f *farmService) GetJob(ctx context.Context, req *farmpb.GetJobRequest) (*farmpb.JobStatus, error) {
	if err := f.c.checkJob(req.JobId); err != nil {
		return nil, err
	}
	return f.c.status(), nil
}

func (c *Coordinator) status() *farmpb.JobStatus {
	c.mu.Lock()
	js := c.statusLocked()
	b := c.pending()
	c.mu.Unlock()
	// What is shown must be durable; after a failed commit it is not, but
	// the coordinator is stopping and its last state is still the best
	// answer.
	_ = c.await(context.Background(), b)
	return js
}

func (c *Coordinator) statusLocked() *farmpb.JobStatus {
	js := &farmpb.JobStatus{
		JobId: c.rec.ID, State: c.job.State, Reason: c.job.Reason, FramesDir: c.rec.FramesDir,
		TotalFrames: uint32(len(c.frames)), OutPath: c.rec.OutPath, LastEventSeq: c.job.LastSeq,
		FinalSize: c.rec.FinalSize, FinalSha256: c.rec.FinalSHA,
		Settings: c.encodeSettings(),
	}
	for _, s := range c.job.Sets {
		ss := &farmpb.SetStatus{
			Index: uint32(s.Index), State: string(s.State), FrameCount: uint32(s.Count),
			FirstFrame: c.frames[s.First].Number, LastFrame: c.frames[s.First+s.Count-1].Number,
			Node: s.Node, FramesDone: uint32(s.FramesDone), Failures: uint32(len(s.FailedOn)),
			LastError: s.LastError, Token: s.Token,
		}
		if s.State == Completed {
			ss.Node, ss.PartSize, ss.EncodeMs = s.Part.Node, s.Part.Size, s.Part.EncodeMS
		}
		js.FramesDone += ss.FramesDone
		js.Sets = append(js.Sets, ss)
	}
	names := map[string]bool{}
	for name := range c.nodes {
		names[name] = true
	}
	for name := range c.job.NodeFailures {
		names[name] = true
	}
	for _, name := range sortedKeys(names) {
		ns := &farmpb.NodeStatus{Name: name, Failures: uint32(c.job.NodeFailures[name]), Excluded: c.job.Excluded(name)}
		if ni := c.nodes[name]; ni != nil {
			ns.LastSeenUnixMs = ni.lastSeen.UnixMilli()
			ns.CpuLoad, ns.FreeCores, ns.SetsDone, ns.Breaker = ni.cpuLoad, ni.freeCores, uint32(ni.setsDone), ni.breaker
		}
		js.Nodes = append(js.Nodes, ns)
	}
	return js
}

func (f *farmService) WatchEvents(req *farmpb.WatchEventsRequest, stream farmpb.FarmService_WatchEventsServer) error {
	c := f.c
	if err := c.checkJob(req.JobId); err != nil {
		return err
	}
	ctx := stream.Context()
	// SQLite integers are signed, and no event is numbered that high.
	after := min(req.AfterSeq, math.MaxInt64)
	for {
		c.mu.Lock()
		wake := c.changed
		c.mu.Unlock()
		events, err := c.store.events(ctx, c.rec.ID, after, 500)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := stream.Send(&farmpb.Event{JobId: c.rec.ID, Seq: e.Seq, UnixMs: e.At.UnixMilli(), Kind: e.Kind,
				SetIndex: int32(e.Set), Node: e.Node, Detail: e.Detail}); err != nil {
				return err
			}
			after = e.Seq
		}
		if len(events) == 500 {
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}

func (f *farmService) DownloadVideo(req *farmpb.DownloadVideoRequest, stream farmpb.FarmService_DownloadVideoServer) error {
	c := f.c
	if err := c.checkJob(req.JobId); err != nil {
		return err
	}
	c.mu.Lock()
	state, reason := c.job.State, c.job.Reason
	name, size, sum := c.rec.FinalName, c.rec.FinalSize, c.rec.FinalSHA
	b := c.pending()
	c.mu.Unlock()
	if err := c.await(stream.Context(), b); err != nil {
		return err
	}
	if state == JobFailed {
		return fmt.Errorf("%w: job %s: %s", ErrJobFailed, c.rec.ID, reason)
	}
	if state != JobDone || name == "" {
		return fmt.Errorf("%w: job %s is %s", ErrNotReady, c.rec.ID, state)
	}
	fh, err := os.Open(filepath.Join(c.jobDir, name))
	if err != nil {
		return fmt.Errorf("opening the final video: %w", err)
	}
	defer fh.Close()
	first := &farmpb.VideoChunk{Size: size, Sha256: sum, Name: name}
	buf := make([]byte, chunkSize)
	for {
		k, err := io.ReadFull(fh, buf)
		if k > 0 {
			first.Data = buf[:k]
			if err := stream.Send(first); err != nil {
				return err
			}
			first = &farmpb.VideoChunk{}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// encodeSettings are the job's settings as nodes and clients see them.
func (c *Coordinator) encodeSettings() *farmpb.EncodeSettings {
	st := c.rec.Settings
	return &farmpb.EncodeSettings{Codec: st.Codec, FpsNum: st.FPSNum, FpsDen: st.FPSDen, Crf: int32(st.CRF),
		Preset: st.Preset, PixFmt: st.PixFmt, PartExt: st.PartExt, FrameExt: st.FrameExt,
		Width: uint32(st.Width), Height: uint32(st.Height), PadEven: st.PadEven,
		ScaleWidth: uint32(st.ScaleW), ScaleHeight: uint32(st.ScaleH), FilterThreads: uint32(st.FilterThreads)}
}
