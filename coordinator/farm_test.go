package coordinator

import (
	"context"
	"testing"

	"github.com/framefarm/framefarm/coordinator/job"
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
