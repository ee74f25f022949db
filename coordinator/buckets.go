package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	// unsigned holds the buckets whose failure to sign was logged: once
	// per bucket, not at every set.
	unsigned map[string]bool
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

// cannotSign logs, once per bucket, that it could not pre-sign a URL and
// what the farm does instead. A file:// bucket never signs, and says so
// only at debug level; a cloud bucket without a signing key (GCS without a
// service account key, say) is a set-up to fix.
func (b *buckets) cannotSign(log *slog.Logger, bucket string, err error, instead string, attrs ...any) {
	b.mu.Lock()
	first := !b.unsigned[bucket]
	if b.unsigned == nil {
		b.unsigned = map[string]bool{}
	}
	b.unsigned[bucket] = true
	b.mu.Unlock()
	level := slog.LevelWarn
	if !first {
		level = slog.LevelDebug
	} else if errors.Is(err, storage.ErrNoSigner) && strings.HasPrefix(bucket, "file:") {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, "the bucket cannot pre-sign URLs; "+instead+" (said once per bucket)",
		append(attrs, "bucket", bucket, "err", err)...)
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

// The functions below that take a job's framesDir serve both kinds of job:
// a folder's frames (see input.go) or a bucket's. Only they tell the two
// apart, so the rest of the coordinator does not.

// framesLocation is --frames as a job records it: a folder's absolute
// path, or a bucket URL as given.
func framesLocation(framesDir string) (string, error) {
	if inBucket(framesDir) {
		return framesDir, nil
	}
	return filepath.Abs(framesDir)
}

// scanFrames lists and checks a job's frames: frameseq.Scan of a folder,
// or scanBucket.
func (c *Coordinator) scanFrames(ctx context.Context, framesDir string, opts frameseq.Options) (*frameseq.Sequence, error) {
	if inBucket(framesDir) {
		return c.scanBucket(ctx, framesDir, opts)
	}
	return frameseq.Scan(framesDir, opts)
}

// rereadJobFrames is the frames of a job whose size, time or object moved
// since they were recorded: rereadFrames of a folder, or rereadBucket.
func (c *Coordinator) rereadJobFrames(ctx context.Context, framesDir string, frames []frameRecord) (map[int]frameRecord, error) {
	if inBucket(framesDir) {
		return c.rereadBucket(ctx, framesDir, frames)
	}
	return rereadFrames(framesDir, frames)
}

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
	return frameseq.ScanObjects(storage.Redact(raw), list, func(o frameseq.Object) (io.ReaderAt, error) {
		return b.ReaderAt(ctx, prefix+o.Name, o.Size, o.ETag), nil
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
	case storage.IsNotFound(err) && b.Gone(ctx):
		return nil, frameChanged(fmt.Sprintf("the bucket of the frames %s no longer exists, so frame %d (%s) cannot be read: make the bucket again and put the frames back, then reset the job (framefarm reset)",
			storage.Redact(framesDir), f.Number, f.Name))
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
	if storage.IsNotFound(err) {
		return nil, fmt.Errorf("the bucket of the frames %s no longer exists: make the bucket again and put the frames back, then reset the job again", storage.Redact(framesDir))
	}
	if err != nil {
		return nil, err
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

// withFrameFile calls use with a path to a frame as a file, for ffprobe:
// the folder's own file, or for a frame in a bucket a temp copy of it.
func (c *Coordinator) withFrameFile(ctx context.Context, framesDir string, f frameRecord, use func(path string) error) error {
	if !inBucket(framesDir) {
		return use(filepath.Join(framesDir, f.Name))
	}
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
	return use(tmp.Name())
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
			c.buckets.cannotSign(c.log, b.String(), err, "the nodes stream the frames through the coordinator", "frame", f.Name)
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

// partURL pre-signs the PUT of a set's part, with the headers the PUT
// must carry; "" without --storage, or when its bucket cannot sign.
func (c *Coordinator) partURL(ctx context.Context, jr *jobRun, set int, token uint64) (string, map[string]string) {
	if c.parts == nil {
		return "", nil
	}
	u, err := c.parts.SignedURL(ctx, c.partKey(jr, set, token), http.MethodPut, c.cfg.PresignExpiry)
	if err != nil {
		c.buckets.cannotSign(c.log, c.parts.String(), err, "the nodes upload parts to the coordinator", "job", jr.rec.ID, "set", set)
		return "", nil
	}
	return u, c.parts.PutHeaders()
}

// openStorage opens the --storage bucket parts go through.
func (c *Coordinator) openStorage(ctx context.Context) error {
	var err error
	if c.cfg.PresignExpiry, err = checkPresignExpiry(c.cfg.PresignExpiry); err != nil {
		return err
	}
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
	// Said at start rather than at every set: the farm still works without
	// the bucket (nodes upload their parts), and the bucket may be on its
	// way (a server starting beside the coordinator), so this is no reason
	// to refuse to start.
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := b.List(lctx, prefix); err != nil {
		c.log.Warn("the --storage bucket cannot be listed; until it can, nodes upload their parts to the coordinator",
			"storage", storage.Redact(c.cfg.Storage), "answer", storage.Answer(err), "err", err)
	}
	return nil
}

// checkPresignExpiry bounds --presign-expiry: S3 refuses a URL signed for
// more than 7 days, and one of a second or less is stale before a node uses it.
func checkPresignExpiry(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return time.Hour, nil
	case d < time.Second || d > 7*24*time.Hour:
		return 0, fmt.Errorf("--presign-expiry %s: give a duration from 1s to 168h (S3 refuses pre-signed URLs valid for longer than 7 days)", d)
	}
	return d, nil
}

// fetchPart copies a part a node put in the --storage bucket into w, for
// the same checks as an uploaded one; at most limit bytes. A part that is
// not there (this coordinator has no --storage, or another one, since it
// restarted) is errPartNotInBucket: the node uploads it, and nothing
// counts against the set.
func (c *Coordinator) fetchPart(ctx context.Context, key string, limit int64, w io.Writer) (int64, error) {
	if c.parts == nil {
		return 0, fmt.Errorf("%w: the part was put in a bucket, but this coordinator has no --storage: upload it", errPartNotInBucket)
	}
	r, err := c.parts.Open(ctx, key, -1, "")
	if storage.IsNotFound(err) {
		return 0, fmt.Errorf("%w: the part is not in %s at %s: upload it", errPartNotInBucket, c.parts, key)
	}
	if err == nil {
		defer r.Close()
		var n int64
		n, err = io.Copy(w, io.LimitReader(r, limit+1))
		if err == nil {
			return n, nil
		}
	}
	if ctx.Err() != nil {
		// The node gave up the call: not a failure of the coordinator's.
		return 0, ctx.Err()
	}
	return 0, fmt.Errorf("%w: reading the part from %s: %w", errOwnFault, c.parts, err)
}

// sweepBucket deletes what the --storage bucket holds for a job (or an
// upload) under folders/id/: a job's parts once it is joined or deleted
// (unless --keep-parts), since every part the coordinator took it keeps
// under --data; its final once it is deleted; an upload's frames once the
// job that rendered them is deleted. Not part by part as they are
// taken: a delete racing a node's PUT into the same folder can fail that
// PUT on servers that keep folders (versitygw's posix backend answered 409
// ExistingObjectIsDirectory), and a part whose check failed on the
// coordinator's side stays readable for the node's next try. It reports
// whether nothing it was to delete is left.
func (c *Coordinator) sweepBucket(ctx context.Context, id string, folders ...string) bool {
	if c.parts == nil {
		return true
	}
	swept := true
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, folder := range folders {
		if folder == "parts" && c.cfg.KeepParts {
			continue
		}
		prefix := fmt.Sprintf("%s%s/%s/", c.partsPrefix, folder, id)
		objs, err := c.parts.List(ctx, prefix)
		if err != nil {
			c.log.Warn("listing objects to delete from the bucket failed; they stay there for now", "prefix", prefix, "err", err)
			swept = false
			continue
		}
		removed := 0
		for _, o := range objs {
			if err := c.parts.Delete(ctx, o.Key); err != nil && !storage.IsNotFound(err) {
				c.log.Warn("deleting an object from the bucket failed; it stays there for now", "key", o.Key, "err", err)
				swept = false
			} else {
				removed++
			}
		}
		if removed > 0 {
			c.log.Info("removed objects no job needs from the bucket", "prefix", prefix, "objects", removed)
		}
	}
	return swept
}

// sweepDeleted sweeps a deleted job's parts and final from the bucket, and
// if the bucket kept any, leaves the job to tidyBucket to try again. Job
// IDs are random and not reused, so a later sweep cannot meet another
// job's objects (an upload's name can be, so uploads are not swept again).
//
// A delete that stopped the put of the final into the bucket waits for the
// put to return (stopped), then sweeps, and sweeps once more later: a
// server that had the whole object when the coordinator gave up on it may
// store it a moment after, as a node's late PUT of a part (see tidyBucket).
func (c *Coordinator) sweepDeleted(ctx context.Context, id string, stopped []chan struct{}) {
	for _, done := range stopped {
		<-done
	}
	swept := c.sweepBucket(ctx, id, "parts", "finals")
	if swept && len(stopped) == 0 {
		return
	}
	again := c.cfg.Now()
	if swept {
		again = again.Add(c.latePutGrace())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unswept == nil {
		c.unswept = map[string]time.Time{}
	}
	c.unswept[id] = again
}

// latePutGrace is how long after the coordinator stopped waiting for a
// PUT into the bucket (a node's part, its own final) the object may still
// land: twice the heartbeat timeout.
func (c *Coordinator) latePutGrace() time.Duration { return 2 * c.cfg.HeartbeatTimeout }

// tidyBucket sweeps the parts of finished jobs from the --storage bucket
// once their nodes can no longer be putting any: parts whose announcement
// never reached the coordinator (a node cut off after its PUT, a lease
// that moved on while its node was still uploading), and every part of a
// job cancelled or failed and never deleted, which the join's sweep never
// meets. Each job once per finish (a job reset and finished again is
// swept again), after twice the heartbeat timeout: a node still rendering
// a set of a cancelled job learns it at its next heartbeat, and its PUT,
// if it was already on its way, lands by then. A part swept that a job
// reset afterwards still wanted costs nothing: the coordinator keeps every
// part it took under --data, and one it does not find in the bucket is
// uploaded by its node. Only jobs this coordinator knows are swept, so
// farms sharing a bucket folder keep each other's parts. At every tick it
// also tries again the sweeps of deleted jobs that the bucket refused
// (sweepDeleted), until they succeed or the coordinator stops.
func (c *Coordinator) tidyBucket(ctx context.Context) {
	if c.parts == nil {
		return
	}
	grace := c.latePutGrace()
	t := time.NewTicker(min(grace/2, time.Minute))
	defer t.Stop()
	tidied := map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := c.cfg.Now()
		var due []string
		c.mu.Lock()
		for id := range tidied {
			if c.jobs[id] == nil {
				delete(tidied, id) // deleted: its sweep ran then
			}
		}
		for id, jr := range c.jobs {
			if fin := jr.rec.Finished; jr.job.State.Finished() && now.Sub(fin) >= grace && !tidied[id].Equal(fin) {
				due = append(due, id)
				tidied[id] = fin
			}
		}
		var again []string
		for id, from := range c.unswept {
			if !now.Before(from) {
				again = append(again, id)
			}
		}
		c.mu.Unlock()
		for _, id := range due {
			c.sweepBucket(ctx, id, "parts")
		}
		for _, id := range again {
			if c.sweepBucket(ctx, id, "parts", "finals") {
				c.mu.Lock()
				delete(c.unswept, id)
				c.mu.Unlock()
			}
		}
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
