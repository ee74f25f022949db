// Package mp4 reads what framefarm needs from an MP4 or QuickTime (MOV)
// file's first video track: codec, size, pixel format, time scale, sample
// count and sample timing. Nodes check every part they encode, and the
// coordinator every part it receives; starting ffprobe for that costs far
// more CPU than reading the few boxes that hold the answer.
//
// Read walks the top-level boxes with ReadAt and reads only moov (at most
// MaxMoov bytes), wherever it is; the media data is never read, except the
// first sample's frame header for ProRes (28 bytes), whose pixel format is
// only written there.
//
// The input may be hostile (the coordinator reads uploads from the network).
// Every count and size is checked against the bytes its box really holds
// before it is used, so a file cannot make Read panic, allocate more than
// its moov's actual size, recurse, or loop longer than its tables are.
package mp4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Track is what a file says of its first video track.
type Track struct {
	// Codec is ffprobe's codec_name ("h264", "hevc", "vp9", "av1",
	// "prores", "ffv1"), or the sample entry's fourcc for other codecs.
	Codec string
	// Width and Height are the sample entry's: the picture size, which
	// ffmpeg writes as its decoder reports it.
	Width, Height int
	// PixFmt is the pixel format ffprobe reports (pix_fmt), where the file
	// states it cheaply and exactly; "" when it does not (FFV1, AV1 4:4:4,
	// unusual bit depths, anything inconsistent).
	PixFmt string
	// Timescale is the track's time scale (mdhd): ticks per second, the
	// denominator of ffprobe's time_base.
	Timescale uint32
	// Samples is the number of samples (stsz), which is ffprobe's
	// nb_read_packets: each sample is one packet, and Read checks that
	// every one lies inside the file.
	Samples int64
	// Duration is the sum of the samples' durations (stts), in Timescale units.
	Duration int64
	// Compressor is the sample entry's compressor name, where ffmpeg's
	// muxer writes the encoder ("Lavc59.37.100 libx264"): what one plain
	// ffmpeg run keeps as the track's ENCODER tag in Matroska.
	Compressor string
	// Deltas are the distinct sample durations (stts), in the order they
	// first appear, so that a caller can check that frames are evenly
	// spaced (one delta). At most 16 are kept.
	Deltas []uint32
}

// MaxMoov is the largest moov box Read accepts. ffmpeg writes about 20
// bytes of tables per frame (a 75-frame part has a moov of 2 KB), so this
// leaves room for millions of frames, and bounds the memory a hostile file
// can make Read use.
const MaxMoov = 64 << 20

// maxDeltas bounds Track.Deltas: a caller wants to know whether there is
// one, and a hostile stts could list millions.
const maxDeltas = 16

// maxTopBoxes bounds the top-level boxes Read walks before it finds moov,
// so that a file made of millions of tiny boxes cannot keep it busy.
const maxTopBoxes = 4096

// ErrNotMP4 is wrapped by every error about the file's content: it is not
// an MP4/MOV file, or one Read cannot make sense of.
var ErrNotMP4 = errors.New("not a valid MP4/MOV file")

// ErrNoVideo means the file has no video track. Errors that wrap it also
// wrap ErrNotMP4.
var ErrNoVideo = errors.New("no video track")

// formatError is a problem with the file's content, named precisely.
type formatError struct {
	msg  string
	kind error // a sentinel besides ErrNotMP4, or nil
}

func (e *formatError) Error() string { return "mp4: " + e.msg }

func (e *formatError) Unwrap() []error {
	if e.kind != nil {
		return []error{ErrNotMP4, e.kind}
	}
	return []error{ErrNotMP4}
}

func errorf(format string, args ...any) error {
	return &formatError{msg: fmt.Sprintf(format, args...)}
}

// ReadFile reads the first video track of the file at path.
func ReadFile(path string) (Track, error) { return readPath(path, Read) }

// readPath runs read on the whole file at path, naming the path in its
// error.
func readPath[T any](path string, read func(r io.ReaderAt, size int64) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return zero, err
	}
	v, err := read(f, fi.Size())
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// Read reads the first video track of the size bytes of r.
func Read(r io.ReaderAt, size int64) (Track, error) {
	moov, err := readMoov(r, size)
	if err != nil {
		return Track{}, err
	}
	trak, err := videoTrak(moov)
	if err != nil {
		return Track{}, err
	}
	return readTrak(r, size, trak)
}

