package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"

	"github.com/framefarm/framefarm/internal/atomicfile"
	"github.com/framefarm/framefarm/internal/text"

	farmpb "github.com/framefarm/framefarm/proto"
)

// Uploaded frames (submit --upload): a client that does not share a folder
// with the coordinator streams its frames to the coordinator, which keeps
// them in its --storage bucket under uploads/NAME/ (nodes then read them
// from the bucket, as any frames there), or without --storage in
// data/uploads/NAME; then the client submits the upload. A file appears
// under its name only once whole (renamed from a temp name, or an object
// that appears when its upload completes), with the client's modification
// time (the file's, or the object's metadata), so that listing the upload
// tells an interrupted one what it still has to send.

// maxUploadFile bounds one uploaded frame: larger than any image a render
// writes (an 8K 16-bit EXR is ~400 MB), small enough to keep a bad client
// from filling the disk with one file.
const maxUploadFile = 2 << 30

var uploadName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// uploadDir is the local folder of an upload, after checking its name.
func (c *Coordinator) uploadDir(name string) (string, error) {
	if !uploadName.MatchString(name) {
		return "", fmt.Errorf("%w: upload name %q: 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalid, text.Truncate(name, 100))
	}
	return filepath.Join(c.cfg.Data, "uploads", name), nil
}

// uploadedFrames is where upload name keeps its frames, as a job's frames
// folder: its local folder, or with --storage its folder in the bucket (a
// URL) and the key prefix of its objects there.
func (c *Coordinator) uploadedFrames(name string) (frames, keyPrefix string, err error) {
	dir, err := c.uploadDir(name)
	if err != nil || c.parts == nil {
		return dir, "", err
	}
	u, err := url.Parse(c.cfg.Storage)
	if err != nil {
		return "", "", fmt.Errorf("--storage: %w", err)
	}
	u.Path, u.RawPath = path.Join("/", u.Path, "uploads", name)+"/", ""
	return u.String(), c.partsPrefix + "uploads/" + name + "/", nil
}

// mtimeMeta is the metadata key that keeps an uploaded frame's time: a
// name every cloud takes as it is (Azure's must be C# identifiers).
const mtimeMeta = "framefarm_mtime_ns"

func checkFileName(name string) error {
	if name == "" || len(name) > 255 || !utf8.ValidString(name) || strings.ContainsAny(name, "/\\\x00") ||
		name == "." || name == ".." || strings.HasPrefix(name, ".tmp-") {
		return fmt.Errorf("%w: file name %q: a plain file name of at most 255 bytes of UTF-8", ErrInvalid, text.Truncate(name, 100))
	}
	return nil
}

// uploadSwept waits while a delete sweeps upload name from the bucket
// (deleteJob): an upload or submit of the same name meanwhile would find
// frames that are about to go, and send none of them again.
func (c *Coordinator) uploadSwept(ctx context.Context, name string) error {
	c.mu.Lock()
	swept := c.sweepingUploads[name]
	c.mu.Unlock()
	if swept == nil {
		return nil
	}
	select {
	case <-swept:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *farmService) ListUploaded(ctx context.Context, req *farmpb.ListUploadedRequest) (*farmpb.ListUploadedResponse, error) {
	dir, prefix, err := f.c.uploadedFrames(req.Upload)
	if err != nil {
		return nil, err
	}
	if err := f.c.uploadSwept(ctx, req.Upload); err != nil {
		return nil, err
	}
	if prefix != "" {
		return f.c.listUploadedObjects(ctx, prefix)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return &farmpb.ListUploadedResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading upload %s: %w", req.Upload, err)
	}
	resp := &farmpb.ListUploadedResponse{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		resp.Files = append(resp.Files, &farmpb.UploadedFile{Name: e.Name(), Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()})
	}
	return resp, nil
}

// listUploadedObjects lists an upload kept in the bucket. A listing does
// not carry the client's time (metadata), so each object's attributes are
// read, several at once: a resumed upload of thousands of frames costs
// seconds, not minutes.
func (c *Coordinator) listUploadedObjects(ctx context.Context, prefix string) (*farmpb.ListUploadedResponse, error) {
	objs, err := c.parts.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errOwnFault, err)
	}
	files := make([]*farmpb.UploadedFile, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, o := range objs {
		g.Go(func() error {
			a, err := c.parts.Attributes(gctx, o.Key)
			if err != nil {
				return err
			}
			ns, _ := strconv.ParseInt(a.Meta[mtimeMeta], 10, 64)
			files[i] = &farmpb.UploadedFile{Name: strings.TrimPrefix(o.Key, prefix), Size: a.Size, MtimeNs: ns}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("%w: %w", errOwnFault, err)
	}
	return &farmpb.ListUploadedResponse{Files: files}, nil
}

func (f *farmService) UploadFrames(stream farmpb.FarmService_UploadFramesServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	dir, prefix, err := f.c.uploadedFrames(first.GetUpload())
	if err != nil {
		return err
	}
	if err := f.c.uploadSwept(stream.Context(), first.GetUpload()); err != nil {
		return err
	}
	if prefix == "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating upload %s: %w", first.GetUpload(), err)
		}
		removeTemps(dir)
	}
	resp := &farmpb.UploadFramesResponse{}
	m, err := stream.Recv()
	for err == nil {
		hdr := m.GetFile()
		if hdr == nil {
			return fmt.Errorf("%w: an upload sends its name, then for each file a header and its bytes", ErrInvalid)
		}
		if err := checkFileName(hdr.Name); err != nil {
			return err
		}
		if hdr.Size < 0 || hdr.Size > maxUploadFile {
			return fmt.Errorf("%w: %s: %d bytes; a frame is at most %d", ErrInvalid, hdr.Name, hdr.Size, int64(maxUploadFile))
		}
		body := &fileBytes{stream: stream, name: hdr.Name, size: hdr.Size}
		if prefix != "" {
			meta := map[string]string{mtimeMeta: strconv.FormatInt(hdr.MtimeNs, 10)}
			if err := f.c.parts.PutMeta(stream.Context(), prefix+hdr.Name, body, meta); err != nil {
				if errors.Is(err, ErrInvalid) || stream.Context().Err() != nil {
					return err
				}
				return fmt.Errorf("%w: storing %s: %w", errOwnFault, hdr.Name, err)
			}
		} else if err := f.c.storeUploaded(filepath.Join(dir, hdr.Name), body, hdr.MtimeNs); err != nil {
			return err
		}
		f.c.metrics.frameUploadBytes.Add(float64(hdr.Size))
		resp.Files++
		resp.Bytes += hdr.Size
		m, err = stream.Recv()
	}
	if err != io.EOF {
		return err
	}
	return stream.SendAndClose(resp)
}

