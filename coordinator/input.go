package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/framefarm/framefarm/internal/ffmpeg"
	"github.com/framefarm/framefarm/internal/frameseq"
	"github.com/framefarm/framefarm/internal/text"
)

// maxHeldFrames bounds a job's length with --gaps hold: one stray number
// (f_9999999.png among f_0001..f_0100) would otherwise hold one frame for
// millions of frames.
const maxHeldFrames = 10_000_000

// sequenceFrames is the job's frame list. With hold, every missing number
// repeats the frame before it, so the video keeps the timing of the
// numbering; otherwise the gaps (if allowed) are closed up.
func sequenceFrames(seq *frameseq.Sequence, hold bool) []frameRecord {
	out := make([]frameRecord, 0, len(seq.Frames))
	for i, f := range seq.Frames {
		if hold && i > 0 {
			prev := out[len(out)-1]
			for n := seq.Frames[i-1].Number + 1; n < f.Number; n++ {
				out = append(out, frameRecord{Number: n, Name: prev.Name, Size: prev.Size, ModTime: prev.ModTime, Dev: prev.Dev, Ino: prev.Ino, ETag: prev.ETag})
			}
		}
		out = append(out, frameRecord{Number: f.Number, Name: f.Name, Size: f.Size, ModTime: f.ModTime, Dev: f.Dev, Ino: f.Ino, ETag: f.ETag})
	}
	return out
}

// notes says, once, what the job does to the frames beyond encoding them.
func notes(s jobSettings, seq *frameseq.Sequence, gaps string) string {
	var n []string
	if s.ScaleW > 0 {
		n = append(n, fmt.Sprintf("every frame scaled to %dx%d", s.ScaleW, s.ScaleH))
	}
	if s.PadEven {
		n = append(n, fmt.Sprintf("padded from %dx%d to even dimensions for %s", s.Width, s.Height, s.PixFmt))
	}
	if ffmpeg.IsEXR(s.FrameExt) && s.Color != "" {
		n = append(n, exrNote(s))
	}
	if g := seq.Gaps(); len(g) > 0 {
		missing := int64(0)
		for _, r := range g {
			missing += r[1] - r[0] + 1
		}
		verb := "closed up"
		if gaps == "hold" {
			verb = "filled by holding the previous frame"
		}
		n = append(n, fmt.Sprintf("%d missing frame numbers %s", missing, verb))
	}
	if len(n) == 0 {
		return ""
	}
	return "; " + strings.Join(n, "; ")
}

// exrNote says what a job does to OpenEXR frames, which hold linear light.
func exrNote(s jobSettings) string {
	if s.EXRTransfer == "linear" {
		return "OpenEXR frames hold linear light: kept linear (--exr-transfer linear), and the video tagged linear"
	}
	return fmt.Sprintf("OpenEXR frames hold linear light: given the %s transfer before the conversion to %s", s.EXRTransfer, s.Color)
}

// checkOutputs refuses, before any work starts, a job whose video could not
// be written: --out in a folder we cannot write, or too little free disk
// for the parts and the final video.
func checkOutputs(out, data string, s jobSettings, frames []frameRecord) error {
	if out != "" {
		dir := filepath.Dir(out)
		if fi, err := os.Stat(out); err == nil && fi.IsDir() {
			return fmt.Errorf("--out %s is a folder: give a file name such as %s", out, filepath.Join(out, "final."+s.FinalExt))
		}
		if err := canWrite(dir); err != nil {
			return fmt.Errorf("--out %s: cannot write in %s (%w): choose another path or fix its permissions", out, dir, err)
		}
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return fmt.Errorf("--data %s cannot be created (%w): choose another folder", data, err)
	}
	if err := canWrite(data); err != nil {
		return fmt.Errorf("--data %s: cannot write there (%w): choose another folder or fix its permissions", data, err)
	}
	need := estimateBytes(s, frames)
	if free, err := freeBytes(data); err == nil && free < need {
		return fmt.Errorf("--data %s has %s free, and this job needs about %s for its parts and final video: free some space or put --data on a larger disk",
			data, text.Size(int64(free)), text.Size(int64(need)))
	}
	return nil
}

