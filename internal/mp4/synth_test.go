package mp4

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// Builders of boxes, for files that ffmpeg does not write but Read must
// still handle (64-bit sizes, co64, stz2) or refuse (hostile ones).

func be32(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.BigEndian.PutUint32(b[4*i:], v)
	}
	return b
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func mkbox(typ string, parts ...[]byte) []byte {
	body := slices.Concat(parts...)
	return slices.Concat(be32(uint32(8+len(body))), []byte(typ), body)
}

// mkfull is a full box: version, 24 bits of flags, then parts.
func mkfull(typ string, version byte, parts ...[]byte) []byte {
	return mkbox(typ, append([]byte{version, 0, 0, 0}, slices.Concat(parts...)...))
}

// synth describes a small file with one video track.
type synth struct {
	fourcc     string
	w, h       uint16
	sizes      []uint32 // one per sample
	deltas     []uint32 // one per sample
	perChunk   int      // samples per chunk; must divide len(sizes)
	moovFirst  bool
	largeMdat  bool // the mdat header uses a 64-bit size
	mdatToEnd  bool // the mdat header says size 0 (moovFirst only)
	co64       bool
	stz2       int // field size of an stz2 box instead of stsz; 0: stsz
	mdhdV1     bool
	timescale  uint32   // the media time scale; 24 unless set
	compressor string   // the sample entry's compressor name
	handler    string   // "vide" unless set
	extra      [][]byte // more boxes in stbl
	entry      [][]byte // child boxes of the sample entry
}

func (s synth) visualEntry() []byte {
	fixed := make([]byte, 78) // reserved(6) dref(2) then the visual fields
	binary.BigEndian.PutUint16(fixed[6:], 1)
	binary.BigEndian.PutUint16(fixed[24:], s.w)
	binary.BigEndian.PutUint16(fixed[26:], s.h)
	fixed[42] = byte(copy(fixed[43:74], s.compressor))
	return mkbox(s.fourcc, fixed, slices.Concat[[]byte](s.entry...))
}

func (s synth) moov(dataOff uint64) []byte {
	var stts [][]byte
	var n uint32
	for i, d := range s.deltas {
		if i > 0 && d == s.deltas[i-1] {
			binary.BigEndian.PutUint32(stts[len(stts)-1], binary.BigEndian.Uint32(stts[len(stts)-1])+1)
			continue
		}
		stts = append(stts, be32(1, d))
		n++
	}
	var sz []byte
	if s.stz2 != 0 {
		var table []byte
		for i, v := range s.sizes {
			switch s.stz2 {
			case 4:
				if i%2 == 0 {
					table = append(table, byte(v<<4))
				} else {
					table[len(table)-1] |= byte(v & 15)
				}
			case 8:
				table = append(table, byte(v))
			case 16:
				table = binary.BigEndian.AppendUint16(table, uint16(v))
			}
		}
		sz = mkfull("stz2", 0, []byte{0, 0, 0, byte(s.stz2)}, be32(uint32(len(s.sizes))), table)
	} else {
		sz = mkfull("stsz", 0, be32(0, uint32(len(s.sizes))), be32(s.sizes...))
	}
	var offsets []uint64
	off := dataOff
	for i, v := range s.sizes {
		if i%s.perChunk == 0 {
			offsets = append(offsets, off)
		}
		off += uint64(v)
	}
	var co []byte
	if s.co64 {
		var b []byte
		for _, o := range offsets {
			b = append(b, be64(o)...)
		}
		co = mkfull("co64", 0, be32(uint32(len(offsets))), b)
	} else {
		var b []byte
		for _, o := range offsets {
			b = append(b, be32(uint32(o))...)
		}
		co = mkfull("stco", 0, be32(uint32(len(offsets))), b)
	}
	scale := cmp.Or(s.timescale, 24)
	mdhd := mkfull("mdhd", 0, be32(0, 0, scale, uint32(len(s.sizes))), be32(0))
	if s.mdhdV1 {
		mdhd = mkfull("mdhd", 1, be64(0), be64(0), be32(scale), be64(uint64(len(s.sizes))), be32(0))
	}
	handler := s.handler
	if handler == "" {
		handler = "vide"
	}
	stbl := mkbox("stbl", slices.Concat(
		mkfull("stsd", 0, be32(1), s.visualEntry()),
		mkfull("stts", 0, be32(n), slices.Concat[[]byte](stts...)),
		sz,
		mkfull("stsc", 0, be32(1, 1, uint32(s.perChunk), 1)),
		co,
		slices.Concat[[]byte](s.extra...),
	))
	trak := mkbox("trak",
		mkfull("tkhd", 0, make([]byte, 80)),
		mkbox("mdia", mdhd, mkfull("hdlr", 0, be32(0), []byte(handler), make([]byte, 13)), mkbox("minf", stbl)),
	)
	mvhd := make([]byte, 96)
	binary.BigEndian.PutUint32(mvhd[8:], 1000) // ffmpeg's movie time scale
	return mkbox("moov", mkfull("mvhd", 0, mvhd), trak)
}

