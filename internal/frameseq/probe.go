package frameseq

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
	_ "golang.org/x/image/webp" // registers WebP with image.DecodeConfig
)

// probeWorkers bounds the goroutines that read file info and headers.
const probeWorkers = 8

// pngEnd is the IEND chunk that ends every complete PNG file.
const pngEnd = "\x00\x00\x00\x00IEND\xaeB`\x82"

// pngTailSearch is how far from the end of a PNG file the IEND chunk is
// looked for, to tolerate a little trailing data.
const pngTailSearch = 4096

// probeResult is what probing one frame found.
type probeResult struct {
	size          int64
	modTime       time.Time
	dev, ino      uint64
	etag          string // a bucket object's, from its listing
	width, height int
	known         bool   // width and height were read from the header
	model         string // pixel format, as Go's decoder describes it
	err           error  // why the frame cannot be used
}

// probeAll reads the size and time of every candidate and, when header is
// set, its image header, with a bounded pool of goroutines. results[i]
// belongs to cands[i].
func probeAll(dir string, cands []*candidate, header bool) []probeResult {
	return probeEach(len(cands), probeWorkers, func(i int, sc *scratch) probeResult {
		return probe(dir, cands[i], header, sc)
	})
}

// probeEach runs probe for 0..n-1 on at most workers goroutines, each with
// its own scratch buffers.
func probeEach(n, workers int, probe func(i int, sc *scratch) probeResult) []probeResult {
	results := make([]probeResult, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			sc := &scratch{br: bufio.NewReaderSize(nil, 4096)}
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				results[i] = probe(i, sc)
			}
		})
	}
	wg.Wait()
	return results
}

// scratch is one worker's buffers, reused from file to file.
type scratch struct {
	br   *bufio.Reader
	tail [pngTailSearch]byte
}

// infoResult is what a candidate's file information says: size, time,
// device and inode, or that the file is empty.
func infoResult(info fs.FileInfo) probeResult {
	r := probeResult{size: info.Size(), modTime: info.ModTime()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		r.dev, r.ino = uint64(st.Dev), st.Ino
	}
	if r.size == 0 {
		r.err = errors.New("the file is empty (0 bytes)")
	}
	return r
}

// probe reads one candidate's info and, when header is set, its header.
func probe(dir string, c *candidate, header bool, sc *scratch) probeResult {
	info := c.info
	if info == nil {
		var err error
		if info, err = c.entry.Info(); err != nil {
			return probeResult{err: fmt.Errorf("cannot read its file information: %w", err)}
		}
	}
	r := infoResult(info)
	if r.err != nil || !header {
		return r
	}
	f, err := os.Open(filepath.Join(dir, c.name))
	if err != nil {
		r.err = fmt.Errorf("cannot open it: %w", err)
		return r
	}
	defer f.Close()
	r.width, r.height, r.model, r.known, r.err = readHeader(f, r.size, sc)
	return r
}

