package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/framefarm/framefarm/internal/frameseq"
	"github.com/framefarm/framefarm/internal/storage"
)

// This file is the coordinator's side of object storage: jobs whose frames
// are in a bucket (submit --frames s3://bucket/shots/sh010/), and the
// bucket nodes put their parts in (--storage). The coordinator hands nodes
// pre-signed URLs, so that frames and parts go between nodes and the bucket
// without passing through it; it still reads every part once to check it.

// buckets keeps one open bucket per URL: opening one reads the cloud's
// environment and files, too slow to do for every set.
type buckets struct {
	mu   sync.Mutex
	open map[string]*storage.Bucket
}

func (b *buckets) get(ctx context.Context, url string) (*storage.Bucket, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bk := b.open[url]; bk != nil {
		return bk, nil
	}
	bk, err := storage.OpenBucket(ctx, url)
	if err != nil {
		return nil, err
	}
	if b.open == nil {
		b.open = map[string]*storage.Bucket{}
	}
	b.open[url] = bk
	return bk, nil
}

func (b *buckets) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bk := range b.open {
		bk.Close()
	}
	b.open = nil
}

// inBucket reports whether a job's frames are in a bucket.
func inBucket(framesDir string) bool { return storage.IsURL(framesDir) }

// scanBucket lists and checks the frames under a bucket prefix as Scan
// checks a folder, reading only each image's header with ranged reads.
func (c *Coordinator) scanBucket(ctx context.Context, raw string, opts frameseq.Options) (*frameseq.Sequence, error) {
	bucketURL, prefix, err := storage.ParsePrefix(raw)
	if err != nil {
		return nil, fmt.Errorf("--frames: %w", err)
	}
	b, err := c.buckets.get(ctx, bucketURL)
	if err != nil {
		return nil, fmt.Errorf("--frames %s: %w", storage.Redact(raw), err)
	}
	objs, err := b.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("--frames %s: listing the frames: %w; check the URL, the server and the credentials in the environment", storage.Redact(raw), err)
	}
	list := make([]frameseq.Object, len(objs))
	for i, o := range objs {
		list[i] = frameseq.Object{Name: o.Key[len(prefix):], Size: o.Size, ModTime: o.ModTime, ETag: o.ETag}
	}
	etags := make(map[string]string, len(objs))
	for _, o := range list {
		etags[o.Name] = o.ETag
	}
	return frameseq.ScanObjects(storage.Redact(raw), list, func(name string, size int64) (io.ReaderAt, error) {
		return b.ReaderAt(ctx, prefix+name, size, etags[name]), nil
	}, opts)
}

// framesBucket opens the bucket of a job whose frames are in one.
func (c *Coordinator) framesBucket(ctx context.Context, framesDir string) (*storage.Bucket, string, error) {
	bucketURL, prefix, err := storage.ParsePrefix(framesDir)
	if err != nil {
		return nil, "", err
	}
	b, err := c.buckets.get(ctx, bucketURL)
	if err != nil {
		return nil, "", fmt.Errorf("%w: opening the frames' bucket %s: %w", errOwnFault, storage.Redact(framesDir), err)
	}
	return b, prefix, nil
}

// openJobFrame opens a frame of a job for reading, only if it is still the
// one the scan found: in a folder, see openFrame; in a bucket, the object
// with the ETag and size recorded. A bucket that cannot be reached is the
// coordinator's failure to read, answered Unavailable: the node asks again.
func (c *Coordinator) openJobFrame(ctx context.Context, framesDir string, f frameRecord) (io.ReadCloser, error) {
	if !inBucket(framesDir) {
		return openFrame(framesDir, f)
	}
	b, prefix, err := c.framesBucket(ctx, framesDir)
	if err != nil {
		return nil, err
	}
	r, err := b.Open(ctx, prefix+f.Name, f.Size, f.ETag)
	switch {
	case errors.Is(err, storage.ErrChanged) || storage.IsNotFound(err):
		return nil, fmt.Errorf("%w: frame %d (%s) changed in the bucket since the job started (%v): put it back as it was, then reset the job (framefarm reset)",
			ErrFrameChanged, f.Number, f.Name, err)
	case err != nil:
		return nil, fmt.Errorf("%w: reading frame %d (%s) from %s: %w", errOwnFault, f.Number, f.Name, b, err)
	}
	return r, nil
}

// rereadBucket is rereadFrames for frames in a bucket: one listing, and
// the frames whose ETag or size moved.
func (c *Coordinator) rereadBucket(ctx context.Context, framesDir string, frames []frameRecord) (map[int]frameRecord, error) {
	b, prefix, err := c.framesBucket(ctx, framesDir)
	if err != nil {
		return nil, err
	}
	objs, err := b.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", storage.Redact(framesDir), err)
	}
	now := make(map[string]storage.Object, len(objs))
	for _, o := range objs {
		now[o.Key[len(prefix):]] = o
	}
	changed := map[int]frameRecord{}
	for p, f := range frames {
		o, ok := now[f.Name]
		if !ok {
			return nil, fmt.Errorf("frame %d (%s) is no longer in %s: put it back, then reset the job again", f.Number, f.Name, storage.Redact(framesDir))
		}
		if o.Size != f.Size || o.ETag != f.ETag {
			changed[p] = frameRecord{Number: f.Number, Name: f.Name, Size: o.Size, ModTime: o.ModTime, ETag: o.ETag}
		}
	}
	return changed, nil
}

