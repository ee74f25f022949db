package mp4

import (
	"encoding/binary"
	"fmt"
	"io"
)

// This file names the pixel format the way ffmpeg 5.1's decoders do (what
// ffprobe reports), from what the sample entry says: the codec's
// configuration record, and for H.264 the container's colr box. Where the
// rules below are not sure to agree with ffprobe, the answer is "".

// colour is what a colr box or a VUI says about range and matrix.
type colour struct {
	hasRange, full bool
	hasMatrix      bool
	matrix         uint32 // ISO/IEC 23091-2 MatrixCoefficients; 0 is RGB (identity)
}

func pixFmt(r io.ReaderAt, e sampleEntry, first extent) string {
	switch e.fourcc {
	case "avc1", "avc3":
		return avcPixFmt(e.boxes)
	case "hvc1", "hev1":
		return hevcPixFmt(e.boxes)
	case "vp09":
		return vp9PixFmt(e.boxes)
	case "av01":
		return av1PixFmt(e.boxes)
	case "apch", "apcn", "apcs", "apco", "ap4h", "ap4x":
		return proresPixFmt(r, e.fourcc, first)
	}
	return ""
}

// entryBox returns the payload of the sample entry's child box typ, or nil.
func entryBox(boxes []byte, typ string) []byte {
	b, err := child(boxes, "sample entry", typ)
	if err != nil {
		return nil
	}
	return b
}

// readColr reads a colr box: 'nclx' (MP4) or 'nclc' (QuickTime, no range).
func readColr(boxes []byte) colour {
	b := entryBox(boxes, "colr")
	if len(b) < 10 {
		return colour{}
	}
	switch string(b[:4]) {
	case "nclx":
		if len(b) < 11 {
			return colour{}
		}
		return colour{hasRange: true, full: b[10]>>7 == 1, hasMatrix: true, matrix: uint32(binary.BigEndian.Uint16(b[8:]))}
	case "nclc":
		return colour{hasMatrix: true, matrix: uint32(binary.BigEndian.Uint16(b[8:]))}
	}
	return colour{}
}

// depthSuffix is the suffix of a planar format name at a bit depth:
// yuv420p, yuv420p10le.
func depthSuffix(depth uint32) string {
	if depth == 8 {
		return ""
	}
	return fmt.Sprintf("%dle", depth)
}

// avcSPS is what the pixel format depends on in an H.264 SPS.
type avcSPS struct {
	chroma, depth uint32
	vui           colour
}

// highProfiles are the H.264 profiles whose SPS carries chroma_format_idc
// and the bit depths.
var highProfiles = map[uint32]bool{100: true, 110: true, 122: true, 244: true, 44: true, 83: true, 86: true, 118: true, 128: true, 138: true, 139: true, 134: true, 135: true}

// parseAVCSPS reads an H.264 SPS (the RBSP after the NAL header) up to the
// video signal type of its VUI (ITU-T H.264 7.3.2.1.1 and E.1.1).
func parseAVCSPS(rbsp []byte) (avcSPS, bool) {
	r := &bitReader{b: rbsp}
	s := avcSPS{chroma: 1, depth: 8}
	profile := r.u(8)
	r.u(16) // constraint flags, level
	if r.ue() > 31 {
		return s, false
	}
	if highProfiles[profile] {
		s.chroma = r.ue()
		if s.chroma > 3 {
			return s, false
		}
		if s.chroma == 3 && r.flag() {
			return s, false // separate colour planes: ffmpeg refuses them
		}
		s.depth = r.ue() + 8
		if r.ue()+8 != s.depth {
			return s, false // ffmpeg refuses unequal luma and chroma depths
		}
		r.u(1) // qpprime_y_zero_transform_bypass_flag
		if r.flag() {
			lists := 8
			if s.chroma == 3 {
				lists = 12
			}
			for i := range lists {
				if r.flag() {
					n := 16
					if i >= 6 {
						n = 64
					}
					skipAVCScalingList(r, n)
				}
			}
		}
	}
	r.ue() // log2_max_frame_num_minus4
	switch r.ue() {
	case 0:
		r.ue() // log2_max_pic_order_cnt_lsb_minus4
	case 1:
		r.u(1)
		r.se()
		r.se()
		n := r.ue()
		if n > 255 {
			return s, false
		}
		for range n {
			r.se()
		}
	case 2:
	default:
		return s, false
	}
	r.ue()         // max_num_ref_frames
	r.u(1)         // gaps_in_frame_num_value_allowed_flag
	r.ue()         // pic_width_in_mbs_minus1
	r.ue()         // pic_height_in_map_units_minus1
	if !r.flag() { // frame_mbs_only_flag
		r.u(1)
	}
	r.u(1) // direct_8x8_inference_flag
	if r.flag() {
		r.ue()
		r.ue()
		r.ue()
		r.ue()
	}
	if r.flag() { // vui_parameters_present_flag
		if r.flag() && r.u(8) == 255 { // aspect_ratio_info_present_flag, Extended_SAR
			r.u(32)
		}
		if r.flag() { // overscan_info_present_flag
			r.u(1)
		}
		if r.flag() { // video_signal_type_present_flag
			r.u(3)
			s.vui.hasRange, s.vui.full = true, r.flag()
			if r.flag() {
				r.u(16)
				s.vui.hasMatrix, s.vui.matrix = true, r.u(8)
			}
		}
	}
	return s, !r.bad
}