// readHeader reads the width and height from an image's header without
// decoding its pixels: from a file, or from an object in a bucket through
// ranged reads (so it reads from the start through a buffer, and jumps only
// for a TIFF's directory, a PNG's end and a WebP's flags). known is false
// (and err nil) when the header is valid but uses a feature Go's decoders do
// not describe; ffprobe will tell then.
func readHeader(src io.ReaderAt, size int64, sc *scratch) (w, h int, model string, known bool, err error) {
	// A failed read (a disk error, a bucket's network error or an object
	// changed since its listing) is not a bad header: say so.
	ra := &readErrs{ra: src}
	br := sc.br
	br.Reset(io.NewSectionReader(ra, 0, size))
	defer br.Reset(nil)
	peek, _ := br.Peek(16)
	var magicBuf [16]byte // br's buffer is overwritten as it reads on
	magic := magicBuf[:copy(magicBuf[:], peek)]

	var cfg image.Config
	format := ""
	if bytes.HasPrefix(magic, []byte("II*\x00")) || bytes.HasPrefix(magic, []byte("MM\x00*")) {
		// TIFF's header points anywhere in the file (often to its end):
		// give the decoder random access rather than a stream it would
		// have to read up to there.
		format = "tiff"
		cfg, err = tiff.DecodeConfig(io.NewSectionReader(ra, 0, size))
	} else {
		cfg, format, err = image.DecodeConfig(br)
	}
	if err != nil {
		if ra.err != nil {
			return 0, 0, "", false, fmt.Errorf("cannot read it: %w", ra.err)
		}
		return 0, 0, "", false, headerError(err, magic, size)
	}
	if format == "png" {
		if err := checkPNGEnd(ra, size, sc.tail[:]); err != nil {
			return 0, 0, "", false, err
		}
	}
	// RIFF....WEBPVP8X, then a flags byte whose bit 1 marks animation.
	if format == "webp" && len(magic) >= 16 && string(magic[12:16]) == "VP8X" {
		var flags [1]byte
		if _, err := ra.ReadAt(flags[:], 20); err == nil && flags[0]&0x02 != 0 {
			return 0, 0, "", false, errors.New("an animated WebP: ffmpeg decodes only still WebP frames; export each frame as a still image")
		}
	}
	return cfg.Width, cfg.Height, modelName(cfg.ColorModel), true, nil
}

// readErrs keeps the first error of its reads other than io.EOF.
type readErrs struct {
	ra  io.ReaderAt
	err error
}

func (r *readErrs) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.ra.ReadAt(p, off)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// modelName names a decoder's colour model the way a user would: frames
// that differ here decode to different pixel formats.
func modelName(m color.Model) string {
	switch m {
	case color.RGBAModel:
		return "8-bit RGBA"
	case color.RGBA64Model:
		return "16-bit RGBA"
	case color.NRGBAModel:
		return "8-bit RGB(A)"
	case color.NRGBA64Model:
		return "16-bit RGB(A)"
	case color.GrayModel:
		return "8-bit gray"
	case color.Gray16Model:
		return "16-bit gray"
	case color.YCbCrModel:
		return "YCbCr"
	case color.CMYKModel:
		return "CMYK"
	case color.AlphaModel, color.Alpha16Model:
		return "alpha"
	}
	if _, ok := m.(color.Palette); ok {
		return "palette"
	}
	return fmt.Sprintf("%T", m)
}

// headerError turns a decoder's error into one a user can act on. It
// returns nil for valid headers that use features the decoders lack.
func headerError(err error, magic []byte, size int64) error {
	var pngU png.UnsupportedError
	var jpegU jpeg.UnsupportedError
	var tiffU tiff.UnsupportedError
	switch {
	case errors.As(err, &pngU), errors.As(err, &jpegU), errors.As(err, &tiffU), errors.Is(err, bmp.ErrUnsupported):
		return nil
	case errors.Is(err, image.ErrFormat):
		return fmt.Errorf("not an image: its content does not start with a PNG, JPEG, TIFF, BMP or WebP header (it starts with %q)", magic)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("cut short: the file (%d bytes) ends inside its image header", size)
	}
	return fmt.Errorf("bad image header: %w", err)
}

// checkPNGEnd checks that a PNG file ends with its IEND chunk: a render
// that was interrupted leaves a file whose header is fine but whose end is
// missing.
func checkPNGEnd(f io.ReaderAt, size int64, buf []byte) error {
	// The IEND chunk is normally the last 12 bytes; look further back only
	// when it is not.
	for _, n := range []int64{min(size, int64(len(pngEnd))), min(size, int64(len(buf)))} {
		tail := buf[:n]
		if _, err := f.ReadAt(tail, size-n); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("cannot read its end: %w", err)
		}
		if bytes.Contains(tail, []byte(pngEnd)) {
			return nil
		}
	}
	return fmt.Errorf("cut short: the PNG file (%d bytes) does not end with its IEND chunk (was the render interrupted?)", size)
}
