package mp4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// ErrCannotJoin means Concat cannot join the parts by rewriting their
// tables: they differ in codec configuration, time scale or initial delay,
// or hold boxes Concat does not rewrite. The parts are not at fault; join
// them another way (ffmpeg's concat demuxer).
var ErrCannotJoin = errors.New("mp4: the parts cannot be joined by table rewriting")

func cannotJoin(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCannotJoin, fmt.Sprintf(format, args...))
}

// JoinOptions say how Concat lays out the joined file.
type JoinOptions struct {
	// Timescale is the joined track's time scale (ticks per second); 0
	// keeps the first part's. A part timed in a scale that divides it is
	// rescaled exactly (every duration, offset and edit multiplied by the
	// ratio); any other is ErrCannotJoin.
	Timescale uint32
	// FastStart puts the moov before the media data, so that a player
	// reading the file from the start (a browser over HTTP) can begin
	// before it has the whole file, as ffmpeg's -movflags +faststart does.
	FastStart bool
}

// Concat writes the parts, in order, to w as one file of the same
// container: the first part's ftyp, one mdat with every part's samples, and
// the first part's moov with its sample tables and durations rewritten to
// hold all the samples (before the mdat with FastStart, after it without).
// Each sample keeps its bytes, its duration, its composition offset and its
// sync flag, so the joined track presents every frame of every part, one
// after the other, at exactly the times one encode of all the frames would:
// what ffmpeg's concat demuxer does with stream copy, without starting
// ffmpeg, without demuxing every packet, and without the demuxer's rounding
// of part boundaries to microseconds.
//
// The parts must be single-track files with the same sample description
// (what one encoder with one set of settings writes, e.g. ffmpeg's mp4 and
// mov muxers) and time scales that divide o.Timescale; anything else is
// ErrCannotJoin, reported before anything is written.
func Concat(w io.Writer, paths []string, o JoinOptions) error {
	if len(paths) == 0 {
		return errors.New("mp4: no parts to join")
	}
	parts := make([]*joinPart, len(paths))
	for i, p := range paths {
		jp, err := readJoinPart(p)
		if err != nil {
			return err
		}
		if o.Timescale == 0 {
			o.Timescale = jp.timescale
		}
		if err := jp.rescale(o.Timescale); err != nil {
			return err
		}
		if i > 0 {
			if err := parts[0].compatible(jp); err != nil {
				return err
			}
		}
		parts[i] = jp
	}
	var data uint64
	for _, p := range parts {
		data += p.bytes
	}
	ftyp := parts[0].ftyp
	mdat := binary.BigEndian.AppendUint32(nil, 1) // the 64-bit size follows
	mdat = append(mdat, "mdat"...)
	mdat = binary.BigEndian.AppendUint64(mdat, 16+data)
	// The moov's size does not depend on where the data starts (chunk
	// offsets are always 64-bit), so a first build gives the start of the
	// data behind a leading moov.
	dataStart := uint64(len(ftyp) + len(mdat))
	moov, err := joinedMoov(parts, dataStart)
	if err != nil {
		return err
	}
	head := [][]byte{ftyp, mdat}
	if o.FastStart {
		if moov, err = joinedMoov(parts, dataStart+uint64(len(moov))); err != nil {
			return err
		}
		head = [][]byte{ftyp, moov, mdat}
	}
	for _, b := range head {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	for _, p := range parts {
		if err := p.copyChunks(w); err != nil {
			return err
		}
	}
	if !o.FastStart {
		_, err = w.Write(moov)
	}
	return err
}

// joinPart is what Concat needs of one part.
type joinPart struct {
	path string
	ftyp []byte // the whole ftyp box
	moov []byte // moov's payload
	// stsd is the sample description box's payload; timescale is mdhd's;
	// mediaTime is the edit list's media time (-1 without an edit list).
	stsd      []byte
	timescale uint32
	mediaTime int64
	stts      []uint32 // pairs: count, delta
	cttsVer   byte
	ctts      []uint32 // pairs: count, offset; nil without ctts
	stss      []uint32 // sync sample numbers; nil when every sample is one
	hasStss   bool
	sdtp      []byte // one dependency byte per sample; nil without sdtp
	// btrt is the sample entry's bit rate box (buffer size, maximum and
	// average bit rate), zeros without one: ffmpeg writes each part's own.
	btrt     [3]uint32
	sizes    []uint32
	chunks   []extent // every chunk's place in the file
	perChunk []uint32 // samples in each chunk
	bytes    uint64   // sum of the chunks' sizes
	duration uint64   // sum of the samples' durations
}

// stblKnown are the sample table boxes Concat rewrites. Another one
// (sample groups, dependency flags, ...) would describe samples in a way
// Concat does not carry over.
var stblKnown = map[string]bool{"stsd": true, "stts": true, "ctts": true, "stss": true, "stsz": true, "stsc": true, "stco": true, "co64": true, "sdtp": true}

func readJoinPart(path string) (*joinPart, error) {
	p, err := readPath(path, parseJoinPart)
	if err != nil {
		return nil, err
	}
	p.path = path
	return p, nil
}

func parseJoinPart(r io.ReaderAt, size int64) (*joinPart, error) {
	p := &joinPart{mediaTime: -1}
	var h [8]byte
	if err := readAt(r, h[:], 0); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if string(h[4:8]) != "ftyp" || n < 8 || n > 4096 || int64(n) > size {
		return nil, cannotJoin("the file does not start with an ftyp box")
	}
	p.ftyp = make([]byte, n)
	if err := readAt(r, p.ftyp, 0); err != nil {
		return nil, err
	}
	moov, err := readMoov(r, size)
	if err != nil {
		return nil, err
	}
	p.moov = moov
	traks := 0
	if err := eachBox(moov, "moov", func(typ, _ []byte) bool {
		traks += btoi(string(typ) == "trak")
		return true
	}); err != nil {
		return nil, err
	}
	if traks != 1 {
		return nil, cannotJoin("%d tracks, not one", traks)
	}
	trak, err := videoTrak(moov)
	if err != nil {
		return nil, err
	}
	if p.mediaTime, err = readEdit(trak); err != nil {
		return nil, err
	}
	var stbl []byte
	if p.timescale, stbl, err = sampleTable(trak); err != nil {
		return nil, err
	}
	var unknown string
	if err := eachBox(stbl, "stbl", func(typ, _ []byte) bool {
		if !stblKnown[string(typ)] {
			unknown = string(typ)
		}
		return true
	}); err != nil {
		return nil, err
	}
	if unknown != "" {
		return nil, cannotJoin("a %q box in its sample table", unknown)
	}
	if p.stsd, err = need(stbl, "stbl", "stsd"); err != nil {
		return nil, err
	}
	if _, b, err := fullBox(p.stsd, "stsd"); err != nil || len(b) < 4 || binary.BigEndian.Uint32(b) != 1 {
		return nil, cannotJoin("not exactly one sample description")
	}
	sz, err := readSizes(stbl)
	if err != nil {
		return nil, err
	}
	// A constant sample size lets a short table count many samples: every
	// one must still fit in the file before one is listed.
	if uint64(sz.count)*uint64(max(sz.constant, 1)) > uint64(size) {
		return nil, errorf("stsz: %d samples of %d bytes do not fit in a file of %d", sz.count, sz.constant, size)
	}
	p.sizes = make([]uint32, sz.count)
	for i := range p.sizes {
		p.sizes[i] = sz.at(uint32(i))
	}
	if p.stts, err = readPairs(stbl, "stts"); err != nil {
		return nil, err
	}
	var timed uint64
	for i := 0; i < len(p.stts); i += 2 {
		timed += uint64(p.stts[i])
		p.duration += uint64(p.stts[i]) * uint64(p.stts[i+1])
	}
	if timed != uint64(sz.count) {
		return nil, errorf("stts times %d samples, stsz counts %d", timed, sz.count)
	}
	if ctts, _ := child(stbl, "stbl", "ctts"); len(ctts) > 0 {
		p.cttsVer = ctts[0]
		if p.ctts, err = readPairs(stbl, "ctts"); err != nil {
			return nil, err
		}
		var n uint64
		for i := 0; i < len(p.ctts); i += 2 {
			n += uint64(p.ctts[i])
		}
		if n != uint64(sz.count) {
			return nil, errorf("ctts covers %d samples, stsz counts %d", n, sz.count)
		}
	}
	if stss, _ := child(stbl, "stbl", "stss"); stss != nil {
		p.hasStss = true
		if p.stss, err = readTable(stss, "stss", 1); err != nil {
			return nil, err
		}
		p.stss = slices.DeleteFunc(p.stss, func(n uint32) bool { return n == 0 || n > sz.count })
	}
	if sdtp, _ := child(stbl, "stbl", "sdtp"); sdtp != nil {
		if len(sdtp) != 4+int(sz.count) {
			return nil, cannotJoin("sdtp holds %d bytes for %d samples", len(sdtp)-4, sz.count)
		}
		p.sdtp = sdtp[4:]
	}
	if p.btrt, err = readBtrt(p.stsd); err != nil {
		return nil, err
	}
	ch, err := readChunks(stbl)
	if err != nil {
		return nil, err
	}
	if err := p.placeChunks(sz, ch, size); err != nil {
		return nil, err
	}
	return p, nil
}

// placeChunks records every chunk's extent and sample count (walkChunks
// checks that the chunks hold exactly the samples, inside the file), and
// checks that no two overlap.
func (p *joinPart) placeChunks(s sizes, c chunks, fileSize int64) error {
	err := walkChunks(s, c, fileSize, func(_, _, n, desc uint32, off, bytes uint64) error {
		if desc != 1 {
			return cannotJoin("stsc names sample description %d", desc)
		}
		p.chunks = append(p.chunks, extent{off: off, size: bytes})
		p.perChunk = append(p.perChunk, n)
		p.bytes += bytes
		return nil
	})
	if err != nil {
		return err
	}
	byOffset := slices.Clone(p.chunks)
	slices.SortFunc(byOffset, func(a, b extent) int { return cmpU64(a.off, b.off) })
	for i := 1; i < len(byOffset); i++ {
		if byOffset[i-1].off+byOffset[i-1].size > byOffset[i].off {
			return errorf("chunks overlap at offset %d", byOffset[i].off)
		}
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compatible reports whether q can follow p in one track: the same
// sample description (but for the bit rates) and time scale.
func (p *joinPart) compatible(q *joinPart) error {
	switch {
	case !bytes.Equal(rewriteBtrt(p.stsd, nil), rewriteBtrt(q.stsd, nil)):
		return cannotJoin("%s has another sample description (codec configuration) than the first part", q.path)
	case p.timescale != q.timescale:
		return cannotJoin("%s has time scale %d, the first part %d", q.path, q.timescale, p.timescale)
	case p.ctts != nil && q.ctts != nil && p.cttsVer != q.cttsVer:
		return cannotJoin("%s has composition offsets of another version than the first part", q.path)
	}
	return nil
}

// rescale times the part in ticks of scale, which its own time scale must
// divide: every duration, composition offset and the edit's media time are
// multiplied by the ratio, so each sample keeps its exact time.
func (p *joinPart) rescale(scale uint32) error {
	if p.timescale == scale {
		return nil
	}
	if p.timescale == 0 || scale%p.timescale != 0 {
		return cannotJoin("%s has time scale %d, which does not divide the joined track's %d", p.path, p.timescale, scale)
	}
	k := uint64(scale / p.timescale)
	mul := func(v uint32) (uint32, bool) { r := uint64(v) * k; return uint32(r), r <= 1<<32-1 }
	for i := 1; i < len(p.stts); i += 2 {
		d, ok := mul(p.stts[i])
		if !ok {
			return cannotJoin("%s: a sample duration of %d ticks does not fit at time scale %d", p.path, p.stts[i], scale)
		}
		p.stts[i] = d
	}
	for i := 1; i < len(p.ctts); i += 2 {
		o := int64(p.ctts[i])
		if p.cttsVer == 1 {
			o = int64(int32(p.ctts[i]))
		}
		o *= int64(k)
		if o < -1<<31 || o > 1<<31-1 || (p.cttsVer == 0 && o > 1<<32-1) {
			return cannotJoin("%s: a composition offset does not fit at time scale %d", p.path, scale)
		}
		p.ctts[i] = uint32(o)
	}
	if p.mediaTime > 0 {
		p.mediaTime *= int64(k)
	}
	p.duration *= k
	p.timescale = scale
	return nil
}

// readEdit returns the media time of the track's edit list, -1 without
// one. Only the one kind ffmpeg writes is joined: a single edit at normal
// rate (it skips the encoder's initial delay).
func readEdit(trak []byte) (int64, error) {
	edts, err := child(trak, "trak", "edts")
	if err != nil || edts == nil {
		return -1, err
	}
	elst, err := need(edts, "edts", "elst")
	if err != nil {
		return 0, err
	}
	v, b, err := fullBox(elst, "elst")
	if err != nil {
		return 0, err
	}
	if len(b) < 4 || binary.BigEndian.Uint32(b) != 1 {
		return 0, cannotJoin("an edit list of other than one edit")
	}
	b = b[4:]
	var mt int64
	switch {
	case v == 0 && len(b) >= 12:
		mt, b = int64(int32(binary.BigEndian.Uint32(b[4:]))), b[8:]
	case v == 1 && len(b) >= 20:
		mt, b = int64(binary.BigEndian.Uint64(b[8:])), b[16:]
	default:
		return 0, errorf("elst: truncated or unknown version %d", v)
	}
	if binary.BigEndian.Uint32(b) != 0x00010000 || mt < 0 {
		return 0, cannotJoin("an edit that is empty or not at normal rate")
	}
	return mt, nil
}

// readPairs reads a table of (count, value) pairs: stts or ctts.
func readPairs(stbl []byte, typ string) ([]uint32, error) {
	box, err := need(stbl, "stbl", typ)
	if err != nil {
		return nil, err
	}
	return readTable(box, typ, 2)
}

// readTable reads a full box that is an entry count and that many entries
// of per 32-bit values.
func readTable(box []byte, typ string, per uint64) ([]uint32, error) {
	_, b, err := fullBox(box, typ)
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, errorf("%s: truncated", typ)
	}
	n := uint64(binary.BigEndian.Uint32(b))
	if n > uint64(len(b)-4)/(4*per) {
		return nil, errorf("%s: truncated (%d entries in %d bytes)", typ, n, len(b))
	}
	out := make([]uint32, per*n)
	for i := range out {
		out[i] = binary.BigEndian.Uint32(b[4+4*i:])
	}
	return out, nil
}

func (p *joinPart) copyChunks(w io.Writer) error {
	f, err := os.Open(p.path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, c := range p.chunks {
		// A section of an *os.File: io.Copy into another file then goes
		// through copy_file_range, without passing the bytes through us.
		if _, err := f.Seek(int64(c.off), io.SeekStart); err != nil {
			return err
		}
		if n, err := io.CopyN(w, f, int64(c.size)); err != nil {
			return fmt.Errorf("copying %d bytes of %s at offset %d (copied %d): %w", c.size, p.path, c.off, n, err)
		}
	}
	return nil
}

// joinedMoov builds the joined file's moov box, for media data that starts
// at dataStart in the file.
//
// Parts may differ in their encoder's initial delay: a one-frame x264 part
// has no B-frames and no edit, the others skip two frames of delay. The
// joined track's one edit skips the largest delay, and every sample of a
// part with less gets that much more composition offset, so that each part
// is presented exactly where it would be on its own, after the ones before.
func joinedMoov(parts []*joinPart, dataStart uint64) ([]byte, error) {
	first := parts[0]
	var delay int64
	anyCtts, anyStss, allSdtp := false, false, true
	for _, p := range parts {
		delay = max(delay, p.mediaTime)
		anyCtts = anyCtts || p.ctts != nil
		anyStss = anyStss || p.hasStss
		allSdtp = allSdtp && p.sdtp != nil
	}
	for _, p := range parts {
		anyCtts = anyCtts || max(p.mediaTime, 0) != delay
	}
	if delay > 0 && first.mediaTime < 0 {
		return nil, cannotJoin("the first part has no edit list to skip the others' initial delay")
	}
	var stts, ctts, stss, stsz, stsc, co64 []uint32
	var sdtp []byte
	var samples, chunks, duration, data uint64
	var btrt [3]uint32
	off := dataStart
	for _, p := range parts {
		stts = appendRuns(stts, p.stts)
		shift := delay - max(p.mediaTime, 0)
		if p.ctts == nil && anyCtts {
			ctts = appendRuns(ctts, []uint32{uint32(len(p.sizes)), uint32(shift)})
		}
		for i := 0; i+1 < len(p.ctts); i += 2 {
			o := int64(p.ctts[i+1])
			if p.cttsVer == 1 {
				o = int64(int32(p.ctts[i+1]))
			}
			o += shift
			if o < 0 || o > 1<<31-1 {
				return nil, cannotJoin("a composition offset of %d ticks", o)
			}
			ctts = appendRuns(ctts, []uint32{p.ctts[i], uint32(o)})
		}
		if p.hasStss {
			for _, n := range p.stss {
				stss = append(stss, uint32(samples)+n)
			}
		} else if anyStss {
			for n := range uint32(len(p.sizes)) {
				stss = append(stss, uint32(samples)+n+1)
			}
		}
		stsz = append(stsz, p.sizes...)
		if allSdtp {
			sdtp = append(sdtp, p.sdtp...)
		}
		btrt[0], btrt[1] = max(btrt[0], p.btrt[0]), max(btrt[1], p.btrt[1])
		data += p.bytes
		for i, n := range p.perChunk {
			if k := len(stsc); k >= 3 && stsc[k-2] == n {
				continue // the previous run of chunks holds as many samples
			}
			stsc = append(stsc, uint32(chunks)+uint32(i)+1, n, 1)
		}
		for _, c := range p.chunks {
			co64 = append(co64, uint32(off>>32), uint32(off))
			off += c.size
		}
		samples += uint64(len(p.sizes))
		chunks += uint64(len(p.chunks))
		duration += p.duration
	}
	if samples > 1<<32-1 || chunks > 1<<32-1 {
		return nil, cannotJoin("%d samples in %d chunks do not fit one track's tables", samples, chunks)
	}
	mvhd, err := need(first.moov, "moov", "mvhd")
	if err != nil {
		return nil, err
	}
	movieScale, err := headerTimescale(mvhd, "mvhd")
	if err != nil {
		return nil, err
	}
	// The edit, the track header and the movie header hold the duration in
	// the movie's time scale (milliseconds, from ffmpeg); rounding up keeps
	// the last frame inside the edit.
	movieDur := (duration*uint64(movieScale) + uint64(first.timescale) - 1) / uint64(first.timescale)
	table := func(typ string, version byte, fields ...[]uint32) []byte {
		b := []byte{version, 0, 0, 0}
		for _, f := range fields {
			for _, v := range f {
				b = binary.BigEndian.AppendUint32(b, v)
			}
		}
		return box(typ, b)
	}
	count := func(values []uint32, per int) []uint32 { return []uint32{uint32(len(values) / per)} }
	// The bit rate box: the largest buffer and peak of any part, and the
	// average over the whole track.
	if duration > 0 {
		btrt[2] = uint32(min(data*8*uint64(first.timescale)/duration, 1<<32-1))
	}
	stbl := box("stsd", rewriteBtrt(first.stsd, &btrt))
	stbl = append(stbl, table("stts", 0, count(stts, 2), stts)...)
	if anyCtts {
		stbl = append(stbl, table("ctts", first.cttsVer, count(ctts, 2), ctts)...)
	}
	if anyStss {
		stbl = append(stbl, table("stss", 0, count(stss, 1), stss)...)
	}
	if allSdtp {
		stbl = append(stbl, box("sdtp", append([]byte{0, 0, 0, 0}, sdtp...))...)
	}
	stbl = append(stbl, table("stsc", 0, count(stsc, 3), stsc)...)
	stbl = append(stbl, table("stsz", 0, []uint32{0, uint32(samples)}, stsz)...)
	stbl = append(stbl, table("co64", 0, count(co64, 2), co64)...)

	var bad error
	setDuration := func(typ string, at0, at1 int, d uint64) func([]byte) []byte {
		return func(p []byte) []byte {
			out := slices.Clone(p)
			if len(out) > 0 && out[0] == 1 && len(out) >= at1+8 {
				binary.BigEndian.PutUint64(out[at1:], d)
			} else if len(out) > 0 && out[0] == 0 && len(out) >= at0+4 && d <= 1<<32-1 {
				binary.BigEndian.PutUint32(out[at0:], uint32(d))
			} else if bad == nil {
				bad = cannotJoin("%s cannot hold a duration of %d", typ, d)
			}
			return out
		}
	}
	edit := func(p []byte) []byte {
		out := slices.Clone(p)
		switch {
		case len(out) >= 16 && out[0] == 0 && movieDur <= 1<<32-1 && delay <= 1<<31-1:
			binary.BigEndian.PutUint32(out[8:], uint32(movieDur))
			binary.BigEndian.PutUint32(out[12:], uint32(delay))
		case len(out) >= 24 && out[0] == 1:
			binary.BigEndian.PutUint64(out[8:], movieDur)
			binary.BigEndian.PutUint64(out[16:], uint64(delay))
		default:
			if bad == nil {
				bad = cannotJoin("elst cannot hold a duration of %d", movieDur)
			}
		}
		return out
	}
	// The media header also holds the time scale (v0 at 12, v1 at 20): the
	// first part's own, unless the parts were rescaled.
	mdhd := func(p []byte) []byte {
		out := setDuration("mdhd", 16, 24, duration)(p)
		if len(out) == 0 {
			return out
		}
		if at := map[byte]int{0: 12, 1: 20}[out[0]]; at > 0 && len(out) >= at+4 {
			binary.BigEndian.PutUint32(out[at:], first.timescale)
		}
		return out
	}
	// Durations: mvhd (v0 at 16, v1 at 24), tkhd (v0 at 20, v1 at 28),
	// mdhd (v0 at 16, v1 at 24), counted from the start of the payload.
	rewrite := map[string]func([]byte) []byte{
		"moov/mvhd":                setDuration("mvhd", 16, 24, movieDur),
		"moov/trak/tkhd":           setDuration("tkhd", 20, 28, movieDur),
		"moov/trak/edts/elst":      edit,
		"moov/trak/mdia/mdhd":      mdhd,
		"moov/trak/mdia/minf/stbl": func([]byte) []byte { return stbl },
	}
	body, err := rebuild(first.moov, "moov", rewrite)
	if err != nil {
		return nil, err
	}
	if bad != nil {
		return nil, bad
	}
	return box("moov", body), nil
}

// appendRuns appends (count, value) pairs to runs, merging a pair into the
// last run when the values are equal.
func appendRuns(runs, pairs []uint32) []uint32 {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == 0 {
			continue
		}
		if k := len(runs); k >= 2 && runs[k-1] == pairs[i+1] && uint64(runs[k-2])+uint64(pairs[i]) <= 1<<32-1 {
			runs[k-2] += pairs[i]
			continue
		}
		runs = append(runs, pairs[i], pairs[i+1])
	}
	return runs
}

// headerTimescale reads the time scale of an mvhd or mdhd payload.
func headerTimescale(b []byte, typ string) (uint32, error) {
	switch {
	case len(b) >= 16 && b[0] == 0:
		return binary.BigEndian.Uint32(b[12:]), nil
	case len(b) >= 24 && b[0] == 1:
		return binary.BigEndian.Uint32(b[20:]), nil
	}
	return 0, errorf("%s: truncated or unknown version", typ)
}

// containers are the boxes rebuild descends into.
var containers = map[string]bool{"trak": true, "edts": true, "mdia": true, "minf": true, "stbl": true}

// rebuild copies the boxes of b (the payload of the box at path), passing
// the payloads named in rewrite through their function and descending into
// containers.
func rebuild(b []byte, path string, rewrite map[string]func([]byte) []byte) ([]byte, error) {
	var out []byte
	var err error
	walkErr := eachBox(b, path, func(typ, payload []byte) bool {
		name := string(typ)
		here := path + "/" + name
		switch {
		case rewrite[here] != nil:
			out = append(out, box(name, rewrite[here](payload))...)
		case containers[name]:
			var inner []byte
			if inner, err = rebuild(payload, here, rewrite); err != nil {
				return false
			}
			out = append(out, box(name, inner)...)
		default:
			out = append(out, box(name, payload)...)
		}
		return true
	})
	if walkErr != nil {
		return nil, walkErr
	}
	return out, err
}

// box is a box of type typ around payload, with a 64-bit size only if it
// needs one.
func box(typ string, payload []byte) []byte {
	n := uint64(len(payload)) + 8
	if n > 1<<32-1 {
		b := binary.BigEndian.AppendUint32(nil, 1)
		b = append(b, typ...)
		b = binary.BigEndian.AppendUint64(b, n+8)
		return append(b, payload...)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, n), uint32(n))
	b = append(b, typ...)
	return append(b, payload...)
}

// Timing is when the first video track of a file presents its samples.
type Timing struct {
	// Times are the samples' presentation times, in ascending order, in
	// Timescale ticks: each one's decoding time plus its composition
	// offset, less the edit list's media time. A file whose frames are all
	// present and evenly spaced has times 0, d, 2d, ...
	Times     []int64
	Timescale uint32
	// Duration is the sum of the samples' durations (stts).
	Duration int64
}

// ReadTiming reads the Timing of the file at path, checking the sample
// tables as Concat does.
func ReadTiming(path string) (Timing, error) {
	p, err := readJoinPart(path)
	if err != nil {
		return Timing{}, err
	}
	return Timing{Times: p.presentationTimes(), Timescale: p.timescale, Duration: int64(p.duration)}, nil
}

func (p *joinPart) presentationTimes() []int64 {
	times := make([]int64, 0, len(p.sizes))
	var dts int64
	for i := 0; i < len(p.stts); i += 2 {
		for range p.stts[i] {
			times = append(times, dts)
			dts += int64(p.stts[i+1])
		}
	}
	k := 0
	for i := 0; i < len(p.ctts); i += 2 {
		off := int64(p.ctts[i+1])
		if p.cttsVer == 1 {
			off = int64(int32(p.ctts[i+1]))
		}
		for range p.ctts[i] {
			times[k] += off
			k++
		}
	}
	shift := max(p.mediaTime, 0)
	for i := range times {
		times[i] -= shift
	}
	slices.Sort(times)
	return times
}

// readBtrt returns the fields of the first sample entry's btrt box, or
// zeros without one.
func readBtrt(stsd []byte) ([3]uint32, error) {
	var out [3]uint32
	_, children, err := sampleEntryBoxes(stsd)
	if err != nil {
		return out, err
	}
	b, err := child(children, "sample entry", "btrt")
	if err != nil || b == nil {
		return out, err
	}
	if len(b) != 12 {
		return out, errorf("btrt: %d bytes, not 12", len(b))
	}
	for i := range out {
		out[i] = binary.BigEndian.Uint32(b[4*i:])
	}
	return out, nil
}

// sampleEntryBoxes splits an stsd payload holding one visual sample entry
// into that entry's fixed fields and its child boxes.
func sampleEntryBoxes(stsd []byte) (fixed, children []byte, err error) {
	if len(stsd) < 16 {
		return nil, nil, errorf("stsd: truncated")
	}
	e := stsd[8:]
	n := uint64(binary.BigEndian.Uint32(e))
	if n < visualEntryLen || n != uint64(len(e)) {
		return nil, nil, cannotJoin("stsd holds more than its one sample entry, or a short one")
	}
	return e[:visualEntryLen], e[visualEntryLen:n], nil
}

// rewriteBtrt returns the stsd payload with its sample entry's btrt box
// holding fields, or without it when fields is nil (to compare parts that
// differ only in their bit rates).
func rewriteBtrt(stsd []byte, fields *[3]uint32) []byte {
	fixed, children, err := sampleEntryBoxes(stsd)
	if err != nil {
		return stsd
	}
	var kids []byte
	had := false
	_ = eachBox(children, "sample entry", func(typ, payload []byte) bool {
		if string(typ) != "btrt" {
			kids = append(kids, box(string(typ), payload)...)
			return true
		}
		had = true
		if fields != nil {
			var b []byte
			for _, v := range fields {
				b = binary.BigEndian.AppendUint32(b, v)
			}
			kids = append(kids, box("btrt", b)...)
		}
		return true
	})
	if !had && fields != nil {
		return stsd
	}
	entry := append(slices.Clone(fixed), kids...)
	binary.BigEndian.PutUint32(entry, uint32(len(entry)))
	return append(slices.Clone(stsd[:8]), entry...)
}