func (s synth) build() []byte {
	if s.fourcc == "" {
		s.fourcc = "avc1"
	}
	if s.perChunk == 0 {
		s.perChunk = 1
	}
	ftyp := mkbox("ftyp", []byte("isom"), be32(512), []byte("isomiso2mp41"))
	var data []byte
	for i, v := range s.sizes {
		data = append(data, bytes.Repeat([]byte{byte(i)}, int(v))...)
	}
	mdatHdr := func() []byte {
		switch {
		case s.largeMdat:
			return slices.Concat(be32(1), []byte("mdat"), be64(uint64(16+len(data))))
		case s.mdatToEnd:
			return slices.Concat(be32(0), []byte("mdat"))
		}
		return slices.Concat(be32(uint32(8+len(data))), []byte("mdat"))
	}()
	if s.moovFirst {
		moovLen := len(s.moov(0))
		moov := s.moov(uint64(len(ftyp) + moovLen + len(mdatHdr)))
		return slices.Concat(ftyp, moov, mdatHdr, data)
	}
	return slices.Concat(ftyp, mdatHdr, data, s.moov(uint64(len(ftyp)+len(mdatHdr))))
}

func readBytes(b []byte) (Track, error) { return Read(bytes.NewReader(b), int64(len(b))) }

func TestSynthetic(t *testing.T) {
	sizes := []uint32{5, 3, 7, 1, 2, 9}
	ones := []uint32{1, 1, 1, 1, 1, 1}
	for _, tc := range []struct {
		name string
		s    synth
		want Track
	}{
		{"moov at the end", synth{w: 320, h: 240, sizes: sizes, deltas: ones},
			Track{Codec: "h264", Width: 320, Height: 240, Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"moov first", synth{w: 8, h: 6, sizes: sizes, deltas: ones, moovFirst: true},
			Track{Codec: "h264", Width: 8, Height: 6, Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"64-bit mdat size, co64, mdhd v1", synth{fourcc: "hvc1", sizes: sizes, deltas: ones, largeMdat: true, co64: true, mdhdV1: true},
			Track{Codec: "hevc", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"mdat to the end of the file", synth{fourcc: "vp09", sizes: sizes, deltas: ones, moovFirst: true, mdatToEnd: true},
			Track{Codec: "vp9", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"chunks of 3", synth{fourcc: "av01", sizes: sizes, deltas: ones, perChunk: 3},
			Track{Codec: "av1", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"stz2 4-bit", synth{fourcc: "apch", sizes: sizes, deltas: ones, stz2: 4},
			Track{Codec: "prores", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"stz2 8-bit", synth{fourcc: "FFV1", sizes: sizes, deltas: ones, stz2: 8, perChunk: 2},
			Track{Codec: "ffv1", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"stz2 16-bit", synth{sizes: sizes, deltas: ones, stz2: 16, perChunk: 6},
			Track{Codec: "h264", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"uneven deltas", synth{sizes: sizes, deltas: []uint32{1001, 1001, 1000, 1001, 1002, 1000}},
			Track{Codec: "h264", Timescale: 24, Samples: 6, Duration: 6005, Deltas: []uint32{1001, 1000, 1002}}},
		{"other codec", synth{fourcc: "mp4v", sizes: sizes, deltas: ones},
			Track{Codec: "mp4v", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"unprintable fourcc", synth{fourcc: "\x00\x01ab", sizes: sizes, deltas: ones},
			Track{Codec: "0x00016162", Timescale: 24, Samples: 6, Duration: 6, Deltas: []uint32{1}}},
		{"no samples", synth{},
			Track{Codec: "h264", Timescale: 24}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readBytes(tc.s.build())
			if err != nil {
				t.Fatal(err)
			}
			if !trackEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func trackEqual(a, b Track) bool {
	return a.Codec == b.Codec && a.Width == b.Width && a.Height == b.Height && a.PixFmt == b.PixFmt &&
		a.Timescale == b.Timescale && a.Samples == b.Samples && a.Duration == b.Duration && slices.Equal(a.Deltas, b.Deltas)
}

// TestBroken: files that are wrong in one way each get an error that wraps
// ErrNotMP4 and says what is wrong.
func TestBroken(t *testing.T) {
	sizes := []uint32{5, 3, 7, 1}
	ones := []uint32{1, 1, 1, 1}
	good := synth{sizes: sizes, deltas: ones, moovFirst: true}
	cut := func(b []byte, n int) []byte { return b[:len(b)-n] }
	patch := func(s synth, box string, off int, v uint32) []byte {
		b := s.build()
		i := bytes.Index(b, []byte(box))
		binary.BigEndian.PutUint32(b[i+4+off:], v)
		return b
	}
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"last sample cut short", cut(good.build(), 1), "past the end of the file"},
		{"moov cut short", cut(synth{sizes: sizes, deltas: ones}.build(), 1), "moov box at offset"},
		{"no video", synth{sizes: sizes, deltas: ones, handler: "soun"}.build(), "no video track"},
		{"fragmented", synth{sizes: sizes, deltas: ones, extra: nil}.withMoovChild(mkbox("mvex")), "fragmented"},
		{"stts counts fewer", synth{sizes: sizes, deltas: ones[:3]}.build(), "stts times 3 samples, stsz counts 4"},
		{"stts entries past its box", patch(good, "stts", 4, 1<<30), "stts: truncated"},
		{"stsz sizes past its box", patch(good, "stsz", 8, 1<<30), "stsz: truncated"},
		{"stsz and stts count 2^32-1 samples of one size", func() []byte {
			b := patch(good, "stsz", 4, 1)
			i := bytes.Index(b, []byte("stsz"))
			binary.BigEndian.PutUint32(b[i+12:], 0xffffffff)
			i = bytes.Index(b, []byte("stts"))
			binary.BigEndian.PutUint32(b[i+12:], 0xffffffff)
			return b
		}(), "the chunks hold 4 samples, stsz counts 4294967295"},
		{"chunk offset past the end", patch(good, "stco", 8, 0xfffffff0), "chunk 1 (samples 1 to 1) lies past the end"},
		{"too many samples per chunk", patch(good, "stsc", 12, 0xffffffff), "stsc: chunk 1 holds 4294967295 samples"},
		{"stsc starts at chunk 2", patch(good, "stsc", 8, 2), "first entry starts at chunk 2"},
		{"time scale 0", patch(good, "mdhd", 12, 0), "mdhd: time scale is 0"},
		{"no sample entry", patch(good, "stsd", 4, 0), "stsd: no sample entry"},
		{"sample entry too long", patch(good, "avc1", -8, 1000), "stsd: sample entry of 1000 bytes"},
		{"empty vpcC", synth{fourcc: "vp09", sizes: sizes, deltas: ones, entry: [][]byte{mkfull("vpcC", 1)}}.build(), "vpcC: empty"},
		{"child box past its parent", patch(good, "stbl", -8, 1<<20), "minf: \"stbl\" box: size 1048576 does not fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readBytes(tc.file)
			if !errors.Is(err, ErrNotMP4) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one that wraps ErrNotMP4 and says %q", err, tc.want)
			}
		})
	}
}

// withMoovChild builds the file with box added at the end of moov.
func (s synth) withMoovChild(box []byte) []byte {
	b := s.build()
	i := bytes.Index(b, []byte("moov")) - 4
	n := binary.BigEndian.Uint32(b[i:])
	binary.BigEndian.PutUint32(b[i:], n+uint32(len(box)))
	return slices.Concat(b[:i+int(n)], box, b[i+int(n):])
}

// zeros is a ReaderAt of size bytes that are all zero but for head, at
// the start: a huge file that takes no memory.
type zeros struct {
	head []byte
	size int64
}

func (z zeros) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(z.head)) {
		copy(p, z.head[off:])
	}
	if n := z.size - off; int64(len(p)) > n {
		return int(max(n, 0)), io.EOF
	}
	return len(p), nil
}

// TestHostileSizes: length fields that claim more than the file holds cost
// neither memory nor time.
func TestHostileSizes(t *testing.T) {
	// A moov over MaxMoov, in a file that really is that large.
	huge := zeros{head: slices.Concat(be32(0), []byte("moov")), size: MaxMoov + 100}
	// A 64-bit moov size far past the end of the file.
	far := zeros{head: slices.Concat(be32(1), []byte("moov"), be64(1<<62)), size: 1 << 20}
	// Many distinct deltas in a real stts.
	many := make([]uint32, 100_000)
	for i := range many {
		many[i] = uint32(i + 1)
	}
	deltas := synth{sizes: make([]uint32, len(many)), deltas: many}.build()
	// Every sample size 0 is legal, and takes no bytes.
	for _, tc := range []struct {
		name string
		r    interface {
			ReadAt([]byte, int64) (int, error)
		}
		size    int64
		wantErr string
	}{
		{"moov over MaxMoov", huge, huge.size, "larger than"},
		{"moov size past the end", far, far.size, "runs past the end"},
		{"100 000 distinct deltas", bytes.NewReader(deltas), int64(len(deltas)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got, err := Read(tc.r, tc.size)
			runtime.ReadMemStats(&after)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNotMP4) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if len(got.Deltas) != maxDeltas || got.Samples != int64(len(many)) {
				t.Fatalf("%d samples, %d deltas; want %d and %d", got.Samples, len(got.Deltas), len(many), maxDeltas)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(2*min(tc.size, MaxMoov/64))+1<<20 {
				t.Fatalf("Read allocated %d bytes for a file of %d", alloc, tc.size)
			}
		})
	}
}

// TestTruncated: every strict prefix of a real file is refused, whether
// moov is at its end (then moov is cut) or at its start (then a sample is).
func TestTruncated(t *testing.T) {
	for _, f := range seedFiles(t) {
		b := mustRead(t, f)
		if _, err := readBytes(b); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for n := range len(b) {
			if tr, err := readBytes(b[:n]); !errors.Is(err, ErrNotMP4) {
				t.Fatalf("%s cut to %d of %d bytes: got %+v, %v; want an error that wraps ErrNotMP4", f, n, len(b), tr, err)
			}
		}
	}
}
