// Package chunk is the wire form of the farm's bulk streams, written once.
// The frame stream is most of the bytes a farm moves, and the protobuf
// codec copies each of them on every hop: the coordinator encodes a
// FrameChunk's header around a pooled buffer (Out), the ambassador forwards
// messages as they came (Raw), and the node decodes chunks in place (In).
// Codec is the gRPC codec of all three, the protobuf codec for every other
// message.
package chunk

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Size bounds every chunk of frames, parts and videos.
const Size = 1 << 20

// Codec is the protobuf codec, except for the messages of this package.
type Codec struct{ encoding.CodecV2 }

// NewCodec returns the codec, for grpc.ForceCodecV2 and
// grpc.ForceServerCodecV2.
func NewCodec() Codec { return Codec{encoding.GetCodecV2(protocodec.Name)} }

func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *Out:
		// gRPC frees the slice, and so the data buffer, once it is written.
		return m.marshal(), nil
	case *Raw:
		// gRPC frees what Marshal returns once it is written: the
		// reference passes to it.
		data := m.data
		m.data = nil
		return data, nil
	}
	return c.CodecV2.Marshal(v)
}

func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *In:
		if err := m.parse(data); err != nil {
			return err
		}
		// gRPC frees data when Unmarshal returns: keep a reference.
		data.Ref()
		m.msg = data
		return nil
	case *Raw:
		data.Ref()
		m.data = data
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

// Out is a farmpb.FrameChunk whose data stays in a pooled buffer: the
// default codec would copy every frame byte into a freshly zeroed buffer
// (profiles of a stream: a third of the coordinator's CPU). The codec
// writes the few header bytes and hands gRPC the buffer as it is; gRPC
// frees it once written.
type Out struct {
	Pos  uint32
	Last bool
	Data mem.Buffer
}

func (w *Out) marshal() mem.BufferSlice {
	// The fields of farmpb.FrameChunk; any order is valid protobuf.
	hdr := make([]byte, 0, 16)
	hdr = protowire.AppendTag(hdr, 1, protowire.VarintType)
	hdr = protowire.AppendVarint(hdr, uint64(w.Pos))
	if w.Last {
		hdr = protowire.AppendTag(hdr, 3, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, 1)
	}
	hdr = protowire.AppendTag(hdr, 2, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(w.Data.Len()))
	return mem.BufferSlice{mem.SliceBuffer(hdr), w.Data}
}

// Raw is a message forwarded as it arrived, in wire form (the ambassador's):
// decoding every frame chunk and encoding it again cost two copies of each
// byte and a fresh 1 MiB allocation per chunk, which made this hop slower
// than the coordinator's own stream.
type Raw struct{ data mem.BufferSlice }

// Len is the message's size in wire form.
func (r *Raw) Len() int { return r.data.Len() }

// Send sends m on s, and releases m's buffers if gRPC did not take them.
func Send(s interface{ SendMsg(any) error }, m *Raw) error {
	err := s.SendMsg(m)
	m.data.Free()
	return err
}

// In is a farmpb.FrameChunk decoded in place: its data is views of the
// bytes in gRPC's receive buffers, which it keeps until Free. The protobuf
// codec would copy every byte twice (into a zeroed buffer, then into a
// fresh 1 MiB slice per chunk).
type In struct {
	Position uint32
	Last     bool
	msg      mem.BufferSlice
	data     [][]byte
}

// AppendData appends the chunk's data to b.
func (c *In) AppendData(b []byte) []byte {
	for _, d := range c.data {
		b = append(b, d...)
	}
	return b
}

// Free gives the receive buffers back.
func (c *In) Free() {
	c.msg.Free()
	c.msg, c.data = nil, nil
}

var errChunk = errors.New("malformed frame chunk")

// parse reads the FrameChunk fields from msg, which may be split anywhere
// across buffers, as the protobuf runtime would: fields in any order, the
// last of a repeated field wins, unknown fields skipped.
func (c *In) parse(msg mem.BufferSlice) error {
	r := wireReader{msg: msg}
	for !r.done() {
		tag, err := r.varint()
		if err != nil {
			return err
		}
		num, typ := protowire.DecodeTag(tag)
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, err := r.varint()
			if err != nil {
				return err
			}
			c.Position = uint32(v)
		case num == 3 && typ == protowire.VarintType:
			v, err := r.varint()
			if err != nil {
				return err
			}
			c.Last = v != 0
		case num == 2 && typ == protowire.BytesType:
			n, err := r.varint()
			if err != nil {
				return err
			}
			if c.data, err = r.take(n, c.data[:0], true); err != nil {
				return err
			}
		case typ == protowire.VarintType:
			if _, err := r.varint(); err != nil {
				return err
			}
		case typ == protowire.BytesType:
			n, err := r.varint()
			if err != nil {
				return err
			}
			if _, err := r.take(n, nil, false); err != nil {
				return err
			}
		case typ == protowire.Fixed32Type:
			if _, err := r.take(4, nil, false); err != nil {
				return err
			}
		case typ == protowire.Fixed64Type:
			if _, err := r.take(8, nil, false); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: field %d has wire type %d", errChunk, num, typ)
		}
	}
	return nil
}

// wireReader walks a message split across buffers.
type wireReader struct {
	msg mem.BufferSlice
	i   int // current buffer
	off int // offset in it
}

func (r *wireReader) done() bool {
	for r.i < len(r.msg) && r.off == r.msg[r.i].Len() {
		r.i, r.off = r.i+1, 0
	}
	return r.i == len(r.msg)
}

func (r *wireReader) varint() (uint64, error) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		if r.done() {
			return 0, fmt.Errorf("%w: truncated varint", errChunk)
		}
		b := r.msg[r.i].ReadOnlyData()[r.off]
		r.off++
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: varint too long", errChunk)
}

// take moves past the next n bytes, appending views of them to views when
// keep is set.
func (r *wireReader) take(n uint64, views [][]byte, keep bool) ([][]byte, error) {
	for n > 0 {
		if r.done() {
			return nil, fmt.Errorf("%w: a field runs past the end of the message", errChunk)
		}
		d := r.msg[r.i].ReadOnlyData()[r.off:]
		k := min(uint64(len(d)), n)
		if keep {
			views = append(views, d[:k])
		}
		r.off += int(k)
		n -= k
	}
	return views, nil
}