// readAt reads exactly len(p) bytes at off. The caller has checked that
// they lie inside the file, so a short read is an I/O error (the file
// shrank, say), not a format error.
func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("mp4: reading %d bytes at offset %d: %w", len(p), off, err)
}

// readMoov finds the top-level moov box and returns its payload.
func readMoov(r io.ReaderAt, size int64) ([]byte, error) {
	if size < 8 {
		return nil, errorf("file of %d bytes is too short to be an MP4/MOV file", size)
	}
	var hdr [16]byte
	for off, n := int64(0), 0; off < size; n++ {
		if n == maxTopBoxes {
			return nil, errorf("no moov box in the first %d top-level boxes", maxTopBoxes)
		}
		if size-off < 8 {
			return nil, errorf("%d stray bytes at offset %d, after the last box", size-off, off)
		}
		h := hdr[:min(16, size-off)]
		if err := readAt(r, h, off); err != nil {
			return nil, err
		}
		typ := string(h[4:8])
		if !printable(h[4:8]) {
			if n == 0 {
				return nil, errorf("not an MP4/MOV file: it does not start with a box")
			}
			return nil, errorf("bytes at offset %d are not a box header", off)
		}
		boxSize, hdrLen := int64(binary.BigEndian.Uint32(h)), int64(8)
		switch boxSize {
		case 0: // the box runs to the end of the file
			boxSize = size - off
		case 1: // a 64-bit size follows the type
			if len(h) < 16 {
				return nil, topError(n, typ, "%s box at offset %d: truncated header", typ, off)
			}
			u := binary.BigEndian.Uint64(h[8:16])
			if u > uint64(size-off) {
				return nil, topError(n, typ, "%s box at offset %d: its size (%d) runs past the end of the file (truncated?)", typ, off, u)
			}
			boxSize, hdrLen = int64(u), 16
		}
		if boxSize < hdrLen {
			return nil, topError(n, typ, "%s box at offset %d: size %d is smaller than its header", typ, off, boxSize)
		}
		if boxSize > size-off {
			return nil, topError(n, typ, "%s box at offset %d: its size (%d) runs past the end of the file (truncated?)", typ, off, boxSize)
		}
		if typ == "moov" {
			payload := boxSize - hdrLen
			if payload > MaxMoov {
				return nil, errorf("moov box of %d bytes is larger than the %d bytes accepted", payload, MaxMoov)
			}
			moov := make([]byte, payload)
			if err := readAt(r, moov, off+hdrLen); err != nil {
				return nil, err
			}
			return moov, nil
		}
		off += boxSize
	}
	return nil, errorf("no moov box (an unfinished file?)")
}

// topError is a problem with the header of top-level box n, of type typ.
// A first "box" that does not fit is more likely another kind of file
// whose first bytes happen to be printable (a NUT file, say).
func topError(n int, typ, format string, args ...any) error {
	if n == 0 && !topLevel[typ] {
		return errorf("not an MP4/MOV file: it does not start with a box")
	}
	return errorf(format, args...)
}

// topLevel are the boxes that start MP4 and MOV files.
var topLevel = map[string]bool{"ftyp": true, "moov": true, "mdat": true, "free": true, "skip": true, "wide": true, "pnot": true, "uuid": true}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// eachBox calls fn for each box in b, the payload of the box named parent,
// with the box's type and payload, until fn returns false. The type is a
// slice of b, not a string: a hostile moov can hold millions of boxes, and
// comparing string(typ) with a constant does not allocate.
func eachBox(b []byte, parent string, fn func(typ, payload []byte) bool) error {
	for len(b) > 0 {
		if len(b) < 8 {
			// QuickTime ends some lists with a 32-bit zero; anything this
			// short cannot be a box.
			return nil
		}
		size, hdrLen := uint64(binary.BigEndian.Uint32(b)), uint64(8)
		typ := b[4:8]
		switch size {
		case 0:
			size = uint64(len(b))
		case 1:
			if len(b) < 16 {
				return errorf("%s: %q box: truncated header", parent, typ)
			}
			size, hdrLen = binary.BigEndian.Uint64(b[8:16]), 16
		}
		if size < hdrLen || size > uint64(len(b)) {
			return errorf("%s: %q box: size %d does not fit in the %d bytes left", parent, typ, size, len(b))
		}
		if !fn(typ, b[hdrLen:size]) {
			return nil
		}
		b = b[size:]
	}
	return nil
}

