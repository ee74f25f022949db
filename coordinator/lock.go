package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// lockName is the file whose lock says which process owns a data folder.
const lockName = "coordinator.lock"

// lockData takes dir for this process, before anything in it is touched: a
// second coordinator on the same folder would remove the first one's temp
// files and write the same database. The lock goes with the process (the
// kernel drops it when the file is closed or the process dies), so a
// coordinator killed with -9 leaves nothing to clean up by hand.
func lockData(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--data %s cannot be created (%w): choose another folder", dir, err)
	}
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b, _ := os.ReadFile(path)
			return nil, fmt.Errorf("--data %s is in use by another coordinator (pid %s): stop that one first, or give this one another --data folder",
				dir, strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("locking --data %s: %w", dir, err)
	}
	// Who holds it, for the message above; the lock is what counts.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	}
	return f, nil
}

// close releases the data folder: the store, then the lock.
func (c *Coordinator) close() {
	c.buckets.close()
	if c.store != nil {
		c.store.Close()
	}
	if c.lock != nil {
		c.lock.Close()
	}
}
