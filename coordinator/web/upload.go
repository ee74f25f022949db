package web

import (
	"archive/tar"
	"archive/zip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/framefarm/framefarm/coordinator"
	"github.com/framefarm/framefarm/internal/atomicfile"
	"github.com/framefarm/framefarm/internal/text"
	farmpb "github.com/framefarm/framefarm/proto"
)

// POST /api/jobs: a multipart form with the encode settings (fields codec,
// container, fps, crf, preset, sets, priority, name, gaps) and the frames
// as files named "frames" (several plain files, or one .zip or .tar), and
// optionally an audio file named "audio". The frames are written into a
// fresh upload folder of the coordinator (data/uploads/web-ID), then the
// job is submitted with the same checks as `framefarm submit --upload`.
// Anything refused, cut off or too large removes the folder: a failed
// upload leaves nothing behind.

// uploadErr is a refused upload: its message, the HTTP status, and the
// field or file it is about.
type uploadErr struct {
	code  int
	field string
	file  string
	msg   string
}

func (e *uploadErr) Error() string { return e.msg }

func badUpload(field, file, format string, args ...any) *uploadErr {
	return &uploadErr{code: http.StatusBadRequest, field: field, file: file, msg: fmt.Sprintf(format, args...)}
}

func tooLarge(field, file, format string, args ...any) *uploadErr {
	return &uploadErr{code: http.StatusRequestEntityTooLarge, field: field, file: file, msg: fmt.Sprintf(format, args...)}
}

// settingFields are the form fields a job takes.
const settingFields = "codec, container, fps, crf, preset, sets, priority, name, gaps, pix_fmt, color, range, exr_transfer, alpha"

func isSetting(field string) bool {
	return field != "" && !strings.ContainsAny(field, ", ") && slices.Contains(strings.Split(settingFields, ", "), field)
}

// flagField maps the flags `framefarm submit`'s errors name to the form's
// fields, so that the page shows an error beside its field.
var flagField = regexp.MustCompile(`--(codec|out|fps|crf|preset|sets|priority|name|gaps|audio|pix-fmt|scale|color|range|exr-transfer|alpha)\b`)

var (
	audioExt      = regexp.MustCompile(`^\.[a-z0-9]{1,8}$`)
	containerName = regexp.MustCompile(`^[a-z0-9]{1,8}$`)
)

// receiver is one upload being written.
type receiver struct {
	dir    string
	lim    Limits
	files  int
	total  int64
	names  map[string]bool
	fields map[string]string
	audio  string
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	var raw [8]byte
	_, _ = rand.Read(raw[:])
	name := "web-" + hex.EncodeToString(raw[:])
	dir, err := s.c.UploadDir(name)
	if err != nil {
		s.fail(w, err)
		return
	}
	rc := &receiver{dir: dir, lim: s.o.Limits, names: map[string]bool{}, fields: map[string]string{}}
	// The whole body is bounded, the form's few fields and part headers
	// beside the files with it.
	r.Body = http.MaxBytesReader(w, r.Body, s.o.Limits.TotalBytes+1<<20)
	err = rc.receive(r)
	var spec coordinator.JobSpec
	if err == nil {
		spec, err = rc.spec()
	}
	kept := false
	if err == nil {
		// With --storage the frames are kept in the bucket, where nodes
		// read them; the audio stays here, where the join reads it.
		kept = true
		spec.FramesDir, err = s.c.KeepUpload(r.Context(), name, dir)
	}
	var job *farmpb.JobSummary
	if err == nil {
		job, err = s.c.Submit(r.Context(), spec)
	}
	if err != nil {
		// Whatever was written goes, the folder (or bucket folder) with it.
		_ = os.RemoveAll(dir)
		if kept {
			s.c.DropUpload(context.WithoutCancel(r.Context()), name)
		}
		s.refuse(w, rc, err)
		return
	}
	s.log.Info("job uploaded", "upload", name, "files", rc.files, "bytes", rc.total)
	writeJSON(w, http.StatusOK, marshal(job))
}

// refuse answers a refused upload, naming its field or files.
func (s *Server) refuse(w http.ResponseWriter, rc *receiver, err error) {
	var ue *uploadErr
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ue):
		e := apiError{Error: ue.msg, Field: ue.field}
		if ue.file != "" {
			e.Files = []string{ue.file}
		}
		writeJSON(w, ue.code, e)
	case errors.As(err, &mbe):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: fmt.Sprintf("the upload is larger than the farm takes (%s in all): send fewer frames per job",
			text.Size(rc.lim.TotalBytes)), Field: "frames"})
	default:
		st := s.c.Status(err)
		e := apiError{Error: st.Message()}
		if m := flagField.FindStringSubmatch(st.Message()); m != nil {
			e.Field = strings.ReplaceAll(m[1], "-", "_")
			if e.Field == "out" {
				e.Field = "container"
			}
		}
		for n := range rc.names {
			if len(e.Files) < 20 && strings.Contains(st.Message(), n) {
				e.Files = append(e.Files, n)
			}
		}
		slices.Sort(e.Files)
		if ct := rc.fields["container"]; e.Field == "" && ct != "" && strings.Contains(st.Message(), "a ."+ct+" file") {
			e.Field = "container"
		}
		if len(e.Files) > 0 {
			// About the frames, whichever flag it suggests.
			e.Field = "frames"
		}
		writeJSON(w, httpCode(st.Code()), e)
	}
}

