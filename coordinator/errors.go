package coordinator

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/reason"
)

// Domain errors. They are mapped to gRPC status codes in one place, toStatus.
var (
	ErrInvalid      = errors.New("invalid request")
	ErrNotReady     = errors.New("final video not ready")
	ErrBadPart      = errors.New("part refused")
	ErrFrameChanged = errors.New("frame changed")
	// errPartNotInBucket: the part a node put in the --storage bucket is
	// not there as the node announced it (missing, fewer or other bytes;
	// or this coordinator, restarted, has no --storage or another one): the
	// bucket's fault, the transfer's or the set-up's, which the node cannot
	// help and a new render would not cure. The node uploads the part it
	// holds under the same lease, checked as any upload; the set is neither
	// failed on the node nor rendered again.
	errPartNotInBucket = errors.New("the part is not in the bucket as announced")
	// errRefused: a job's frames or settings cannot be rendered; the
	// message names the file or flag and what to do.
	errRefused = errors.New("job refused")
	// errOwnFault: the coordinator's own failure (its disk, its files),
	// never the node's or the set's: answered Unavailable (ResourceExhausted
	// when space or descriptors ran out), so that the node tries again.
	errOwnFault = errors.New("the coordinator could not do it")
	// ErrStopped: a commit failed, so the coordinator takes no more changes
	// and stops; started again, it resumes from its data folder.
	ErrStopped = errors.New("coordinator stopping: its state could not be saved")
)

// frameChanged is ErrFrameChanged in words of its own, for a cause that
// "frame changed" would misname (the frames' bucket deleted): the job
// fails the same way.
func frameChanged(msg string) error { return &frameChangedError{msg} }

type frameChangedError struct{ msg string }

func (e *frameChangedError) Error() string { return e.msg }
func (e *frameChangedError) Unwrap() error { return ErrFrameChanged }

// answer is a call's error as answered, after noting a failure of the
// coordinator's own for status.
func (c *Coordinator) answer(err error) error {
	if errors.Is(err, errOwnFault) {
		c.noteOwnFault(err)
	}
	return toStatus(err)
}

// toStatus maps an error to its gRPC status, with a reason where the code
// alone is ambiguous (see internal/reason).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, why := codes.Internal, ""
	switch {
	case errors.Is(err, job.ErrStaleToken):
		code, why = codes.FailedPrecondition, reason.LeaseLost
	case errors.Is(err, job.ErrNotFound):
		code, why = codes.NotFound, reason.NotFound
	case errors.Is(err, errPartNotInBucket):
		code, why = codes.FailedPrecondition, reason.PartNotInBucket
	case errors.Is(err, ErrBadPart):
		code, why = codes.InvalidArgument, reason.PartRefused
	case errors.Is(err, errRefused):
		code, why = codes.InvalidArgument, reason.JobRefused
	case errors.Is(err, ErrInvalid), errors.Is(err, errTooLarge):
		code, why = codes.InvalidArgument, reason.BadRequest
	case errors.Is(err, ErrNotReady), errors.Is(err, job.ErrConflict), errors.Is(err, job.ErrJobFailed), errors.Is(err, ErrFrameChanged), errors.Is(err, job.ErrJobFinished), errors.Is(err, job.ErrNodeExcluded):
		code, why = codes.FailedPrecondition, reason.NotPossible
	case errors.Is(err, ErrStopped):
		code, why = codes.Unavailable, reason.Stopping
	case errors.Is(err, errTooManyNodes):
		code = codes.ResourceExhausted
	case errors.Is(err, errOwnFault) && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || ownResource(err)):
		code, why = codes.ResourceExhausted, reason.CoordinatorFault
	case errors.Is(err, errOwnFault):
		code, why = codes.Unavailable, reason.CoordinatorFault
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	if why == "" {
		return status.Error(code, err.Error())
	}
	return reason.Error(code, why, err.Error())
}

// ownResource reports whether err is the coordinator's process or machine
// running out of what every file takes (descriptors, kernel memory): a
// failure of its own whatever the file, never the file's or a node's.
func ownResource(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM)
}
