package reason

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestReasonsDecideWhatCodesCannot(t *testing.T) {
	refused := Error(codes.InvalidArgument, PartRefused, "set 3: part has 9 frames, the set has 10")
	malformed := Error(codes.InvalidArgument, BadRequest, "a node name of 1 to 200 characters is required")
	lost := Error(codes.FailedPrecondition, LeaseLost, "stale fencing token")
	notDone := Error(codes.FailedPrecondition, NotPossible, "job x is running")
	for _, tc := range []struct {
		err                  error
		reason               string
		leaseLost, partRefus bool
	}{
		{refused, PartRefused, false, true},
		{malformed, BadRequest, false, false},
		{lost, LeaseLost, true, false},
		{notDone, NotPossible, false, false},
		{Error(codes.NotFound, NotFound, "no job"), NotFound, true, false},
		// A coordinator without reasons: the codes, as before.
		{status.Error(codes.FailedPrecondition, "stale"), "", true, false},
		{status.Error(codes.InvalidArgument, "bad part"), "", false, true},
		{fmt.Errorf("wrapped: %w", lost), LeaseLost, true, false},
		{context.Canceled, "", false, false},
	} {
		if got := Of(tc.err); got != tc.reason {
			t.Errorf("Of(%v) = %q, want %q", tc.err, got, tc.reason)
		}
		if got := IsLeaseLost(tc.err); got != tc.leaseLost {
			t.Errorf("IsLeaseLost(%v) = %v", tc.err, got)
		}
		if got := IsPartRefused(tc.err); got != tc.partRefus {
			t.Errorf("IsPartRefused(%v) = %v", tc.err, got)
		}
	}
	if !IsLinkFailure(status.Error(codes.Unavailable, "x")) || IsLinkFailure(lost) || IsLinkFailure(nil) {
		t.Error("IsLinkFailure")
	}
	if status.Convert(refused).Message() != "set 3: part has 9 frames, the set has 10" {
		t.Error("the message is kept as given")
	}
}