// estimateBytes is a generous guess of the disk the parts and the final
// video take: twice the video (the parts, then the joined copy), where a
// lossless or intra codec keeps about the raw 4:2:0 size and a lossy one a
// tenth of it.
func estimateBytes(s jobSettings, frames []frameRecord) uint64 {
	raw := uint64(s.outWidth()) * uint64(s.outHeight()) * 3 / 2 * uint64(len(frames))
	switch s.Codec {
	case "ffv1", "prores_ks":
	default:
		raw /= 10
	}
	return 2 * raw
}

func canWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".tmp-write-check-*")
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// checkUTF8 refuses paths and frame names that are not valid UTF-8 (names
// from an old Latin-1 disk, say): they travel to nodes and clients in
// protobuf strings, which must be UTF-8, so such a job could never be
// handed out, nor its status shown.
func checkUTF8(dir, out string, frames []frameRecord) error {
	if !utf8.ValidString(dir) {
		return fmt.Errorf("--frames %q: the folder's path is not valid UTF-8: rename it (convmv -f latin1 -t utf8 can), or copy the frames to a folder whose path is", dir)
	}
	if out != "" {
		if abs, err := filepath.Abs(out); err == nil && !utf8.ValidString(abs) {
			return fmt.Errorf("--out %q: the path is not valid UTF-8: choose another path", abs)
		}
	}
	var bad []string
	n := 0
	for _, f := range frames {
		if !utf8.ValidString(f.Name) {
			if n++; len(bad) < 10 && (len(bad) == 0 || bad[len(bad)-1] != f.Name) {
				bad = append(bad, fmt.Sprintf("%q (frame %d)", f.Name, f.Number))
			}
		}
	}
	if n > 0 {
		return fmt.Errorf("frames folder %q: %d frame file names are not valid UTF-8, which the farm cannot send to its nodes: %s; rename them (convmv -f latin1 -t utf8 --notest can)",
			dir, n, strings.Join(bad, ", "))
	}
	return nil
}

// openFrame opens a frame of a job for reading, only if it is still the
// file the scan found. Names come from the scan, never from a request. The
// open does not block (a FIFO swapped in under the frame's name would hold
// the call, and the set, forever), and the open file itself is checked: a
// regular file, with the device and inode recorded (a link to a file
// outside the folder, even one given the frame's size and time, is another
// file), and the size and time.
func openFrame(dir string, f frameRecord) (*os.File, error) {
	fh, err := os.OpenFile(filepath.Join(dir, f.Name), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if ownResource(err) {
		return nil, fmt.Errorf("%w: opening frame %d (%s): %w", errOwnFault, f.Number, f.Name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: frame %d (%s) can no longer be read (%v): restore it, then reset the job (framefarm reset)",
			ErrFrameChanged, f.Number, f.Name, err)
	}
	fi, err := fh.Stat()
	var why string
	switch {
	case err != nil:
		why = err.Error()
	case !fi.Mode().IsRegular():
		why = "it is now " + fileKind(fi.Mode()) + ", not the image file"
	case f.Ino != 0 && !sameFile(fi, f):
		why = "it is now another file (replaced, or a link to another file)"
	case fi.Size() != f.Size || fi.ModTime().UnixNano() != f.ModTime.UnixNano():
		why = "its size or modification time differs"
	default:
		return fh, nil
	}
	fh.Close()
	return nil, fmt.Errorf("%w: frame %d (%s) changed since the job started (%s): restore it, then reset the job (framefarm reset)",
		ErrFrameChanged, f.Number, f.Name, why)
}

func sameFile(fi os.FileInfo, f frameRecord) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || (uint64(st.Dev) == f.Dev && st.Ino == f.Ino)
}

// fileKind names what a file that is not a regular one is.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&os.ModeDevice != 0:
		return "a device"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a folder"
	}
	return "not a regular file"
}

// reserveBytes is the space the coordinator keeps free in --data beyond a
// part it takes: room for its database to commit, and for the join's temp
// files to start.
const reserveBytes = 32 << 20
