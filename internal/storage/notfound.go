package storage

import "gocloud.dev/gcerrors"

// IsNotFound reports whether err says the object (or its bucket) is not
// there, whichever driver answered.
func IsNotFound(err error) bool {
	return err != nil && gcerrors.Code(err) == gcerrors.NotFound
}
