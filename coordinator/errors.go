package coordinator

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain errors. They are mapped to gRPC status codes in one place, toStatus.
var (
	ErrStaleToken   = errors.New("stale fencing token")
	ErrNotFound     = errors.New("not found")
	ErrInvalid      = errors.New("invalid request")
	ErrNoWork       = errors.New("no set available now")
	ErrJobFinished  = errors.New("job has no more work")
	ErrJobFailed    = errors.New("job failed")
	ErrNodeExcluded = errors.New("node excluded from job")
	ErrNotReady     = errors.New("final video not ready")
	ErrBadPart      = errors.New("part refused")
	ErrFrameChanged = errors.New("frame changed")
	// errRefused: a job's frames or settings cannot be rendered; the
	// message names the file or flag and what to do.
	errRefused = errors.New("job refused")
	// ErrConflict: the job is not in a state the request can apply to.
	ErrConflict = errors.New("not possible now")
	// ErrStopped: a commit failed, so the coordinator takes no more changes
	// and stops; started again, it resumes from its data folder.
	ErrStopped = errors.New("coordinator stopping: its state could not be saved")
)

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrStaleToken):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrBadPart), errors.Is(err, errRefused):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNotReady), errors.Is(err, ErrConflict), errors.Is(err, ErrJobFailed), errors.Is(err, ErrFrameChanged), errors.Is(err, ErrJobFinished), errors.Is(err, ErrNodeExcluded):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrStopped):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
