package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

func runNodes(ctx context.Context, e *env, args []string) error {
	return farmCommand(ctx, e, args, "nodes", "[flags]", 0,
		`Lists the nodes the farm knows, by name: when each was last heard from,
its load, the sets it rendered, its failures in every job and the jobs that
give it no more sets (framefarm forgive clears them), its ambassador's
circuit breaker and link round trip, and any problem of its own machine
that keeps it from asking for work.`, nil,
		func(ctx context.Context, c *farmClient, _ []string) error {
			var nodes []*farmpb.NodeStatus
			var total uint32
			after := ""
			for {
				resp, err := c.ListNodes(ctx, &farmpb.ListNodesRequest{After: after})
				if err != nil {
					return err
				}
				nodes, total = append(nodes, resp.Nodes...), resp.Total
				if len(resp.Nodes) == 0 || len(nodes) >= int(total) {
					break
				}
				after = resp.Nodes[len(resp.Nodes)-1].Name
			}
			renderNodes(e.stdout, nodes, time.Now())
			return nil
		})
}

func renderNodes(w io.Writer, nodes []*farmpb.NodeStatus, now time.Time) {
	if len(nodes) == 0 {
		fmt.Fprintln(w, "no nodes yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSEEN\tLOAD\tSLOTS\tWORKING ON\tDONE\tFAILED\tEXCLUDED FROM\tBREAKER\tRTT\tPROBLEM")
	for _, n := range nodes {
		seen := "-"
		if n.LastSeenUnixMs > 0 {
			seen = now.Sub(time.UnixMilli(n.LastSeenUnixMs)).Round(time.Second).String() + " ago"
		}
		excluded, working := orDash(strings.Join(n.ExcludedFrom, ",")), orDash(strings.Join(n.WorkingOn, ","))
		slots := "-"
		if n.Slots > 0 {
			slots = strconv.Itoa(int(n.Slots))
		}
		breaker := orDash(n.GetBreaker().GetState())
		rtt := "-"
		if n.LinkRttMs > 0 {
			rtt = fmt.Sprintf("%dms", n.LinkRttMs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f%%\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", n.Name, seen, n.CpuLoad*100, slots, working,
			n.SetsDone, n.Failures, excluded, breaker, rtt, orDash(n.Problem))
	}
	tw.Flush()
}

func runForgive(ctx context.Context, e *env, args []string) error {
	var jobID *string
	return farmCommand(ctx, e, args, "forgive", "NODE [flags]", 1,
		`Forgets a node's failures, in one job (--job) or in every job: the node is
no longer excluded, and the sets it failed may go to it again. For when the
node is fixed (its disk, its ffmpeg). A failed job stays failed: framefarm
reset puts it back in the queue, keeping its rendered sets.`,
		func(f *cmdFlags) { jobID = f.String("job", "", "forgive the node in this `JOB` only") },
		func(ctx context.Context, c *farmClient, pos []string) error {
			resp, err := c.ForgiveNode(ctx, &farmpb.ForgiveNodeRequest{Node: pos[0], JobId: *jobID})
			if err != nil {
				return err
			}
			if resp.Failures == 0 {
				fmt.Fprintf(e.stdout, "node %s has no failures to forget\n", pos[0])
				return nil
			}
			fmt.Fprintf(e.stdout, "node %s forgiven: %d failures forgotten in %d jobs\n", pos[0], resp.Failures, resp.Jobs)
			return nil
		})
}
