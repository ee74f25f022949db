package node

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/framefarm/framefarm/internal/ffmpeg"
	farmpb "github.com/framefarm/framefarm/proto"
)

// Where a node takes a set's frames from (Config.FramesFrom).
const (
	// FramesAuto reads the frames straight from the coordinator's frames
	// folder when this machine sees the same files there (the same host,
	// or a shared mount, as render farms such as Flamenco and OpenCue
	// expect), and streams them otherwise.
	FramesAuto = "auto"
	// FramesStream always streams the frames from the coordinator.
	FramesStream = "stream"
)

// linkShared names the set's frames in dir as the contiguous sequence
// ffmpeg reads (see receiveFrames), as links to the coordinator's own
// files. It fails, having linked nothing that stays, unless every frame
// is there with the size and modification time the coordinator recorded
// when the job started: the same check the coordinator makes before it
// streams a frame, so a changed frame is never read from here.
func linkShared(dir string, a *farmpb.Assignment) error {
	if err := sharedUnchanged(a); err != nil {
		return err
	}
	ext := a.Settings.FrameExt
	for pos, f := range a.Frames {
		if err := os.Symlink(filepath.Join(a.FramesDir, f.Name), filepath.Join(dir, ffmpeg.SequenceName(pos, ext))); err != nil {
			removeSequence(dir, a, pos)
			return err
		}
	}
	return nil
}

// sharedUnchanged reports why the set's frames cannot be read from the
// coordinator's folder here, or nil when they can.
func sharedUnchanged(a *farmpb.Assignment) error {
	if a.FramesDir == "" || !filepath.IsAbs(a.FramesDir) {
		return fmt.Errorf("the coordinator gave no absolute frames folder (%q)", a.FramesDir)
	}
	for _, f := range a.Frames {
		if !filepath.IsLocal(f.Name) || f.MtimeNs == 0 {
			return fmt.Errorf("frame %d (%q) has no name in the folder or no modification time", f.Number, f.Name)
		}
		fi, err := os.Stat(filepath.Join(a.FramesDir, f.Name))
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || fi.Size() != f.Size || fi.ModTime().UnixNano() != f.MtimeNs {
			return fmt.Errorf("frame %d (%s) here is not the coordinator's: %d bytes modified at %d ns, against %d bytes at %d ns",
				f.Number, f.Name, fi.Size(), fi.ModTime().UnixNano(), f.Size, f.MtimeNs)
		}
		// The inode, not the device: a shared mount numbers devices its own
		// way. Another inode is another file under the frame's name.
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && f.Inode != 0 && st.Ino != f.Inode {
			return fmt.Errorf("frame %d (%s) here is another file than the coordinator's (inode %d, not %d)", f.Number, f.Name, st.Ino, f.Inode)
		}
	}
	return nil
}

// removeSequence removes the first n sequence files of the set from dir.
func removeSequence(dir string, a *farmpb.Assignment, n int) {
	for pos := range n {
		os.Remove(filepath.Join(dir, ffmpeg.SequenceName(pos, a.Settings.FrameExt)))
	}
}
