package ffmpeg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// ErrMatroskaLayout means ReadMatroskaTiming met a file it does not read
// (laced or unknown-size blocks, elements out of the order ffmpeg writes):
// ask ffprobe instead.
var ErrMatroskaLayout = errors.New("matroska layout not read in Go")

// ReadMatroskaTiming reads the timing of the first video track of a
// Matroska or WebM file from its element headers, without reading the
// frames' data or starting ffprobe (whose start alone costs ~100-190 ms,
// the longest step after a join). It fills the fields of a Probe that
// ffprobe would: Packets, PTS (sorted, in seconds), TimeBase and Duration
// (the segment's; Matroska keeps no track duration).
func ReadMatroskaTiming(path string) (Probe, error) {
	f, err := os.Open(path)
	if err != nil {
		return Probe{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Probe{}, err
	}
	return readMatroska(f, st.Size())
}

// Element IDs (with their length markers, as written).
const (
	mkvEBML        = 0x1A45DFA3
	mkvSegment     = 0x18538067
	mkvInfo        = 0x1549A966
	mkvTimestamp   = 0x2AD7B1
	mkvDuration    = 0x4489
	mkvTracks      = 0x1654AE6B
	mkvTrackEntry  = 0xAE
	mkvTrackNumber = 0xD7
	mkvTrackType   = 0x83
	mkvCluster     = 0x1F43B675
	mkvClusterTime = 0xE7
	mkvSimpleBlock = 0xA3
	mkvBlockGroup  = 0xA0
	mkvBlock       = 0xA1
)

type mkvReader struct {
	r   io.ReaderAt
	buf [16]byte
}

// header reads the element header at off: its ID, the offset of its data
// and the data's size.
func (m *mkvReader) header(off, end int64) (id uint32, data, size int64, err error) {
	n := min(int64(len(m.buf)), end-off)
	if n < 2 {
		return 0, 0, 0, fmt.Errorf("%w: element header cut at offset %d", ErrMatroskaLayout, off)
	}
	b := m.buf[:n]
	if _, err := m.r.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, 0, err
	}
	idLen := vintLen(b[0])
	if idLen == 0 || idLen > 4 || idLen >= len(b) {
		return 0, 0, 0, fmt.Errorf("%w: bad element ID at offset %d", ErrMatroskaLayout, off)
	}
	for _, c := range b[:idLen] {
		id = id<<8 | uint32(c)
	}
	sizeLen := vintLen(b[idLen])
	if sizeLen == 0 || idLen+sizeLen > len(b) {
		return 0, 0, 0, fmt.Errorf("%w: bad element size at offset %d", ErrMatroskaLayout, off)
	}
	v, unknown := vint(b[idLen : idLen+sizeLen])
	data = off + int64(idLen+sizeLen)
	if unknown || v > uint64(end-data) {
		return 0, 0, 0, fmt.Errorf("%w: element %x at offset %d has an unknown size or runs past its parent", ErrMatroskaLayout, id, off)
	}
	return id, data, int64(v), nil
}

// vintLen is the length of an EBML variable-size integer from its first byte.
func vintLen(b byte) int {
	for n := 1; n <= 8; n++ {
		if b&(0x80>>(n-1)) != 0 {
			return n
		}
	}
	return 0
}

// vint decodes an EBML variable-size integer, its length marker removed;
// unknown is set for the reserved all-ones value.
func vint(b []byte) (v uint64, unknown bool) {
	v = uint64(b[0]) & (0xFF >> len(b))
	ones := v == 0xFF>>len(b)
	for _, c := range b[1:] {
		v = v<<8 | uint64(c)
		ones = ones && c == 0xFF
	}
	return v, ones
}