func skipAVCScalingList(r *bitReader, n int) {
	last, next := int64(8), int64(8)
	for range n {
		if next != 0 {
			next = (last + r.se() + 256) % 256
		}
		if next != 0 {
			last = next
		}
		if r.bad {
			return
		}
	}
}

// avcPixFmt follows get_pixel_format in libavcodec/h264_slice.c: the range
// and matrix come from the SPS where it has them, else from the container.
func avcPixFmt(boxes []byte) string {
	c := entryBox(boxes, "avcC")
	// configurationVersion, profile, compatibility, level,
	// lengthSizeMinusOne, numOfSequenceParameterSets, then the first
	// SPS's length and bytes.
	if len(c) < 8 || c[0] != 1 || c[5]&31 == 0 {
		return ""
	}
	n := int(binary.BigEndian.Uint16(c[6:]))
	if n < 2 || 8+n > len(c) || c[8]&31 != 7 {
		return ""
	}
	s, ok := parseAVCSPS(unescape(c[9 : 8+n]))
	if !ok {
		return ""
	}
	col := readColr(boxes)
	if s.vui.hasRange {
		col.hasRange, col.full = true, s.vui.full
		if s.vui.hasMatrix {
			col.hasMatrix, col.matrix = true, s.vui.matrix
		}
	}
	rgb := col.hasMatrix && col.matrix == 0
	switch s.depth {
	case 8:
		j := ""
		if col.hasRange && col.full {
			j = "j"
		}
		switch s.chroma {
		case 3:
			if rgb {
				return "gbrp"
			}
			return "yuv" + j + "444p"
		case 2:
			return "yuv" + j + "422p"
		default: // 4:2:0, and monochrome, which ffmpeg decodes as 4:2:0
			return "yuv" + j + "420p"
		}
	case 9, 10, 12, 14:
		d := depthSuffix(s.depth)
		switch s.chroma {
		case 3:
			if rgb {
				return "gbrp" + d
			}
			return "yuv444p" + d
		case 2:
			return "yuv422p" + d
		default:
			return "yuv420p" + d
		}
	}
	return ""
}

// hevcSPS is what the pixel format depends on in an HEVC SPS.
type hevcSPS struct {
	chroma, depth uint32
	vui           colour
}

