package frameseq

import (
	"fmt"
	"io"
	"io/fs"
	"time"
)

// objectProbeWorkers bounds the parallel header reads of a bucket's
// objects: each read waits on a network round trip rather than a disk, so
// more of them in flight pay off.
const objectProbeWorkers = 16

// Object is one object in a bucket listing.
type Object struct {
	Name    string // base name, without the listing's prefix
	Size    int64
	ModTime time.Time
	ETag    string
}

// ScanObjects checks a bucket listing as Scan checks a folder: the same
// naming, pattern, duplicate, gap, empty-file, header, dimension and
// pixel-format checks, refused with the same errors, naming where (the
// listing's URL, redacted) in place of the folder. Sequence.Dir is where;
// each Frame carries its object's ETag. Names that are hidden, hold a "/"
// or are not numbered images are ignored, as in a folder; a bucket has no
// links.
//
// open returns a reader of one object of the listing; only image headers are
// read from it (and, for PNG, the end), on up to 16 objects at a time.
func ScanObjects(where string, objs []Object, open func(o Object) (io.ReaderAt, error), opts Options) (*Sequence, error) {
	entries := make([]fs.DirEntry, len(objs))
	for i, o := range objs {
		entries[i] = fs.FileInfoToDirEntry(objectInfo{o})
	}
	// No entry is a link, so classify never touches the file system.
	cands, ign, err := classify(where, entries)
	if err != nil {
		return nil, fmt.Errorf("frames folder %q: %w", where, err)
	}
	return check(where, where, len(entries), cands, ign, opts, func(cands []*candidate, header bool) []probeResult {
		return probeEach(len(cands), objectProbeWorkers, func(i int, sc *scratch) probeResult {
			c := cands[i]
			// An objectInfo's Info never fails.
			info, _ := c.entry.Info()
			o := info.Sys().(Object)
			r := infoResult(info)
			r.etag = o.ETag
			if r.err != nil || !header {
				return r
			}
			ra, err := open(o)
			if err != nil {
				r.err = fmt.Errorf("cannot open it: %w", err)
				return r
			}
			r.width, r.height, r.model, r.known, r.err = readHeader(ra, r.size, sc)
			return r
		})
	})
}

// objectInfo describes a listed object as a regular file.
type objectInfo struct{ o Object }

func (i objectInfo) Name() string       { return i.o.Name }
func (i objectInfo) Size() int64        { return i.o.Size }
func (i objectInfo) Mode() fs.FileMode  { return 0o444 }
func (i objectInfo) ModTime() time.Time { return i.o.ModTime }
func (i objectInfo) IsDir() bool        { return false }
func (i objectInfo) Sys() any           { return i.o }
