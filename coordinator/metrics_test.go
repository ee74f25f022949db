package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/framefarm/framefarm/coordinator/job"
	farmpb "github.com/framefarm/framefarm/proto"
)

// gathered is the value of the counter or gauge name{labels} in c's
// registry ("k=v" pairs), and whether there is one.
func gathered(t *testing.T, c *Coordinator, name string, labels ...string) (float64, bool) {
	t.Helper()
	fams, err := c.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			if hasLabels(m, labels) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		found := false
		for _, l := range m.Label {
			found = found || (l.GetName() == k && l.GetValue() == v)
		}
		if !found {
			return false
		}
	}
	return true
}

func wantGathered(t *testing.T, c *Coordinator, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := gathered(t, c, name, labels...)
	if !ok || got != want {
		t.Errorf("%s{%s} = %v (present: %v), want %v", name, strings.Join(labels, ","), got, ok, want)
	}
}

// TestMetricsFollowTheFarm: under a fake clock, the gauges read the
// farm's state as it changes and each expired lease is counted under the
// rule that took it back.
func TestMetricsFollowTheFarm(t *testing.T) {
	c, _ := newCommitCoordinator(t)
	now := t0
	c.cfg.Now = func() time.Time { return now }
	c.cfg.HeartbeatTimeout, c.cfg.Lease = 30*time.Second, 40*time.Second
	ctx := context.Background()
	wantGathered(t, c, 4, "framefarm_queue_depth")
	wantGathered(t, c, 4, "framefarm_job_sets", "job_id=job1", "state=A")
	wantGathered(t, c, 1, "framefarm_jobs", "state=running")

	var silent, stuck job.Set
	if err := c.change(ctx, grantChange(c, "silent", &silent)); err != nil {
		t.Fatal(err)
	}
	if err := c.change(ctx, grantChange(c, "stuck", &stuck)); err != nil {
		t.Fatal(err)
	}
	wantGathered(t, c, 2, "framefarm_queue_depth")
	wantGathered(t, c, 2, "framefarm_job_sets", "job_id=job1", "state=A")
	wantGathered(t, c, 2, "framefarm_job_sets", "job_id=job1", "state=B")

	// "stuck" beats without progress; "silent" says nothing. Sweeps come
	// every 10s, as they do, so no gap is taken for a pause.
	for _, at := range []time.Duration{10, 20, 30, 41} {
		now = t0.Add(at * time.Second)
		if at == 20 {
			c.mu.Lock()
			err := c.jobs["job1"].job.Beat(stuck.Index, stuck.Token, 0, 0, now)
			c.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := c.change(ctx, c.expireLeases); err != nil {
			t.Fatal(err)
		}
	}
	wantGathered(t, c, 1, "framefarm_lease_expiries_total", "reason=heartbeat")
	wantGathered(t, c, 1, "framefarm_lease_expiries_total", "reason=progress")
	wantGathered(t, c, 4, "framefarm_queue_depth")
	wantGathered(t, c, 0, "framefarm_job_sets", "job_id=job1", "state=B")

	// Commits were observed: the job's creation, two grants, one sweep
	// with both expiries.
	fams, err := c.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "framefarm_commit_batch_events" {
			if h := f.Metric[0].GetHistogram(); h.GetSampleSum() != 5 || h.GetSampleCount() != 4 {
				t.Errorf("commits: %d holding %v events, want 4 holding 5", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}

	// A node's breaker as its ambassador reported it; a state that is not
	// one of the three words has no series.
	if err := c.touchNode("silent", nodeReport{breaker: &farmpb.BreakerInfo{State: "open", Opens: 3}}); err != nil {
		t.Fatal(err)
	}
	if err := c.touchNode("stuck", nodeReport{breaker: &farmpb.BreakerInfo{State: "sideways"}}); err != nil {
		t.Fatal(err)
	}
	wantGathered(t, c, 2, "framefarm_node_breaker_state", "node=silent")
	wantGathered(t, c, 3, "framefarm_node_breaker_opens_total", "node=silent")
	if _, ok := gathered(t, c, "framefarm_node_breaker_state", "node=stuck"); ok {
		t.Error("a breaker in an unknown state has a series")
	}
	wantGathered(t, c, 2, "framefarm_nodes")
	wantGathered(t, c, 2, "framefarm_nodes_alive")
	now = now.Add(c.cfg.HeartbeatTimeout + time.Second)
	wantGathered(t, c, 0, "framefarm_nodes_alive")
}
