package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"time"
	"unicode/utf8"

	"github.com/framefarm/framefarm/internal/atomicfile"
	"github.com/framefarm/framefarm/internal/text"

	farmpb "github.com/framefarm/framefarm/proto"
)

// Uploaded frames (submit --upload): a client that does not share a folder
// with the coordinator streams its frames into data/uploads/NAME, then
// submits that folder. Files arrive under a temp name and are renamed once
// whole, with the client's modification time, so that listing the folder
// tells an interrupted upload what it still has to send.

// maxUploadFile bounds one uploaded frame: larger than any image a render
// writes (an 8K 16-bit EXR is ~400 MB), small enough to keep a bad client
// from filling the disk with one file.
const maxUploadFile = 2 << 30

var uploadName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// uploadDir is the folder of an upload, after checking its name.
func (c *Coordinator) uploadDir(name string) (string, error) {
	if !uploadName.MatchString(name) {
		return "", fmt.Errorf("%w: upload name %q: 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalid, text.Truncate(name, 100))
	}
	return filepath.Join(c.cfg.Data, "uploads", name), nil
}

func checkFileName(name string) error {
	if name == "" || len(name) > 255 || !utf8.ValidString(name) || strings.ContainsAny(name, "/\\\x00") ||
		name == "." || name == ".." || strings.HasPrefix(name, ".tmp-") {
		return fmt.Errorf("%w: file name %q: a plain file name of at most 255 bytes of UTF-8", ErrInvalid, text.Truncate(name, 100))
	}
	return nil
}

func (f *farmService) ListUploaded(_ context.Context, req *farmpb.ListUploadedRequest) (*farmpb.ListUploadedResponse, error) {
	dir, err := f.c.uploadDir(req.Upload)
	if err != nil {
		return nil, err
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

func (f *farmService) UploadFrames(stream farmpb.FarmService_UploadFramesServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	dir, err := f.c.uploadDir(first.GetUpload())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating upload %s: %w", first.GetUpload(), err)
	}
	removeTemps(dir)
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
		// Whole on disk before its name says it is there: a later upload
		// skips it by name, size and time.
		path := filepath.Join(dir, hdr.Name)
		if err := atomicfile.Write(path, 0o644, func(f *os.File) error {
			for got := int64(0); got < hdr.Size; {
				m, err := stream.Recv()
				if err == io.EOF {
					return fmt.Errorf("%w: %s: the upload ended after %d of its %d bytes", ErrInvalid, hdr.Name, got, hdr.Size)
				}
				if err != nil {
					return err
				}
				chunk := m.GetChunk()
				if len(chunk) == 0 {
					return fmt.Errorf("%w: %s: %d of %d bytes sent before something else", ErrInvalid, hdr.Name, got, hdr.Size)
				}
				if got += int64(len(chunk)); got > hdr.Size {
					return fmt.Errorf("%w: %s: more than the %d bytes announced", ErrInvalid, hdr.Name, hdr.Size)
				}
				if _, err := f.Write(chunk); err != nil {
					return fmt.Errorf("storing %s: %w", hdr.Name, err)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		mt := time.Unix(0, hdr.MtimeNs)
		if err := os.Chtimes(path, mt, mt); err != nil {
			return fmt.Errorf("storing %s: %w", hdr.Name, err)
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