// child returns the payload of the first box of type typ in b (the
// payload of parent), or nil if there is none.
func child(b []byte, parent, typ string) ([]byte, error) {
	var found []byte
	err := eachBox(b, parent, func(t, p []byte) bool {
		if string(t) == typ {
			found = p
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// need returns the payload of the box at path (each a child of the one
// before) under b, or an error that names the missing box.
func need(b []byte, parent string, path ...string) ([]byte, error) {
	for _, typ := range path {
		c, err := child(b, parent, typ)
		if err != nil {
			return nil, err
		}
		if c == nil {
			return nil, errorf("%s: no %s box", parent, typ)
		}
		b, parent = c, typ
	}
	return b, nil
}

// videoTrak returns the payload of the first trak whose handler is 'vide'.
func videoTrak(moov []byte) ([]byte, error) {
	var trak []byte
	var fragmented bool
	var bad error
	err := eachBox(moov, "moov", func(typ, p []byte) bool {
		switch string(typ) {
		case "mvex":
			fragmented = true
		case "trak":
			if trak != nil {
				return true
			}
			hdlr, err := need(p, "trak", "mdia", "hdlr")
			if err != nil {
				bad = err
				return false
			}
			// version+flags, then pre_defined (MP4) or the component
			// type (QuickTime), then the handler type.
			if len(hdlr) < 12 {
				bad = errorf("hdlr: truncated")
				return false
			}
			if string(hdlr[8:12]) == "vide" {
				trak = p
			}
		}
		return true
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	if fragmented {
		// The samples are in moof boxes that moov does not count.
		return nil, errorf("fragmented MP4 (mvex box) is not supported")
	}
	if trak == nil {
		return nil, &formatError{msg: ErrNoVideo.Error(), kind: ErrNoVideo}
	}
	return trak, nil
}

// fullBox splits a full box's payload into its version and the rest.
func fullBox(b []byte, name string) (byte, []byte, error) {
	if len(b) < 4 {
		return 0, nil, errorf("%s: truncated", name)
	}
	return b[0], b[4:], nil
}

func readTrak(r io.ReaderAt, size int64, trak []byte) (Track, error) {
	var t Track
	var stbl []byte
	var err error
	if t.Timescale, stbl, err = sampleTable(trak); err != nil {
		return t, err
	}
	stsd, err := need(stbl, "stbl", "stsd")
	if err != nil {
		return t, err
	}
	entry, err := readStsd(stsd, &t)
	if err != nil {
		return t, err
	}
	if entry.fourcc == "vp09" {
		// ffmpeg refuses such a file (it writes one when asked for a
		// VP9 format MP4 cannot describe, such as 4:4:0).
		c, err := child(entry.boxes, "vp09", "vpcC")
		if err != nil {
			return t, err
		}
		if c != nil && len(c) < 12 {
			return t, errorf("vpcC: empty VP codec configuration box")
		}
	}
	sz, err := readSizes(stbl)
	if err != nil {
		return t, err
	}
	t.Samples = int64(sz.count)
	timed, err := readStts(stbl, &t)
	if err != nil {
		return t, err
	}
	if timed != uint64(sz.count) {
		return t, errorf("stts times %d samples, stsz counts %d", timed, sz.count)
	}
	chunks, err := readChunks(stbl)
	if err != nil {
		return t, err
	}
	first, err := checkExtents(sz, chunks, size)
	if err != nil {
		return t, err
	}
	t.PixFmt = pixFmt(r, entry, first)
	return t, nil
}

// sampleTable returns a track's media time scale and its sample table
// (stbl) box.
func sampleTable(trak []byte) (uint32, []byte, error) {
	mdia, err := need(trak, "trak", "mdia")
	if err != nil {
		return 0, nil, err
	}
	ts, err := readMdhd(mdia)
	if err != nil {
		return 0, nil, err
	}
	stbl, err := need(mdia, "mdia", "minf", "stbl")
	if err != nil {
		return 0, nil, err
	}
	return ts, stbl, nil
}

func readMdhd(mdia []byte) (uint32, error) {
	mdhd, err := need(mdia, "mdia", "mdhd")
	if err != nil {
		return 0, err
	}
	v, b, err := fullBox(mdhd, "mdhd")
	if err != nil {
		return 0, err
	}
	var ts uint32
	switch v {
	case 0: // creation, modification (32-bit), time scale, duration
		if len(b) < 16 {
			return 0, errorf("mdhd: truncated")
		}
		ts = binary.BigEndian.Uint32(b[8:])
	case 1: // the same with 64-bit times
		if len(b) < 28 {
			return 0, errorf("mdhd: truncated")
		}
		ts = binary.BigEndian.Uint32(b[16:])
	default:
		return 0, errorf("mdhd: unknown version %d", v)
	}
	if ts == 0 {
		return 0, errorf("mdhd: time scale is 0")
	}
	return ts, nil
}

// sampleEntry is the first visual sample entry of stsd.
type sampleEntry struct {
	fourcc string
	// boxes is what follows the visual sample entry's fixed fields: avcC,
	// hvcC, colr, ...
	boxes []byte
}

// codecNames maps sample entry fourccs to ffprobe's codec names.
var codecNames = map[string]string{
	"avc1": "h264", "avc3": "h264",
	"hvc1": "hevc", "hev1": "hevc",
	"vp09": "vp9",
	"av01": "av1",
	"apch": "prores", "apcn": "prores", "apcs": "prores", "apco": "prores", "ap4h": "prores", "ap4x": "prores",
	"FFV1": "ffv1",
}

// visualEntryLen is the size of a visual sample entry's fixed fields, from
// its fourcc to its child boxes: the box header (8), reserved (6),
// data_reference_index (2), then 70 bytes of which width and height are at
// 24 and 26 (the same layout in MP4 and QuickTime).
const visualEntryLen = 86

func readStsd(stsd []byte, t *Track) (sampleEntry, error) {
	_, b, err := fullBox(stsd, "stsd")
	if err != nil {
		return sampleEntry{}, err
	}
	if len(b) < 4 {
		return sampleEntry{}, errorf("stsd: truncated")
	}
	if binary.BigEndian.Uint32(b) == 0 {
		return sampleEntry{}, errorf("stsd: no sample entry")
	}
	b = b[4:]
	// Only the first entry: ffmpeg writes one, and the first describes
	// the first sample, whose description ffprobe reports.
	if len(b) < 8 {
		return sampleEntry{}, errorf("stsd: truncated")
	}
	n := uint64(binary.BigEndian.Uint32(b))
	if n < visualEntryLen || n > uint64(len(b)) {
		return sampleEntry{}, errorf("stsd: sample entry of %d bytes does not fit in %d bytes, or is too short for a video entry", n, len(b))
	}
	e := b[:n]
	fourcc := e[4:8]
	t.Codec = codecNames[string(fourcc)]
	if t.Codec == "" {
		if printable(fourcc) {
			t.Codec = string(fourcc)
		} else {
			t.Codec = fmt.Sprintf("0x%08x", binary.BigEndian.Uint32(fourcc))
		}
	}
	t.Width = int(binary.BigEndian.Uint16(e[32:]))
	t.Height = int(binary.BigEndian.Uint16(e[34:]))
	// A Pascal string of at most 31 bytes at 50.
	if n := int(e[50]); n <= 31 {
		t.Compressor = strings.ToValidUTF8(string(e[51:51+n]), "")
	}
	return sampleEntry{fourcc: string(fourcc), boxes: e[visualEntryLen:]}, nil
}

// readStts sums the sample durations into t and returns how many samples
// stts times.
func readStts(stbl []byte, t *Track) (uint64, error) {
	stts, err := need(stbl, "stbl", "stts")
	if err != nil {
		return 0, err
	}
	_, b, err := fullBox(stts, "stts")
	if err != nil {
		return 0, err
	}
	if len(b) < 4 {
		return 0, errorf("stts: truncated")
	}
	n := uint64(binary.BigEndian.Uint32(b))
	b = b[4:]
	if n > uint64(len(b))/8 {
		return 0, errorf("stts: truncated (%d entries in %d bytes)", n, len(b))
	}
	var count, dur uint64
	for i := uint64(0); i < n; i++ {
		c := uint64(binary.BigEndian.Uint32(b[8*i:]))
		d := binary.BigEndian.Uint32(b[8*i+4:])
		if c == 0 {
			continue
		}
		count += c // at most 2^32 entries of at most 2^32-1: no overflow
		add := c * uint64(d)
		if dur+add < dur || dur+add > 1<<63-1 {
			return 0, errorf("stts: total duration overflows")
		}
		dur += add
		if !containsDelta(t.Deltas, d) && len(t.Deltas) < maxDeltas {
			t.Deltas = append(t.Deltas, d)
		}
	}
	t.Duration = int64(dur)
	return count, nil
}

func containsDelta(ds []uint32, d uint32) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

// sizes is the sample size table (stsz or stz2), kept as the box's bytes.
type sizes struct {
	count    uint32
	constant uint32 // all samples have this size, when not 0
	bits     int    // 4, 8, 16 or 32: the width of each entry in table
	table    []byte
}

func (s sizes) at(i uint32) uint32 {
	if s.constant != 0 {
		return s.constant
	}
	switch s.bits {
	case 4:
		v := s.table[i/2]
		if i%2 == 0 {
			return uint32(v >> 4)
		}
		return uint32(v & 15)
	case 8:
		return uint32(s.table[i])
	case 16:
		return uint32(binary.BigEndian.Uint16(s.table[2*i:]))
	}
	return binary.BigEndian.Uint32(s.table[4*i:])
}

func readSizes(stbl []byte) (sizes, error) {
	var s sizes
	stsz, err := child(stbl, "stbl", "stsz")
	if err != nil {
		return s, err
	}
	if stsz != nil {
		_, b, err := fullBox(stsz, "stsz")
		if err != nil {
			return s, err
		}
		if len(b) < 8 {
			return s, errorf("stsz: truncated")
		}
		s.constant, s.count, s.bits, s.table = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]), 32, b[8:]
		if s.constant == 0 && uint64(s.count) > uint64(len(s.table))/4 {
			return s, errorf("stsz: truncated (%d sizes in %d bytes)", s.count, len(s.table))
		}
		return s, nil
	}
	stz2, err := child(stbl, "stbl", "stz2")
	if err != nil {
		return s, err
	}
	if stz2 == nil {
		return s, errorf("stbl: no stsz or stz2 box")
	}
	_, b, err := fullBox(stz2, "stz2")
	if err != nil {
		return s, err
	}
	if len(b) < 8 {
		return s, errorf("stz2: truncated")
	}
	s.bits, s.count, s.table = int(b[3]), binary.BigEndian.Uint32(b[4:]), b[8:]
	if s.bits != 4 && s.bits != 8 && s.bits != 16 {
		return s, errorf("stz2: field size %d is not 4, 8 or 16", s.bits)
	}
	if (uint64(s.count)*uint64(s.bits)+7)/8 > uint64(len(s.table)) {
		return s, errorf("stz2: truncated (%d sizes in %d bytes)", s.count, len(s.table))
	}
	return s, nil
}

// chunks is the chunk offset table (stco or co64) and the sample-to-chunk
// table (stsc), kept as the boxes' bytes.
type chunks struct {
	n       uint32
	offsets []byte
	wide    bool // 64-bit offsets
	stsc    []byte
	nstsc   uint32
}

func (c chunks) offset(i uint32) uint64 {
	if c.wide {
		return binary.BigEndian.Uint64(c.offsets[8*i:])
	}
	return uint64(binary.BigEndian.Uint32(c.offsets[4*i:]))
}

func readChunks(stbl []byte) (chunks, error) {
	var c chunks
	stsc, err := need(stbl, "stbl", "stsc")
	if err != nil {
		return c, err
	}
	_, b, err := fullBox(stsc, "stsc")
	if err != nil {
		return c, err
	}
	if len(b) < 4 {
		return c, errorf("stsc: truncated")
	}
	c.nstsc, c.stsc = binary.BigEndian.Uint32(b), b[4:]
	if uint64(c.nstsc) > uint64(len(c.stsc))/12 {
		return c, errorf("stsc: truncated (%d entries in %d bytes)", c.nstsc, len(c.stsc))
	}
	name, width := "stco", uint64(4)
	co, err := child(stbl, "stbl", "stco")
	if err == nil && co == nil {
		name, width, c.wide = "co64", 8, true
		co, err = child(stbl, "stbl", "co64")
	}
	if err != nil {
		return c, err
	}
	if co == nil {
		return c, errorf("stbl: no stco or co64 box")
	}
	_, b, err = fullBox(co, name)
	if err != nil {
		return c, err
	}
	if len(b) < 4 {
		return c, errorf("%s: truncated", name)
	}
	c.n, c.offsets = binary.BigEndian.Uint32(b), b[4:]
	if uint64(c.n) > uint64(len(c.offsets))/width {
		return c, errorf("%s: truncated (%d offsets in %d bytes)", name, c.n, len(c.offsets))
	}
	return c, nil
}

// extent is where a sample lies in the file.
type extent struct{ off, size uint64 }

// checkExtents walks the chunks and checks that they hold exactly the
// samples stsz counts, each inside the file: ffprobe would count fewer
// packets in a file cut short. It returns where the first sample is.
func checkExtents(s sizes, c chunks, fileSize int64) (extent, error) {
	var first extent
	err := walkChunks(s, c, fileSize, func(_, sample, n, _ uint32, off, _ uint64) error {
		if sample == 0 && n > 0 {
			first = extent{off: off, size: uint64(s.at(0))}
		}
		return nil
	})
	return first, err
}

// walkChunks calls fn for every chunk in file order (its 1-based number,
// its first sample, how many samples it holds, its stsc sample
// description, its offset and size in bytes), after checking that it lies
// inside the file; at the end it checks that the chunks hold exactly the
// samples stsz counts. It loops once per chunk and once per listed sample
// size, so a hostile count that the tables do not back costs nothing.
func walkChunks(s sizes, c chunks, fileSize int64, fn func(ch, sample, n, desc uint32, off, bytes uint64) error) error {
	var sample uint32 // samples placed so far
	for e := uint32(0); e < c.nstsc && sample < s.count; e++ {
		row := c.stsc[12*e:]
		firstChunk, perChunk, desc := binary.BigEndian.Uint32(row), binary.BigEndian.Uint32(row[4:]), binary.BigEndian.Uint32(row[8:])
		if e == 0 && firstChunk != 1 {
			return errorf("stsc: first entry starts at chunk %d, not 1", firstChunk)
		}
		end := c.n + 1 // one past the last chunk of this entry, 1-based
		if e+1 < c.nstsc {
			next := binary.BigEndian.Uint32(c.stsc[12*(e+1):])
			if next <= firstChunk {
				return errorf("stsc: chunk numbers do not increase (%d after %d)", next, firstChunk)
			}
			end = min(next, end)
		}
		for ch := firstChunk; ch < end && sample < s.count; ch++ {
			n := perChunk
			if n > s.count-sample {
				return errorf("stsc: chunk %d holds %d samples, past the %d that stsz counts", ch, n, s.count)
			}
			off := c.offset(ch - 1)
			var bytes uint64
			if s.constant != 0 {
				bytes = uint64(n) * uint64(s.constant)
			} else {
				for i := sample; i < sample+n; i++ {
					bytes += uint64(s.at(i))
				}
			}
			if off > uint64(fileSize) || bytes > uint64(fileSize)-off {
				return errorf("chunk %d (samples %d to %d) lies past the end of the file (truncated?)", ch, sample+1, sample+n)
			}
			if err := fn(ch, sample, n, desc, off, bytes); err != nil {
				return err
			}
			sample += n
		}
	}
	if sample != s.count {
		return errorf("the chunks hold %d samples, stsz counts %d", sample, s.count)
	}
	return nil
}