// probeBucketFrame copies a frame out of its bucket into a temp file for
// ffprobe, for the formats whose size Go does not read from the header.
func (c *Coordinator) probeBucketFrame(ctx context.Context, framesDir string, f frameRecord, probe func(path string) error) error {
	r, err := c.openJobFrame(ctx, framesDir, f)
	if err != nil {
		return err
	}
	defer r.Close()
	tmp, err := os.CreateTemp("", "framefarm-probe-*"+filepath.Ext(f.Name))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, r); err != nil {
		return fmt.Errorf("reading frame %d (%s): %w", f.Number, f.Name, err)
	}
	return probe(tmp.Name())
}

// frameURLs pre-signs a GET URL for each frame of a set in a bucket; nil
// when the bucket cannot sign (file://) or a URL cannot be made, and the
// node then streams the set.
func (c *Coordinator) frameURLs(ctx context.Context, framesDir string, frames []frameRecord) []string {
	if !inBucket(framesDir) {
		return nil
	}
	b, prefix, err := c.framesBucket(ctx, framesDir)
	if err != nil {
		return nil
	}
	urls := make([]string, len(frames))
	for i, f := range frames {
		if urls[i], err = b.SignedURL(ctx, prefix+f.Name, http.MethodGet, c.cfg.PresignExpiry); err != nil {
			if !errors.Is(err, storage.ErrNoSigner) {
				c.log.Warn("pre-signing a frame's URL failed; the node streams the set", "frame", f.Name, "err", err)
			}
			return nil
		}
	}
	return urls
}

// partKey is where a node puts a set's part under one lease in the
// --storage bucket: a retry under the same lease writes the same key, and
// another lease never sees it.
func (c *Coordinator) partKey(jr *jobRun, set int, token uint64) string {
	return fmt.Sprintf("%sparts/%s/set-%05d-t%d.%s", c.partsPrefix, jr.rec.ID, set, token, jr.rec.Settings.PartExt)
}

// partURL pre-signs the PUT of a set's part; "" without --storage, or when
// its bucket cannot sign.
func (c *Coordinator) partURL(ctx context.Context, jr *jobRun, set int, token uint64) string {
	if c.parts == nil {
		return ""
	}
	u, err := c.parts.SignedURL(ctx, c.partKey(jr, set, token), http.MethodPut, c.cfg.PresignExpiry)
	if err != nil {
		if !errors.Is(err, storage.ErrNoSigner) {
			c.log.Warn("pre-signing a part's URL failed; the node uploads the part to the coordinator", "job", jr.rec.ID, "set", set, "err", err)
		}
		return ""
	}
	return u
}

// openStorage opens the --storage bucket parts go through.
func (c *Coordinator) openStorage(ctx context.Context) error {
	if c.cfg.Storage == "" {
		return nil
	}
	bucketURL, prefix, err := storage.ParsePrefix(c.cfg.Storage)
	if err != nil {
		return fmt.Errorf("--storage: %w", err)
	}
	b, err := c.buckets.get(ctx, bucketURL)
	if err != nil {
		return fmt.Errorf("--storage %s: %w", storage.Redact(c.cfg.Storage), err)
	}
	c.parts, c.partsPrefix = b, prefix
	if c.cfg.PresignExpiry <= 0 {
		c.cfg.PresignExpiry = time.Hour
	}
	return nil
}

// fetchPart copies a part a node put in the --storage bucket into w, for
// the same checks as an uploaded one; at most limit bytes.
func (c *Coordinator) fetchPart(ctx context.Context, key string, limit int64, w io.Writer) (int64, error) {
	if c.parts == nil {
		return 0, fmt.Errorf("%w: the part was put in a bucket, but this coordinator has no --storage: upload it", ErrInvalid)
	}
	r, err := c.parts.Open(ctx, key, -1, "")
	if storage.IsNotFound(err) {
		return 0, fmt.Errorf("%w: the part is not in %s at %s: upload it", errBucketPart, c.parts, key)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: reading the part from %s: %w", errOwnFault, c.parts, err)
	}
	defer r.Close()
	n, err := io.Copy(w, io.LimitReader(r, limit+1))
	if err != nil {
		return n, fmt.Errorf("%w: reading the part from %s: %w", errOwnFault, c.parts, err)
	}
	return n, nil
}

// dropPart deletes a part from the --storage bucket once it is checked and
// kept by the coordinator (unless --keep-parts).
func (c *Coordinator) dropPart(ctx context.Context, key string) {
	if c.parts == nil || c.cfg.KeepParts {
		return
	}
	if err := c.parts.Delete(ctx, key); err != nil && !storage.IsNotFound(err) {
		c.log.Warn("deleting a checked part from the bucket failed; it stays there", "key", key, "err", err)
	}
}

// jobName is a job's default name: its folder's, or its bucket prefix's
// last part (the bucket's name for a whole bucket).
func jobName(framesDir string) string {
	if !inBucket(framesDir) {
		return filepath.Base(framesDir)
	}
	if u, err := url.Parse(framesDir); err == nil {
		if p := strings.Trim(u.Path, "/"); p != "" {
			return path.Base(p)
		}
		return u.Host
	}
	return "frames"
}