// parseHEVCSPS reads an HEVC SPS (the RBSP after the 2-byte NAL header) up
// to the video signal type of its VUI (ITU-T H.265 7.3.2.2 and E.2.1).
func parseHEVCSPS(rbsp []byte) (hevcSPS, bool) {
	r := &bitReader{b: rbsp}
	var s hevcSPS
	r.u(4) // sps_video_parameter_set_id
	subLayers := int(r.u(3))
	r.u(1) // sps_temporal_id_nesting_flag
	// profile_tier_level: general profile (88 bits) and level (8).
	r.u(32)
	r.u(32)
	r.u(24)
	r.u(8)
	var profilePresent, levelPresent [8]bool
	for i := range subLayers {
		profilePresent[i], levelPresent[i] = r.flag(), r.flag()
	}
	if subLayers > 0 {
		for i := subLayers; i < 8; i++ {
			r.u(2)
		}
	}
	for i := range subLayers {
		if profilePresent[i] {
			r.u(32)
			r.u(32)
			r.u(24)
		}
		if levelPresent[i] {
			r.u(8)
		}
	}
	if r.ue() > 15 { // sps_seq_parameter_set_id
		return s, false
	}
	s.chroma = r.ue()
	if s.chroma > 3 {
		return s, false
	}
	if s.chroma == 3 && r.flag() {
		return s, false // separate colour planes: rare, and decoded as gray
	}
	r.ue()        // pic_width_in_luma_samples
	r.ue()        // pic_height_in_luma_samples
	if r.flag() { // conformance_window_flag
		r.ue()
		r.ue()
		r.ue()
		r.ue()
	}
	s.depth = r.ue() + 8
	if r.ue()+8 != s.depth {
		return s, false // ffmpeg refuses unequal luma and chroma depths
	}
	pocBits := r.ue() + 4
	if pocBits > 16 {
		return s, false
	}
	start := subLayers
	if r.flag() { // sps_sub_layer_ordering_info_present_flag
		start = 0
	}
	for i := start; i <= subLayers; i++ {
		r.ue()
		r.ue()
		r.ue()
	}
	for range 6 { // coding and transform block sizes, hierarchy depths
		r.ue()
	}
	if r.flag() && r.flag() { // scaling_list_enabled_flag, sps_scaling_list_data_present_flag
		skipHEVCScalingLists(r)
	}
	r.u(1)        // amp_enabled_flag
	r.u(1)        // sample_adaptive_offset_enabled_flag
	if r.flag() { // pcm_enabled_flag
		r.u(8)
		r.ue()
		r.ue()
		r.u(1)
	}
	if !skipShortTermRefPicSets(r) {
		return s, false
	}
	if r.flag() { // long_term_ref_pics_present_flag
		n := r.ue()
		if n > 32 {
			return s, false
		}
		for range n {
			r.u(int(pocBits))
			r.u(1)
		}
	}
	r.u(1)        // sps_temporal_mvp_enabled_flag
	r.u(1)        // strong_intra_smoothing_enabled_flag
	if r.flag() { // vui_parameters_present_flag
		if r.flag() && r.u(8) == 255 {
			r.u(32)
		}
		if r.flag() {
			r.u(1)
		}
		if r.flag() { // video_signal_type_present_flag
			r.u(3)
			s.vui.hasRange, s.vui.full = true, r.flag()
			if r.flag() {
				r.u(16)
				s.vui.hasMatrix, s.vui.matrix = true, r.u(8)
			}
		}
	}
	return s, !r.bad
}

func skipHEVCScalingLists(r *bitReader) {
	for size := range 4 {
		step := 1
		if size == 3 {
			step = 3
		}
		for m := 0; m < 6; m += step {
			if !r.flag() { // scaling_list_pred_mode_flag
				r.ue()
				continue
			}
			n := min(64, 1<<(4+2*size))
			if size > 1 {
				r.se()
			}
			for range n {
				r.se()
				if r.bad {
					return
				}
			}
		}
	}
}

// skipShortTermRefPicSets reads num_short_term_ref_pic_sets and the sets
// (H.265 7.3.7), which a set may predict from the one before it.
func skipShortTermRefPicSets(r *bitReader) bool {
	n := r.ue()
	if n > 64 {
		return false
	}
	var deltaPocs [64]uint32
	for i := range n {
		if i > 0 && r.flag() { // inter_ref_pic_set_prediction_flag
			r.u(1) // delta_rps_sign
			r.ue() // abs_delta_rps_minus1
			ref := deltaPocs[i-1]
			var k uint32
			for range ref + 1 {
				used := r.flag()
				if used || r.flag() { // use_delta_flag, 1 when absent
					k++
				}
			}
			if k > 32 {
				return false
			}
			deltaPocs[i] = k
		} else {
			neg, pos := r.ue(), r.ue()
			if neg > 16 || pos > 16 {
				return false
			}
			for range neg + pos {
				r.ue()
				r.u(1)
			}
			deltaPocs[i] = neg + pos
		}
		if r.bad {
			return false
		}
	}
	return true
}

