package coordinator

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/chunk"
	"github.com/framefarm/framefarm/internal/text"
	farmpb "github.com/framefarm/framefarm/proto"
)

type farmService struct {
	farmpb.UnimplementedFarmServiceServer
	c *Coordinator
}

func (f *farmService) GetJob(ctx context.Context, req *farmpb.GetJobRequest) (*farmpb.JobStatus, error) {
	return f.c.Job(ctx, req.JobId)
}

func (c *Coordinator) statusLocked(jr *jobRun) *farmpb.JobStatus {
	js := &farmpb.JobStatus{
		JobId: jr.rec.ID, Name: jr.rec.Name, State: string(jr.job.State), Reason: jr.job.Reason, Priority: int32(jr.job.Priority),
		FramesDir: jr.rec.FramesDir, TotalFrames: uint32(len(jr.frames)), OutPath: jr.rec.OutPath, LastEventSeq: jr.job.LastSeq,
		FinalSize: jr.rec.FinalSize, FinalSha256: jr.rec.FinalSHA, Settings: jr.encodeSettings(),
		SubmittedUnixMs: jr.rec.Created.UnixMilli(), FinishedUnixMs: unixMilli(jr.rec.Finished), OutCopy: jr.outCopy, FinalStored: jr.stored,
	}
	budget := setErrorBudget(len(jr.job.Sets))
	for _, s := range jr.job.Sets {
		ss := &farmpb.SetStatus{
			Index: uint32(s.Index), State: string(s.State), FrameCount: uint32(s.Count),
			FirstFrame: jr.frames[s.First].Number, LastFrame: jr.frames[s.First+s.Count-1].Number,
			Node: s.Node, FramesDone: uint32(s.FramesDone), Failures: uint32(len(s.FailedOn)),
			LastError: text.Truncate(s.LastError, budget), Token: s.Token,
		}
		if s.State == job.Completed {
			ss.Node, ss.PartSize, ss.EncodeMs = s.Part.Node, s.Part.Size, s.Part.EncodeMS
		}
		js.FramesDone += ss.FramesDone
		js.Sets = append(js.Sets, ss)
	}
	var total int
	js.Nodes, total = c.nodeRows(jr)
	js.NodesTotal = uint32(total)
	if f := c.lastOwnFault; !f.at.IsZero() {
		js.OwnFault, js.OwnFaultUnixMs = f.msg, f.at.UnixMilli()
	}
	return js
}

// nodeStatusLocked is what the farm knows of a node, without any job's
// counts of it. Call it under c.mu.
func (c *Coordinator) nodeStatusLocked(name string) *farmpb.NodeStatus {
	ns := &farmpb.NodeStatus{Name: name}
	if ni := c.nodes[name]; ni != nil {
		ns.LastSeenUnixMs = ni.lastSeen.UnixMilli()
		ns.CpuLoad, ns.FreeCores, ns.SetsDone, ns.Breaker = ni.cpuLoad, ni.freeCores, uint32(ni.setsDone), ni.breaker
		ns.Problem, ns.LinkRttMs, ns.Slots = ni.problem, uint32(ni.rtt.Milliseconds()), uint32(ni.slots)
	}
	return ns
}

// farmNodeLocked is a node as the whole farm sees it: what
// nodeStatusLocked says, its failures in every job and the jobs that
// exclude it, and the sets it holds (working, from workingLocked).
func (c *Coordinator) farmNodeLocked(name string, working map[string][]string) *farmpb.NodeStatus {
	ns := c.nodeStatusLocked(name)
	for _, jr := range c.queue {
		ns.Failures += uint32(jr.job.NodeFailures[name])
		if jr.job.Excluded(name) {
			ns.ExcludedFrom = append(ns.ExcludedFrom, jr.rec.ID)
		}
	}
	ns.WorkingOn = working[name]
	return ns
}