func (m *mkvReader) read(off, n int64) ([]byte, error) {
	if n > 1<<20 {
		return nil, fmt.Errorf("%w: a %d-byte header element", ErrMatroskaLayout, n)
	}
	b := make([]byte, n)
	if _, err := m.r.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// children calls fn for each element held in b.
func children(b []byte, fn func(id uint32, data []byte) error) error {
	m := mkvReader{r: bytesReaderAt(b)}
	for off := int64(0); off < int64(len(b)); {
		id, data, size, err := m.header(off, int64(len(b)))
		if err != nil {
			return err
		}
		if err := fn(id, b[data:data+size]); err != nil {
			return err
		}
		off = data + size
	}
	return nil
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func uintOf(b []byte) (uint64, error) {
	if len(b) > 8 {
		return 0, fmt.Errorf("%w: a %d-byte integer", ErrMatroskaLayout, len(b))
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

func readMatroska(r io.ReaderAt, size int64) (Probe, error) {
	m := &mkvReader{r: r}
	id, data, sz, err := m.header(0, size)
	if err != nil {
		return Probe{}, err
	}
	if id != mkvEBML {
		return Probe{}, fmt.Errorf("%w: not an EBML file", ErrMatroskaLayout)
	}
	id, seg, segSize, err := m.header(data+sz, size)
	if err != nil {
		return Probe{}, err
	}
	if id != mkvSegment {
		return Probe{}, fmt.Errorf("%w: no segment after the EBML header", ErrMatroskaLayout)
	}
	scale := uint64(1000000)
	var duration float64
	var video uint64 // the first video track's number; 0 until Tracks is read
	var pts []int64  // in scale units
	for off, end := seg, seg+segSize; off < end; {
		id, data, sz, err := m.header(off, end)
		if err != nil {
			return Probe{}, err
		}
		off = data + sz
		switch id {
		case mkvInfo:
			b, err := m.read(data, sz)
			if err != nil {
				return Probe{}, err
			}
			err = children(b, func(id uint32, d []byte) error {
				switch id {
				case mkvTimestamp:
					v, err := uintOf(d)
					scale = v
					return err
				case mkvDuration:
					switch len(d) {
					case 4:
						duration = float64(math.Float32frombits(binary.BigEndian.Uint32(d)))
					case 8:
						duration = math.Float64frombits(binary.BigEndian.Uint64(d))
					default:
						return fmt.Errorf("%w: a %d-byte duration", ErrMatroskaLayout, len(d))
					}
				}
				return nil
			})
			if err != nil {
				return Probe{}, err
			}
		case mkvTracks:
			b, err := m.read(data, sz)
			if err != nil {
				return Probe{}, err
			}
			err = children(b, func(id uint32, d []byte) error {
				if id != mkvTrackEntry || video != 0 {
					return nil
				}
				var num, typ uint64
				err := children(d, func(id uint32, d []byte) error {
					var err error
					switch id {
					case mkvTrackNumber:
						num, err = uintOf(d)
					case mkvTrackType:
						typ, err = uintOf(d)
					}
					return err
				})
				if typ == 1 {
					video = num
				}
				return err
			})
			if err != nil {
				return Probe{}, err
			}
		case mkvCluster:
			if video == 0 || scale == 0 {
				return Probe{}, fmt.Errorf("%w: a cluster before the video track and time scale", ErrMatroskaLayout)
			}
			if pts, err = m.cluster(data, data+sz, video, pts); err != nil {
				return Probe{}, err
			}
		}
	}
	if video == 0 {
		return Probe{}, fmt.Errorf("%s: %w", "matroska", ErrNoVideo)
	}
	slices.Sort(pts)
	p := Probe{Packets: int64(len(pts)), TimeBase: fmt.Sprintf("%d/1000000000", scale),
		Duration: duration * float64(scale) / 1e9, PTS: make([]float64, len(pts))}
	for i, t := range pts {
		p.PTS[i] = float64(t) * float64(scale) / 1e9
	}
	return p, nil
}

// cluster appends the timestamps of the video track's blocks in the
// cluster [off, end) to pts, reading only element and block headers.
func (m *mkvReader) cluster(off, end int64, video uint64, pts []int64) ([]int64, error) {
	var base int64
	haveBase := false
	block := func(data, sz int64) error {
		if !haveBase {
			return fmt.Errorf("%w: a block before its cluster's timestamp", ErrMatroskaLayout)
		}
		b := m.buf[:min(int64(len(m.buf)), sz)]
		if len(b) == 0 {
			return fmt.Errorf("%w: empty block at offset %d", ErrMatroskaLayout, data)
		}
		if _, err := m.r.ReadAt(b, data); err != nil {
			return err
		}
		n := vintLen(b[0])
		if n == 0 || n+3 > len(b) {
			return fmt.Errorf("%w: bad block header at offset %d", ErrMatroskaLayout, data)
		}
		track, _ := vint(b[:n])
		if track != video {
			return nil
		}
		if b[n+2]&0x06 != 0 {
			return fmt.Errorf("%w: laced video block at offset %d", ErrMatroskaLayout, data)
		}
		pts = append(pts, base+int64(int16(binary.BigEndian.Uint16(b[n:n+2]))))
		return nil
	}
	for off < end {
		id, data, sz, err := m.header(off, end)
		if err != nil {
			return nil, err
		}
		off = data + sz
		switch id {
		case mkvClusterTime:
			b, err := m.read(data, sz)
			if err != nil {
				return nil, err
			}
			v, err := uintOf(b)
			if err != nil {
				return nil, err
			}
			base, haveBase = int64(v), true
		case mkvSimpleBlock:
			if err := block(data, sz); err != nil {
				return nil, err
			}
		case mkvBlockGroup:
			for o, e := data, data+sz; o < e; {
				id, d, s, err := m.header(o, e)
				if err != nil {
					return nil, err
				}
				o = d + s
				if id == mkvBlock {
					if err := block(d, s); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return pts, nil
}
