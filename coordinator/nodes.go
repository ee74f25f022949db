package coordinator

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/framefarm/framefarm/internal/text"
	farmpb "github.com/framefarm/framefarm/proto"
)

// The operator's view of the nodes, and what the farm keeps of what they
// say: every text a node sends is cut to these lengths before it is kept,
// answered or logged.
const (
	// maxNodePage is the most nodes one answer lists (a status answer, a
	// page of ListNodes): a farm of maxNodes stays in a few pages, and each
	// answer far under the 4 MiB a client takes.
	maxNodePage = 1000
	// maxProblem bounds a node's account of what keeps it from working.
	maxProblem = 500
	// maxSetErrors bounds the failure texts of one status answer together:
	// a job of 25,000 sets with an error each must still fit a message.
	maxSetErrors = 1 << 20
)

// nodeRows lists the node statuses of names, those job holds first, at most
// maxNodePage. Call it under c.mu.
func (c *Coordinator) nodeRows(jr *jobRun) (rows []*farmpb.NodeStatus, total int) {
	names := map[string]bool{}
	for name := range c.nodes {
		names[name] = false
	}
	for name := range jr.job.NodeFailures {
		names[name] = true
	}
	for _, s := range jr.job.Sets {
		if s.Node != "" {
			names[s.Node] = true
		}
	}
	sorted := slices.Sorted(maps.Keys(names))
	// The job's own nodes first, then the others, each by name.
	slices.SortStableFunc(sorted, func(a, b string) int {
		switch {
		case names[a] == names[b]:
			return 0
		case names[a]:
			return -1
		}
		return 1
	})
	for _, name := range sorted[:min(len(sorted), maxNodePage)] {
		ns := c.nodeStatusLocked(name)
		ns.Failures, ns.Excluded = uint32(jr.job.NodeFailures[name]), jr.job.Excluded(name)
		rows = append(rows, ns)
	}
	// Back in name order, as status shows them.
	slices.SortFunc(rows, func(a, b *farmpb.NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	return rows, len(names)
}

// setErrorBudget is how long each set's last error may be in a status
// answer of n sets.
func setErrorBudget(n int) int { return max(100, min(4000, maxSetErrors/max(n, 1))) }

func (f *farmService) ListNodes(ctx context.Context, req *farmpb.ListNodesRequest) (*farmpb.ListNodesResponse, error) {
	c := f.c
	limit := int(req.Limit)
	if limit <= 0 || limit > maxNodePage {
		limit = maxNodePage
	}
	c.mu.Lock()
	names := map[string]bool{}
	for name := range c.nodes {
		names[name] = true
	}
	for _, jr := range c.queue {
		for name := range jr.job.NodeFailures {
			names[name] = true
		}
	}
	resp := &farmpb.ListNodesResponse{Total: uint32(len(names))}
	working := c.workingLocked()
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if name <= req.After {
			continue
		}
		if len(resp.Nodes) == limit {
			break
		}
		resp.Nodes = append(resp.Nodes, c.farmNodeLocked(name, working))
	}
	b := c.pending()
	c.mu.Unlock()
	_ = c.await(ctx, b)
	return resp, nil
}

func (f *farmService) ForgiveNode(ctx context.Context, req *farmpb.ForgiveNodeRequest) (*farmpb.ForgiveNodeResponse, error) {
	c := f.c
	if err := checkNode(req.Node); err != nil {
		return nil, err
	}
	resp := &farmpb.ForgiveNodeResponse{}
	err := c.change(ctx, func(x changes) error {
		jobs := c.queue
		if req.JobId != "" {
			jr, err := c.lookup(req.JobId)
			if err != nil {
				return err
			}
			jobs = []*jobRun{jr}
		}
		for _, jr := range jobs {
			dirty, ev, n := jr.job.Forgive(req.Node, c.cfg.Now())
			if n > 0 {
				resp.Jobs++
				resp.Failures += uint32(n)
				x.add(jr, dirty, ev)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if resp.Failures > 0 {
		c.log.Info("node forgiven", "node", req.Node, "jobs", resp.Jobs, "failures", resp.Failures)
	}
	return resp, nil
}

// ownFault is the coordinator's last failure of its own.
type ownFault struct {
	msg string
	at  time.Time
}

// noteOwnFault keeps err, a failure of the coordinator's own, for status.
func (c *Coordinator) noteOwnFault(err error) {
	c.mu.Lock()
	c.lastOwnFault = ownFault{msg: text.Truncate(err.Error(), 1000), at: c.cfg.Now()}
	c.mu.Unlock()
	c.metrics.ownFaults.Inc()
}

// problemText is what is kept of a node's problem.
func problemText(p string) string { return text.Truncate(p, maxProblem) }

// maxLoggedDetail bounds an event's detail in the log; the event keeps it
// whole (up to what its call allows).
const maxLoggedDetail = 500
