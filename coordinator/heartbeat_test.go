package coordinator

import (
	"context"
	"errors"
	"testing"

	"github.com/framefarm/framefarm/coordinator/job"
	farmpb "github.com/framefarm/framefarm/proto"
)

// TestHeartbeatAfterAccepted: a heartbeat that crosses the answer to its
// own accepted upload is answered OK (the lease ended well, it was not
// lost: "lease lost" there made the node cancel the upload's answer and
// count the set it delivered as lost); one under another token of the set
// is still refused.
func TestHeartbeatAfterAccepted(t *testing.T) {
	fx := newFzFixture(t)
	ctx := context.Background()
	ns := newNodeService(fx.c)
	if _, err := fx.call(t, ctx, 0, 0, "n0", "", 0, 0, 0, ""); err != nil {
		t.Fatal(err)
	}
	idx, tok, fd := fx.lease("n0")
	id := fx.c.only().rec.ID
	// 0x08: a real part of the set's size, sent whole.
	if what, err := fx.upload(t, ctx, ns, 0x08, "n0", id, idx, tok, fd, ""); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	beat := func(tok uint64) error {
		_, err := ns.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n0", JobId: id, SetIndex: idx, Token: tok, FramesDone: fd})
		return err
	}
	if err := beat(tok); err != nil {
		t.Fatalf("heartbeat under the token of the accepted part: %v, want OK", err)
	}
	for _, other := range []uint64{0, tok + 100} {
		if err := beat(other); !errors.Is(err, job.ErrStaleToken) {
			t.Fatalf("heartbeat under token %d of the completed set: %v, want a stale token", other, err)
		}
	}
}