// hevcPixFmt follows map_pixel_format and decode_vui in
// libavcodec/hevc_ps.c. hvcC repeats the chroma format and bit depth; a
// record that disagrees with its own SPS gets "".
func hevcPixFmt(boxes []byte) string {
	c := entryBox(boxes, "hvcC")
	if len(c) < 23 || c[0] != 1 {
		return ""
	}
	chroma, depth := uint32(c[16]&3), uint32(c[17]&7)+8
	var sps []byte
	b := c[23:]
	for range c[22] { // numOfArrays
		if len(b) < 3 {
			return ""
		}
		typ, n := b[0]&63, int(binary.BigEndian.Uint16(b[1:]))
		b = b[3:]
		for range n {
			if len(b) < 2 {
				return ""
			}
			l := int(binary.BigEndian.Uint16(b))
			if l > len(b)-2 {
				return ""
			}
			if typ == 33 && sps == nil {
				sps = b[2 : 2+l]
			}
			b = b[2+l:]
		}
	}
	if len(sps) < 3 {
		return ""
	}
	s, ok := parseHEVCSPS(unescape(sps[2:]))
	if !ok || s.chroma != chroma || s.depth != depth {
		return ""
	}
	var f string
	switch s.depth {
	case 8, 9, 10, 12:
		f = [...]string{"gray", "yuv420p", "yuv422p", "yuv444p"}[s.chroma] + depthSuffix(s.depth)
	default:
		return ""
	}
	if s.depth == 8 && s.chroma == 0 {
		f = "gray"
	}
	if s.vui.hasRange && s.vui.full && f == "yuv420p" {
		f = "yuvj420p"
	}
	if s.vui.hasMatrix && s.vui.matrix == 0 && s.chroma == 3 && s.depth != 9 {
		f = "gbrp" + depthSuffix(s.depth)
	}
	return f
}

// vp9PixFmt reads a vpcC box (version 1, as ffmpeg writes it). VP9 has no
// full-range formats in ffmpeg; RGB is 4:4:4 with the identity matrix.
func vp9PixFmt(boxes []byte) string {
	c := entryBox(boxes, "vpcC")
	// version, flags, profile, level, bitDepth(4) chromaSubsampling(3)
	// videoFullRangeFlag(1), colourPrimaries, transferCharacteristics,
	// matrixCoefficients.
	if len(c) < 11 || c[0] != 1 {
		return ""
	}
	depth, sub, matrix := uint32(c[6]>>4), c[6]>>1&7, c[9]
	if depth != 8 && depth != 10 && depth != 12 {
		return ""
	}
	d := depthSuffix(depth)
	switch sub {
	case 0, 1:
		return "yuv420p" + d
	case 2:
		return "yuv422p" + d
	case 3:
		if matrix == 0 {
			return "gbrp" + d
		}
		return "yuv444p" + d
	}
	return ""
}

// av1PixFmt reads an av1C box. 4:4:4 is "": whether it is RGB is only in
// the sequence header's colour config, which this does not parse.
func av1PixFmt(boxes []byte) string {
	c := entryBox(boxes, "av1C")
	// marker(1) version(7); seq_profile(3) seq_level_idx_0(5);
	// seq_tier_0, high_bitdepth, twelve_bit, monochrome,
	// chroma_subsampling_x, chroma_subsampling_y, chroma_sample_position(2).
	if len(c) < 4 || c[0] != 0x81 {
		return ""
	}
	f := c[2]
	depth := uint32(8)
	if f&0x40 != 0 {
		depth = 10
		if f&0x20 != 0 {
			depth = 12
		}
	}
	d := depthSuffix(depth)
	mono, sx, sy := f&0x10 != 0, f&0x08 != 0, f&0x04 != 0
	switch {
	case mono:
		return "gray" + d
	case sx && sy:
		return "yuv420p" + d
	case sx && !sy:
		return "yuv422p" + d
	}
	return ""
}

// proresPixFmt follows libavcodec/proresdec2.c: the fourcc sets the bit
// depth (12 for 4444 and XQ), the first frame's header the chroma format
// and alpha. It reads that header, 28 bytes at the first sample.
func proresPixFmt(r io.ReaderAt, fourcc string, first extent) string {
	var h [28]byte
	if first.size < uint64(len(h)) {
		return ""
	}
	if err := readAt(r, h[:], int64(first.off)); err != nil {
		return ""
	}
	// frame size, 'icpf', then the frame header: its size, version,
	// creator, width, height, flags (chroma format in the top two bits),
	// ..., alpha_info in the low nibble of byte 17.
	if string(h[4:8]) != "icpf" || binary.BigEndian.Uint16(h[10:]) > 1 {
		return ""
	}
	hdr := h[8:]
	alpha := hdr[17] & 15
	if alpha > 2 {
		return ""
	}
	depth := "10le"
	if fourcc == "ap4h" || fourcc == "ap4x" {
		depth = "12le"
	}
	chroma := "422"
	if hdr[12]&0xc0 == 0xc0 {
		chroma = "444"
	}
	if alpha != 0 {
		return "yuva" + chroma + "p" + depth
	}
	return "yuv" + chroma + "p" + depth
}
