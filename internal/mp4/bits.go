package mp4

// unescape returns the RBSP of a NAL unit payload: the bytes without the
// emulation prevention bytes (the 03 of every 00 00 03).
func unescape(nal []byte) []byte {
	out := make([]byte, 0, len(nal))
	zeros := 0
	for _, c := range nal {
		if zeros >= 2 && c == 3 {
			zeros = 0
			continue
		}
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
		out = append(out, c)
	}
	return out
}

// bitReader reads the bit fields and Exp-Golomb codes of H.264 and HEVC
// parameter sets. Reading past the end sets bad and yields zeros, so that
// a parser can read a whole structure and check once.
type bitReader struct {
	b   []byte
	pos int // in bits
	bad bool
}

// u reads an n-bit unsigned field, n <= 32.
func (r *bitReader) u(n int) uint32 {
	if r.bad || n > len(r.b)*8-r.pos {
		r.bad = true
		return 0
	}
	var v uint32
	for range n {
		v = v<<1 | uint32(r.b[r.pos>>3]>>(7-r.pos&7)&1)
		r.pos++
	}
	return v
}

func (r *bitReader) flag() bool { return r.u(1) == 1 }

// ue reads an unsigned Exp-Golomb code (ue(v)).
func (r *bitReader) ue() uint32 {
	zeros := 0
	for !r.flag() {
		if r.bad || zeros == 31 {
			// 32 leading zeros would not fit in 32 bits: no valid
			// parameter set has them.
			r.bad = true
			return 0
		}
		zeros++
	}
	return 1<<zeros - 1 + r.u(zeros)
}

// se reads a signed Exp-Golomb code (se(v)).
func (r *bitReader) se() int64 {
	k := int64(r.ue())
	if k%2 == 1 {
		return (k + 1) / 2
	}
	return -k / 2
}
