package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/coordinator/job"
	farmpb "github.com/framefarm/framefarm/proto"
)

// A deleted job leaves one event, job_deleted, so that the farm's stream
// says what became of it and a restarted farm does not number new events
// as ones a watcher has already seen.
func TestDeletedJobKeepsItsPlaceInTheStream(t *testing.T) {
	ctx := context.Background()
	c := farmFixture(t)
	addTestJob(t, c, "gone", 0, 2, 0)
	addTestJob(t, c, "kept", 0, 2, 1)
	if _, err := c.cancel(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := c.deleteJob(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if c.jobs["gone"] != nil {
		t.Fatal("the deleted job is still in the farm")
	}
	last := c.lastFSeq
	evs, err := c.store.events(ctx, "", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []job.EventKind
	for _, e := range evs {
		if e.JobID == "gone" {
			kinds = append(kinds, e.Kind)
		}
	}
	if len(kinds) != 1 || kinds[0] != job.EvJobDeleted || evs[len(evs)-1].FSeq != last {
		t.Fatalf("the deleted job's events: %v (last farm event %d of %d)", kinds, evs[len(evs)-1].FSeq, last)
	}
	runs, lastFSeq, err := c.sqlite().loadJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].rec.ID != "kept" || lastFSeq != last {
		t.Fatalf("after a restart: %d jobs, last event %d; want the kept one, %d", len(runs), lastFSeq, last)
	}
}

// A set whose frame list would not fit in one message is refused at
// submit, with the number of sets that would do; a job that fits is not.
func TestSetTooBigForOneMessageIsRefused(t *testing.T) {
	c := farmFixture(t)
	c.cfg.HeartbeatTimeout, c.cfg.Lease = time.Minute, time.Minute
	mk := func(frames, sets int) *jobRun {
		jr := &jobRun{rec: jobRecord{ID: "big", FramesDir: "/frames"}}
		for i := range frames {
			jr.frames = append(jr.frames, frameRecord{Number: int64(i), Name: fmt.Sprintf("a_long_render_output_name_for_shot_0042_%08d.exr", i), Size: 1 << 24, ModTime: t0})
		}
		jr.job = &job.Job{ID: "big", Sets: job.Partition(frames, sets)}
		return jr
	}
	err := c.checkAssignments(mk(200_000, 2))
	if err == nil || !strings.Contains(err.Error(), "would list its 100000 frames") || !strings.Contains(err.Error(), "(--sets 5)") {
		t.Fatalf("200,000 frames in 2 sets: %v", err)
	}
	if err := c.checkAssignments(mk(200_000, 5)); err != nil {
		t.Fatalf("the advised 5 sets: %v", err)
	}
}

// The node registry is bounded: past maxNodes, a new name is refused until
// nodes have been quiet for nodeForget, and then the quiet ones no job
// counts a failure of make room. A breaker state is one of its words.
func TestNodeRegistryIsBounded(t *testing.T) {
	c := farmFixture(t)
	now := t0
	c.cfg.Now = func() time.Time { return now }
	jr := addTestJob(t, c, "j", 0, 1, 0)
	jr.job.NodeFailures["n0"] = 1
	for i := range maxNodes {
		if err := c.touchNode(fmt.Sprintf("n%d", i), nodeReport{}); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	err := c.touchNode("late", nodeReport{})
	if !errors.Is(err, errTooManyNodes) || status.Code(toStatus(err)) != codes.ResourceExhausted {
		t.Fatalf("node %d: %v, want ResourceExhausted", maxNodes+1, err)
	}
	// Known nodes still report.
	now = now.Add(time.Minute)
	if err := c.touchNode("n7", nodeReport{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(nodeForget - 30*time.Second)
	if err := c.touchNode("late", nodeReport{breaker: &farmpb.BreakerInfo{State: strings.Repeat("x", 4<<20)}}); err != nil {
		t.Fatalf("after %s: %v", nodeForget, err)
	}
	if c.nodes["n0"] == nil || c.nodes["n1"] != nil || len(c.nodes) != 3 {
		t.Errorf("after forgetting: %d nodes (n0 %v, n1 %v); want n0 (failed a set), n7 and late", len(c.nodes), c.nodes["n0"] != nil, c.nodes["n1"] != nil)
	}
	if s := c.nodes["late"].breaker.GetState(); s != "unknown" {
		t.Errorf("a 4 MiB breaker state is kept as %d bytes", len(s))
	}
}

// A full registry, every node with a long name and a problem, and sets with
// long errors: the status answer lists a page of nodes (the job's first)
// with the total, ListNodes pages through the rest, and each answer fits a
// message with room to spare.
func TestStatusOfALargeFarmFits(t *testing.T) {
	ctx := context.Background()
	c := farmFixture(t)
	jr := addTestJob(t, c, "j", 0, 400, 0)
	for _, s := range jr.job.Sets {
		s.LastError = strings.Repeat("e", 4000)
	}
	long := strings.Repeat("n", 190)
	for i := range maxNodes {
		if err := c.touchNode(fmt.Sprintf("%s%05d", long, i), nodeReport{problem: problemText(strings.Repeat("p", 4000))}); err != nil {
			t.Fatal(err)
		}
	}
	mine := fmt.Sprintf("%s%05d", long, maxNodes-1)
	jr.job.NodeFailures[mine] = 1
	f := &farmService{c: c}
	st, err := f.GetJob(ctx, &farmpb.GetJobRequest{JobId: "j"})
	if err != nil {
		t.Fatal(err)
	}
	hasMine := slices.ContainsFunc(st.Nodes, func(n *farmpb.NodeStatus) bool { return n.Name == mine })
	if len(st.Nodes) != maxNodePage || st.NodesTotal != maxNodes || !hasMine {
		t.Errorf("status lists %d of %d nodes (the job's own: %v); want %d of %d with it", len(st.Nodes), st.NodesTotal, hasMine, maxNodePage, maxNodes)
	}
	if n := proto.Size(st); n > 2<<20 {
		t.Errorf("the status answer is %d bytes", n)
	}
	seen, after := 0, ""
	for {
		resp, err := f.ListNodes(ctx, &farmpb.ListNodesRequest{After: after})
		if err != nil {
			t.Fatal(err)
		}
		if n := proto.Size(resp); n > 2<<20 {
			t.Errorf("a page of ListNodes is %d bytes", n)
		}
		if len(resp.Nodes) == 0 {
			break
		}
		seen += len(resp.Nodes)
		after = resp.Nodes[len(resp.Nodes)-1].Name
	}
	if seen != maxNodes {
		t.Errorf("ListNodes paged through %d nodes, want %d", seen, maxNodes)
	}
}