// workingLocked maps each node to the sets it holds, as JOB/INDEX.
func (c *Coordinator) workingLocked() map[string][]string {
	w := map[string][]string{}
	for _, jr := range c.queue {
		for _, s := range jr.job.Sets {
			if s.State == job.Assigned {
				w[s.Node] = append(w[s.Node], fmt.Sprintf("%s/%d", jr.rec.ID, s.Index))
			}
		}
	}
	return w
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// summaryLocked is a job's line in the farm's list.
func summaryLocked(jr *jobRun) *farmpb.JobSummary {
	js := &farmpb.JobSummary{
		JobId: jr.rec.ID, Name: jr.rec.Name, State: string(jr.job.State), Reason: jr.job.Reason, Priority: int32(jr.job.Priority),
		FramesTotal: uint32(len(jr.frames)), SetsTotal: uint32(len(jr.job.Sets)),
		SubmittedUnixMs: jr.rec.Created.UnixMilli(), FinishedUnixMs: unixMilli(jr.rec.Finished), FinalSize: jr.rec.FinalSize,
		FramesDir: jr.rec.FramesDir, OutPath: jr.rec.OutPath, Codec: jr.rec.Settings.Codec, Container: jr.rec.Settings.FinalExt,
		Color: jr.rec.Settings.colour().String(),
	}
	for _, s := range jr.job.Sets {
		js.FramesDone += uint32(s.FramesDone)
		if s.State == job.Completed {
			js.SetsDone++
		}
	}
	return js
}

func (f *farmService) ListJobs(ctx context.Context, _ *farmpb.ListJobsRequest) (*farmpb.ListJobsResponse, error) {
	return &farmpb.ListJobsResponse{Jobs: f.c.Snapshot(ctx).Jobs}, nil
}

// Snapshot is the farm at one moment, durable, for code that reads it
// (lists, pages, metrics) instead of reaching into the lock.
type Snapshot struct {
	// Jobs in queue order: higher priority first, then the earlier
	// submitted.
	Jobs []*farmpb.JobSummary
	// Nodes are every node that called, by name, with their failures in
	// all jobs, the jobs that exclude them and the sets they hold.
	Nodes []*farmpb.NodeStatus
	// Waiting is how many requests for work wait for a set.
	Waiting int
	// LastEventSeq is the farm-wide number of the last event.
	LastEventSeq uint64
}

// Snapshot copies the farm's state under the lock, then waits until it is
// durable (as every answer does).
func (c *Coordinator) Snapshot(ctx context.Context) Snapshot {
	c.mu.Lock()
	s := Snapshot{Waiting: len(c.waiters), LastEventSeq: c.lastFSeq}
	for _, jr := range c.queue {
		s.Jobs = append(s.Jobs, summaryLocked(jr))
	}
	working := c.workingLocked()
	for _, name := range slices.Sorted(maps.Keys(c.nodes)) {
		s.Nodes = append(s.Nodes, c.farmNodeLocked(name, working))
	}
	b := c.pending()
	c.mu.Unlock()
	_ = c.await(ctx, b)
	return s
}

// summary answers a change of a job with its line, as durable.
func (c *Coordinator) summary(jr *jobRun, err error) (*farmpb.JobSummary, error) {
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return summaryLocked(jr), nil
}

func (f *farmService) SubmitJob(ctx context.Context, req *farmpb.SubmitJobRequest) (*farmpb.JobSummary, error) {
	spec := JobSpec{FramesDir: req.FramesDir, Out: req.Out, Name: req.Name, Priority: int(req.Priority), Sets: int(req.Sets),
		Codec: req.Codec, FPS: req.Fps, CRF: int(req.Crf), Preset: req.Preset, PixFmt: req.PixFmt, NoFastStart: req.NoFaststart,
		Pattern: req.Pattern, Gaps: req.Gaps, Scale: req.Scale, Audio: req.Audio,
		Color: req.Color, Range: req.ColorRange, EXRTransfer: req.ExrTransfer, Alpha: req.Alpha}
	if req.Upload != "" {
		if req.FramesDir != "" {
			return nil, fmt.Errorf("%w: give the frames folder or the upload, not both", ErrInvalid)
		}
		frames, _, err := f.c.uploadedFrames(req.Upload)
		if err != nil {
			return nil, err
		}
		if err := f.c.uploadSwept(ctx, req.Upload); err != nil {
			return nil, err
		}
		spec.FramesDir = frames
		if spec.Name == "" {
			spec.Name = req.Upload
		}
	}
	return f.c.Submit(ctx, spec)
}

func (f *farmService) CancelJob(ctx context.Context, req *farmpb.JobRequest) (*farmpb.JobSummary, error) {
	return f.c.Cancel(ctx, req.JobId)
}

func (f *farmService) ResetJob(ctx context.Context, req *farmpb.ResetJobRequest) (*farmpb.JobSummary, error) {
	return f.c.Reset(ctx, req.JobId, req.All)
}

func (f *farmService) SetPriority(ctx context.Context, req *farmpb.SetPriorityRequest) (*farmpb.JobSummary, error) {
	return f.c.SetPriority(ctx, req.JobId, int(req.Priority))
}

func (f *farmService) DeleteJob(ctx context.Context, req *farmpb.JobRequest) (*farmpb.DeleteJobResponse, error) {
	return &farmpb.DeleteJobResponse{}, f.c.Delete(ctx, req.JobId)
}

func (f *farmService) WatchEvents(req *farmpb.WatchEventsRequest, stream farmpb.FarmService_WatchEventsServer) error {
	return f.c.Events(stream.Context(), req.JobId, req.AfterSeq, stream.Send)
}

func (f *farmService) DownloadVideo(req *farmpb.DownloadVideoRequest, stream farmpb.FarmService_DownloadVideoServer) error {
	fh, name, size, sum, err := f.c.Final(stream.Context(), req.JobId)
	if err != nil {
		return err
	}
	defer fh.Close()
	first := &farmpb.VideoChunk{Size: size, Sha256: sum, Name: name}
	buf := make([]byte, chunk.Size)
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
func (jr *jobRun) encodeSettings() *farmpb.EncodeSettings {
	st := jr.rec.Settings
	return &farmpb.EncodeSettings{Codec: st.Codec, FpsNum: st.FPSNum, FpsDen: st.FPSDen, Crf: int32(st.CRF),
		Preset: st.Preset, PixFmt: st.PixFmt, PartExt: st.PartExt, FrameExt: st.FrameExt,
		Width: uint32(st.Width), Height: uint32(st.Height), PadEven: st.PadEven,
		ScaleWidth: uint32(st.ScaleW), ScaleHeight: uint32(st.ScaleH), FilterThreads: uint32(st.FilterThreads),
		Color: st.Color, ColorRange: st.Range, ExrTransfer: st.EXRTransfer, Alpha: st.Alpha}
}
