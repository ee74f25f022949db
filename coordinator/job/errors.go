package job

import "errors"

// The state machine's refusals. The coordinator maps them, with its own,
// to gRPC status codes in one place.
var (
	ErrStaleToken   = errors.New("stale fencing token")
	ErrNotFound     = errors.New("not found")
	ErrNoWork       = errors.New("no set available now")
	ErrJobFinished  = errors.New("job has no more work")
	ErrJobFailed    = errors.New("job failed")
	ErrNodeExcluded = errors.New("node excluded from job")
	// ErrConflict: the job is not in a state the request can apply to.
	ErrConflict = errors.New("not possible now")
)
