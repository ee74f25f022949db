// Package reason says why a call failed, the same way for every role. The
// coordinator puts a reason on its gRPC status (an errdetails.ErrorInfo)
// where the code alone is ambiguous: INVALID_ARGUMENT is both "your request
// is malformed" and "your part was refused", FAILED_PRECONDITION both "your
// lease is gone" and "the job is not done yet". Node, ambassador and CLI
// decode it here, and whether a failure is the link's rather than an
// answer.
package reason

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain names framefarm's reasons in an ErrorInfo.
const Domain = "framefarm"

// The reasons.
const (
	// LeaseLost: the set is no longer the caller's (its token is stale, its
	// job was cancelled or deleted): drop it and ask for other work.
	LeaseLost = "LEASE_LOST"
	// PartRefused: the uploaded part failed the coordinator's checks; the
	// set went back to the queue as a failure of the node.
	PartRefused = "PART_REFUSED"
	// JobRefused: a submitted job's frames or settings cannot be rendered.
	JobRefused = "JOB_REFUSED"
	// BadRequest: the request itself is malformed.
	BadRequest = "BAD_REQUEST"
	// NotFound: no such job or set.
	NotFound = "NOT_FOUND"
	// NotPossible: the job is not in a state the request applies to (not
	// done yet, failed, already finished).
	NotPossible = "NOT_POSSIBLE"
	// Stopping: the coordinator could not save its state and stops.
	Stopping = "STOPPING"
	// CoordinatorFault: the coordinator's own resources failed (its disk
	// full, its descriptors): not the caller's fault, and worth trying again.
	CoordinatorFault = "COORDINATOR_FAULT"
	// PartNotInBucket: the part announced as put in the bucket is not
	// where the coordinator looks (restarted without --storage, or with
	// another): upload its bytes instead. Nothing changed on the set.
	PartNotInBucket = "PART_NOT_IN_BUCKET"
)

// Error is a gRPC status error with code, message and reason.
func Error(code codes.Code, r, msg string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: r, Domain: Domain}); err == nil {
		st = d
	}
	return st.Err()
}

// Of returns err's reason, "" when it has none.
func Of(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == Domain {
			return ei.Reason
		}
	}
	return ""
}

// IsLeaseLost reports whether the caller must drop its set. Without a
// reason (a coordinator before reasons) the codes it answered with then.
func IsLeaseLost(err error) bool {
	if r := Of(err); r != "" {
		return r == LeaseLost || r == NotFound
	}
	c := status.Code(err)
	return c == codes.FailedPrecondition || c == codes.NotFound
}

// IsPartRefused reports whether the coordinator refused an uploaded part.
func IsPartRefused(err error) bool {
	if r := Of(err); r != "" {
		return r == PartRefused
	}
	return status.Code(err) == codes.InvalidArgument
}

// IsLinkFailure reports whether a gRPC status says the call got no answer
// (the link failed, or the peer is away or overloaded) rather than
// answering: worth trying again, and what a circuit breaker counts.
func IsLinkFailure(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}
