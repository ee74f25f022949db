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
		return "", fmt.Errorf("%w: upload name %q: 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalid, truncate(name, 100))
	}
	return filepath.Join(c.cfg.Data, "uploads", name), nil
}

func checkFileName(name string) error {
	if name == "" || len(name) > 255 || !utf8.ValidString(name) || strings.ContainsAny(name, "/\\\x00") ||
		name == "." || name == ".." || strings.HasPrefix(name, ".tmp-") {
		return fmt.Errorf("%w: file name %q: a plain file name of at most 255 bytes of UTF-8", ErrInvalid, truncate(name, 100))
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
	var cur *os.File
	var hdr *farmpb.UploadedFile
	var got int64
	defer func() {
		if cur != nil {
			cur.Close()
			os.Remove(cur.Name())
		}
	}()
	finish := func() error {
		// Whole on disk before its name says it is there: a later upload
		// skips it by name, size and time.
		if err := cur.Sync(); err != nil {
			return fmt.Errorf("storing %s: %w", hdr.Name, err)
		}
		if err := cur.Close(); err != nil {
			return fmt.Errorf("storing %s: %w", hdr.Name, err)
		}
		path := filepath.Join(dir, hdr.Name)
		if err := os.Rename(cur.Name(), path); err != nil {
			return fmt.Errorf("storing %s: %w", hdr.Name, err)
		}
		cur = nil
		mt := time.Unix(0, hdr.MtimeNs)
		if err := os.Chtimes(path, mt, mt); err != nil {
			return fmt.Errorf("storing %s: %w", hdr.Name, err)
		}
		resp.Files++
		return nil
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch {
		case m.GetFile() != nil:
			if cur != nil {
				return fmt.Errorf("%w: %s: %d of %d bytes sent before the next file", ErrInvalid, hdr.Name, got, hdr.Size)
			}
			hdr, got = m.GetFile(), 0
			if err := checkFileName(hdr.Name); err != nil {
				return err
			}
			if hdr.Size < 0 || hdr.Size > maxUploadFile {
				return fmt.Errorf("%w: %s: %d bytes; a frame is at most %d", ErrInvalid, hdr.Name, hdr.Size, int64(maxUploadFile))
			}
			if cur, err = os.CreateTemp(dir, ".tmp-upload-*"); err != nil {
				return fmt.Errorf("storing %s: %w", hdr.Name, err)
			}
			if hdr.Size == 0 {
				if err := finish(); err != nil {
					return err
				}
			}
		case len(m.GetChunk()) > 0 && cur != nil:
			chunk := m.GetChunk()
			if got += int64(len(chunk)); got > hdr.Size {
				return fmt.Errorf("%w: %s: more than the %d bytes announced", ErrInvalid, hdr.Name, hdr.Size)
			}
			if _, err := cur.Write(chunk); err != nil {
				return fmt.Errorf("storing %s: %w", hdr.Name, err)
			}
			resp.Bytes += int64(len(chunk))
			if got == hdr.Size {
				if err := finish(); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: an upload sends its name, then for each file a header and its bytes", ErrInvalid)
		}
	}
	if cur != nil {
		return fmt.Errorf("%w: %s: the upload ended after %d of its %d bytes", ErrInvalid, hdr.Name, got, hdr.Size)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("storing upload %s: %w", first.GetUpload(), err)
	}
	return stream.SendAndClose(resp)
}
