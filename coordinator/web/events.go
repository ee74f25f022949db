package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	farmpb "github.com/framefarm/framefarm/proto"
)

// GET /api/events streams, as Server-Sent Events:
//   - "event": each of the farm's events (or with ?job=ID that job's), as
//     the coordinator commits them (WatchEvents' stream), with the event's
//     number as the SSE id so that a reconnecting browser resumes after it;
//   - "state": what changed since the last "state" on this connection: the
//     job's line and only the sets and nodes that differ (?job=ID), or the
//     jobs and nodes of the farm that differ. The first one holds all.
// A page draws from these alone: nothing polls the whole state. The
// changes are looked for at once after events, and once a second for the
// heartbeats' progress (which makes no event).

const (
	// stateEvery is how often progress is looked for without events.
	stateEvery = time.Second
	// stateSoon is how long after an event the changes are sent: a burst of
	// events makes one message.
	stateSoon = 150 * time.Millisecond
	pingEvery = 15 * time.Second
)

type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s sse) send(kind, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	if id != "" {
		if _, err := fmt.Fprintf(s.w, "id: %s\n", id); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", kind, b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// jobState is a job stream's last sent state, to send only what changed.
type jobState struct {
	sets  map[uint32]*farmpb.SetStatus
	nodes map[string]*farmpb.NodeStatus
	job   *farmpb.JobStatus
}

// farmState is a farm stream's last sent state.
type farmState struct {
	jobs    map[string]*farmpb.JobSummary
	nodes   map[string]*farmpb.NodeStatus
	order   []string
	waiting int
	// sent: the first message, sent even when the farm is empty.
	sent bool
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	id := q.Get("job")
	tail, _ := strconv.ParseUint(q.Get("tail"), 10, 64)
	var after uint64
	resume := r.Header.Get("Last-Event-ID")
	if resume != "" {
		after, _ = strconv.ParseUint(resume, 10, 64)
	}
	// Found before the stream starts, so that a wrong id is a plain 404.
	var last uint64
	if id != "" {
		js, err := s.c.Job(ctx, id)
		if err != nil {
			s.fail(w, err)
			return
		}
		last = js.LastEventSeq
	} else {
		last = s.c.Snapshot(ctx).LastEventSeq
	}
	if resume == "" {
		after = last - min(last, tail)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	out := sse{w: w, rc: http.NewResponseController(w)}

	evc := make(chan *farmpb.Event, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- s.c.Events(ctx, id, after, func(e *farmpb.Event) error {
			select {
			case evc <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()

	js0 := &jobState{sets: map[uint32]*farmpb.SetStatus{}, nodes: map[string]*farmpb.NodeStatus{}}
	fs0 := &farmState{jobs: map[string]*farmpb.JobSummary{}, nodes: map[string]*farmpb.NodeStatus{}}
	sendState := func() (bool, error) {
		if id != "" {
			return s.jobDiff(r, out, id, js0)
		}
		return true, s.farmDiff(r, out, fs0)
	}
	if ok, err := sendState(); !ok || err != nil {
		return
	}
	tick := time.NewTicker(stateEvery)
	defer tick.Stop()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	var soon <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-errc:
			if err != nil {
				_ = out.send("failed", "", apiError{Error: err.Error()})
			}
			return
		case e := <-evc:
			seq := e.Seq
			if id == "" {
				seq = e.FarmSeq
			}
			if out.send("event", strconv.FormatUint(seq, 10), marshal(e)) != nil {
				return
			}
			if soon == nil {
				soon = time.After(stateSoon)
			}
		case <-soon:
			soon = nil
			if ok, err := sendState(); !ok || err != nil {
				return
			}
		case <-tick.C:
			if ok, err := sendState(); !ok || err != nil {
				return
			}
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || out.rc.Flush() != nil {
				return
			}
		}
	}
}

// jobDiff sends what changed of job id; false once the job is gone.
func (s *Server) jobDiff(r *http.Request, out sse, id string, st *jobState) (bool, error) {
	js, err := s.c.Job(r.Context(), id)
	if err != nil {
		return false, out.send("gone", "", apiError{Error: err.Error()})
	}
	msg := struct {
		Job   json.RawMessage   `json:"job,omitempty"`
		Sets  []json.RawMessage `json:"sets"`
		Nodes []json.RawMessage `json:"nodes"`
	}{}
	for _, ss := range js.Sets {
		if old := st.sets[ss.Index]; old == nil || !proto.Equal(old, ss) {
			msg.Sets = append(msg.Sets, marshal(ss))
			st.sets[ss.Index] = ss
		}
	}
	for _, ns := range js.Nodes {
		// A node's last-seen moves at every heartbeat; it is shown to the
		// second.
		if old := st.nodes[ns.Name]; old == nil || !proto.Equal(old, ns) {
			msg.Nodes = append(msg.Nodes, marshal(ns))
			st.nodes[ns.Name] = ns
		}
	}
	js.Sets, js.Nodes = nil, nil
	if st.job == nil || !proto.Equal(st.job, js) {
		msg.Job = marshal(js)
		st.job = js
	}
	if msg.Job == nil && msg.Sets == nil && msg.Nodes == nil {
		return true, nil
	}
	return true, out.send("state", "", msg)
}

// farmDiff sends what changed of the farm's jobs and nodes.
func (s *Server) farmDiff(r *http.Request, out sse, st *farmState) error {
	snap := s.c.Snapshot(r.Context())
	msg := struct {
		Jobs    []json.RawMessage `json:"jobs"`
		Removed []string          `json:"removed"`
		Order   []string          `json:"order"`
		Nodes   []json.RawMessage `json:"nodes"`
		Waiting *int              `json:"waiting,omitempty"`
	}{}
	order := make([]string, len(snap.Jobs))
	seen := map[string]bool{}
	for i, j := range snap.Jobs {
		order[i] = j.JobId
		seen[j.JobId] = true
		if old := st.jobs[j.JobId]; old == nil || !proto.Equal(old, j) {
			msg.Jobs = append(msg.Jobs, marshal(j))
			st.jobs[j.JobId] = j
		}
	}
	for id := range st.jobs {
		if !seen[id] {
			msg.Removed = append(msg.Removed, id)
			delete(st.jobs, id)
		}
	}
	if !st.sent || !slices.Equal(order, st.order) {
		msg.Order, st.order = order, order
	}
	for _, n := range snap.Nodes {
		if old := st.nodes[n.Name]; old == nil || !proto.Equal(old, n) {
			msg.Nodes = append(msg.Nodes, marshal(n))
			st.nodes[n.Name] = n
		}
	}
	if snap.Waiting != st.waiting || !st.sent {
		w := snap.Waiting
		msg.Waiting, st.waiting = &w, w
	}
	if st.sent && msg.Jobs == nil && msg.Removed == nil && msg.Order == nil && msg.Nodes == nil && msg.Waiting == nil {
		return nil
	}
	st.sent = true
	return out.send("state", "", msg)
}