func (rc *receiver) receive(r *http.Request) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return badUpload("frames", "", "send the job as multipart/form-data (fields and files): %v", err)
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return badUpload("frames", "", "the upload is cut off or malformed: %v", err)
		}
		if err := rc.part(r.Context(), p); err != nil {
			return err
		}
	}
	if rc.files == 0 {
		return badUpload("frames", "", "no frames: choose a folder of numbered images, several images, or one .zip or .tar")
	}
	return nil
}

func (rc *receiver) part(ctx context.Context, p *multipart.Part) error {
	defer p.Close()
	field := p.FormName()
	switch {
	case isSetting(field):
		if p.FileName() != "" {
			return badUpload(field, "", "%s is a setting, not a file", field)
		}
		if _, dup := rc.fields[field]; dup {
			return badUpload(field, "", "%s given twice", field)
		}
		b, err := io.ReadAll(io.LimitReader(p, 1025))
		if err != nil {
			return badUpload(field, "", "reading %s: %v", field, err)
		}
		if len(b) > 1024 {
			return badUpload(field, "", "%s: at most 1024 bytes", field)
		}
		rc.fields[field] = strings.TrimSpace(string(b))
		return nil
	case field == "audio":
		if rawFileName(p) == "" {
			return nil
		}
		if rc.audio != "" {
			return badUpload("audio", p.FileName(), "give one audio file")
		}
		// Hidden in the frames folder, so that the scan passes it by, and
		// removed with the job.
		ext := strings.ToLower(path.Ext(p.FileName()))
		if !audioExt.MatchString(ext) {
			ext = ""
		}
		rc.audio = filepath.Join(rc.dir, ".audio"+ext)
		return rc.write(ctx, "audio", p.FileName(), rc.audio, rc.lim.FileBytes, p)
	case field == "frames":
		fn := rawFileName(p)
		if fn == "" {
			return badUpload("frames", "", "frames are files: send each with a file name")
		}
		if l := strings.ToLower(fn); strings.HasSuffix(l, ".zip") || strings.HasSuffix(l, ".tar") {
			if rc.files > 0 {
				return badUpload("frames", fn, "%s: send one archive, or images, not both", fn)
			}
			return rc.archive(ctx, fn, p)
		}
		return rc.frame(ctx, fn, p)
	}
	return badUpload(field, "", "unknown field %q: the fields are frames, audio, %s", text.Truncate(field, 40), settingFields)
}

// rawFileName is a part's file name as sent: Part.FileName would cut it to
// its last element, and a name with a path in it is refused, not guessed.
func rawFileName(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// frame writes one uploaded frame, by its plain name.
func (rc *receiver) frame(ctx context.Context, name string, r io.Reader) error {
	if err := coordinator.CheckFileName(name); err != nil || strings.HasPrefix(name, ".") {
		return badUpload("frames", name, "%q is not a plain file name: frames are sent by their own names, without folders", text.Truncate(name, 100))
	}
	if rc.names[name] {
		return badUpload("frames", name, "%s is sent twice: a folder holds each name once", name)
	}
	if rc.files++; rc.files > rc.lim.Files {
		return tooLarge("frames", name, "more than %d files: the farm takes at most %d frames in one upload", rc.lim.Files, rc.lim.Files)
	}
	rc.names[name] = true
	return rc.write(ctx, "frames", name, filepath.Join(rc.dir, name), rc.lim.FileBytes, r)
}

// write copies r to path, within max bytes and the upload's total.
func (rc *receiver) write(ctx context.Context, field, name, path string, max int64, r io.Reader) error {
	if err := os.MkdirAll(rc.dir, 0o755); err != nil {
		return fmt.Errorf("creating the upload folder: %w", err)
	}
	return atomicfile.Write(path, 0o644, func(f *os.File) error {
		limit := min(max, rc.lim.TotalBytes-rc.total)
		n, err := io.Copy(f, io.LimitReader(r, limit+1))
		rc.total += n
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) || ctx.Err() != nil {
				return err
			}
			return badUpload(field, name, "%s: the upload was cut off after %s: %v", name, text.Size(n), err)
		}
		if n > max {
			return tooLarge(field, name, "%s is larger than %s, the most one file may be", name, text.Size(max))
		}
		if n > limit {
			return tooLarge(field, name, "the upload is larger than the farm takes (%s in all): reached at %s", text.Size(rc.lim.TotalBytes), name)
		}
		return nil
	})
}