// storeUploaded writes one uploaded file under path, whole on disk before
// its name says it is there (a later upload skips it by name, size and
// time), with the client's time.
func (c *Coordinator) storeUploaded(path string, body io.Reader, mtimeNs int64) error {
	if err := atomicfile.Write(path, 0o644, func(f *os.File) error {
		_, err := io.Copy(f, body)
		return err
	}); err != nil {
		return err
	}
	mt := time.Unix(0, mtimeNs)
	if err := os.Chtimes(path, mt, mt); err != nil {
		return fmt.Errorf("storing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// fileBytes reads one uploaded file's bytes off the stream: exactly size
// bytes, in the chunks that follow its header.
type fileBytes struct {
	stream    farmpb.FarmService_UploadFramesServer
	name      string
	size, got int64
	buf       []byte
}

func (r *fileBytes) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.got == r.size {
			return 0, io.EOF
		}
		m, err := r.stream.Recv()
		if err == io.EOF {
			return 0, fmt.Errorf("%w: %s: the upload ended after %d of its %d bytes", ErrInvalid, r.name, r.got, r.size)
		}
		if err != nil {
			return 0, err
		}
		chunk := m.GetChunk()
		if len(chunk) == 0 {
			return 0, fmt.Errorf("%w: %s: %d of %d bytes sent before something else", ErrInvalid, r.name, r.got, r.size)
		}
		if r.got += int64(len(chunk)); r.got > r.size {
			return 0, fmt.Errorf("%w: %s: more than the %d bytes announced", ErrInvalid, r.name, r.size)
		}
		r.buf = chunk
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// KeepUpload moves a local upload folder's frames (the web app's, received
// whole before the job is submitted) into the --storage bucket's
// uploads/NAME/, with their times, and removes them from the folder; it
// returns the job's frames location, the folder itself without --storage.
// What is not a frame (the job's audio, a dot file the join reads) stays
// in the folder, which goes with the job.
func (c *Coordinator) KeepUpload(ctx context.Context, name, dir string) (string, error) {
	frames, prefix, err := c.uploadedFrames(name)
	if err != nil || prefix == "" {
		return dir, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8) // small frames: the requests' round trips, not the bytes, take the time
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		g.Go(func() error {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			meta := map[string]string{mtimeMeta: strconv.FormatInt(fi.ModTime().UnixNano(), 10)}
			f, err := os.Open(filepath.Join(dir, e.Name()))
			if err != nil {
				return err
			}
			defer f.Close()
			return c.parts.PutMeta(gctx, prefix+e.Name(), f, meta)
		})
	}
	if err := g.Wait(); err != nil {
		return "", fmt.Errorf("%w: keeping the upload in %s: %w", errOwnFault, c.parts, err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return "", err
			}
		}
	}
	_ = os.Remove(dir) // unless the audio is in it
	return frames, nil
}

// DropUpload removes what KeepUpload put (or began to put) in the bucket
// for an upload whose job was refused.
func (c *Coordinator) DropUpload(ctx context.Context, name string) {
	if _, prefix, err := c.uploadedFrames(name); err == nil && prefix != "" {
		c.sweepBucket(ctx, name, "uploads")
	}
}
