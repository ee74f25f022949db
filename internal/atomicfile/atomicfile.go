// Package atomicfile writes a file whole or not at all: into a temp file
// beside it (named .tmp-*, which the coordinator sweeps up after a crash),
// synced, then renamed over the name, and the folder synced so that the
// rename survives a crash too.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
)

// Write creates path with mode perm from what fn writes. If fn or any step
// fails, path is untouched and the temp file is gone.
func Write(path string, perm fs.FileMode, fn func(f *os.File) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = fn(f); err != nil {
		return err
	}
	// CreateTemp makes the file private.
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes the names in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