// entryName is an archive entry's frame name: its last path element, after
// refusing absolute paths and "..", which could never be a frame of this
// folder (zip-slip). Hidden entries and macOS's __MACOSX copies are
// skipped ("" and no error).
func entryName(archive, name string) (string, error) {
	clean := strings.ReplaceAll(name, "\\", "/")
	if strings.HasPrefix(clean, "/") || path.IsAbs(clean) || filepath.VolumeName(name) != "" {
		return "", badUpload("frames", archive, "%s: entry %q has an absolute path: an archive of frames holds relative names", archive, text.Truncate(name, 100))
	}
	for _, el := range strings.Split(clean, "/") {
		if el == ".." {
			return "", badUpload("frames", archive, "%s: entry %q leads out of its folder (..): refused", archive, text.Truncate(name, 100))
		}
		if strings.HasPrefix(el, ".") && el != "." || el == "__MACOSX" {
			return "", nil
		}
	}
	return path.Base(clean), nil
}

// archive unpacks one .zip or .tar of frames: regular files only, each by
// its base name, under the same limits as files sent one by one.
func (rc *receiver) archive(ctx context.Context, name string, r io.Reader) error {
	if strings.HasSuffix(strings.ToLower(name), ".tar") {
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return badUpload("frames", name, "%s is not a readable tar archive: %v", name, err)
			}
			base, err := entryName(name, h.Name)
			if err != nil {
				return err
			}
			switch h.Typeflag {
			case tar.TypeDir:
				continue
			case tar.TypeReg:
			default:
				return badUpload("frames", name, "%s: %q is not a plain file (a link or a device): an archive of frames holds only files", name, text.Truncate(h.Name, 100))
			}
			if base == "" {
				continue
			}
			if err := rc.frame(ctx, base, tr); err != nil {
				return err
			}
		}
		return nil
	}
	// A zip's index is at its end: it is kept in a temp file beside the
	// frames (counted in the limits), then removed.
	tmp := filepath.Join(rc.dir, ".tmp-upload.zip")
	if err := rc.write(ctx, "frames", name, tmp, rc.lim.TotalBytes, r); err != nil {
		return err
	}
	defer os.Remove(tmp)
	zr, err := zip.OpenReader(tmp)
	if err != nil {
		return badUpload("frames", name, "%s is not a readable zip archive: %v", name, err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		base, err := entryName(name, f.Name)
		if err != nil {
			return err
		}
		if f.FileInfo().IsDir() {
			continue
		}
		if !f.Mode().IsRegular() {
			return badUpload("frames", name, "%s: %q is not a plain file (a link): an archive of frames holds only files", name, text.Truncate(f.Name, 100))
		}
		if base == "" {
			continue
		}
		fr, err := f.Open()
		if err != nil {
			return badUpload("frames", name, "%s: %s: %v", name, f.Name, err)
		}
		err = rc.frame(ctx, base, fr)
		fr.Close()
		if err != nil {
			var ue *uploadErr
			if errors.As(err, &ue) || errors.Is(err, zip.ErrChecksum) || errors.Is(err, zip.ErrFormat) {
				return err
			}
			return badUpload("frames", name, "%s: %s: %v", name, f.Name, err)
		}
	}
	return nil
}

// spec is the job the form asks for, with `framefarm submit`'s defaults.
func (rc *receiver) spec() (coordinator.JobSpec, error) {
	f := rc.fields
	spec := coordinator.JobSpec{FramesDir: rc.dir, Name: f["name"], Codec: f["codec"], FPS: f["fps"], Preset: f["preset"],
		Container: f["container"], Gaps: f["gaps"], PixFmt: f["pix_fmt"], Audio: rc.audio, Sets: 8, CRF: -1,
		Color: f["color"], Range: f["range"], EXRTransfer: f["exr_transfer"], Alpha: f["alpha"]}
	if spec.Codec == "" {
		spec.Codec = "libx264"
	}
	if spec.FPS == "" {
		spec.FPS = "24"
	}
	ints := []struct {
		field    string
		to       *int
		min, max int
	}{{"sets", &spec.Sets, 1, 100_000}, {"crf", &spec.CRF, -1, 100}, {"priority", &spec.Priority, -1_000_000, 1_000_000}}
	for _, i := range ints {
		v, ok := f[i.field]
		if !ok || v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < i.min || n > i.max {
			return spec, badUpload(i.field, "", "--%s %q: give a whole number from %d to %d", i.field, text.Truncate(v, 20), i.min, i.max)
		}
		*i.to = n
	}
	if spec.Name == "" {
		spec.Name = "upload"
	}
	if spec.Container != "" && !containerName.MatchString(spec.Container) {
		return spec, badUpload("container", "", "container %q: give an extension such as mp4, mkv, mov or webm", text.Truncate(spec.Container, 20))
	}
	return spec, nil
}
