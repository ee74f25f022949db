package node

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	farmpb "github.com/framefarm/framefarm/proto"
)

// ReceiveFrames streams a set's frames and writes frame i (its position in
// frames) to the writer create(i) returns, closing it after the frame's
// last chunk. It checks that every frame arrives whole. It is what a node
// does with a set's frames (exported so that the benchmark's stand-in node
// receives exactly the same way).
//
// Chunks are decoded in place (see frameChunk): the protobuf codec would
// copy every byte twice (into a zeroed buffer, then into a fresh 1 MiB
// slice per chunk), which made the node the slowest hop of the stream.
func ReceiveFrames(ctx context.Context, client farmpb.NodeServiceClient, req *farmpb.StreamFramesRequest,
	frames []*farmpb.FrameInfo, create func(pos int) (io.WriteCloser, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we stop early
	stream, err := client.StreamFrames(ctx, req, grpc.ForceCodecV2(chunkCodec{encoding.GetCodecV2(protocodec.Name)}))
	if err != nil {
		return err
	}
	var w io.WriteCloser
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	var pos int
	var written int64
	received := 0
	// One chunk's data is written at once: it arrives in 16 KiB HTTP/2
	// frames, and a write per frame would cost a syscall each.
	var buf []byte
	for {
		var c frameChunk
		err := stream.RecvMsg(&c)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if int(c.position) >= len(frames) {
			c.free()
			return fmt.Errorf("coordinator sent frame position %d of a %d-frame set", c.position, len(frames))
		}
		if w == nil {
			pos, written = int(c.position), 0
			if w, err = create(pos); err != nil {
				c.free()
				return err
			}
		} else if int(c.position) != pos {
			c.free()
			return fmt.Errorf("frame %d ended without its last chunk", frames[pos].Number)
		}
		buf = c.appendData(buf[:0])
		c.free()
		if _, err := w.Write(buf); err != nil {
			return err
		}
		written += int64(len(buf))
		if c.last {
			err := w.Close()
			w = nil
			if want := frames[pos].Size; written != want {
				return fmt.Errorf("frame %d (%s): received %d bytes, expected %d", frames[pos].Number, frames[pos].Name, written, want)
			}
			if err != nil {
				return err
			}
			received++
		}
	}
	if w != nil {
		return fmt.Errorf("frame stream ended inside frame %d", frames[pos].Number)
	}
	if received != len(frames) {
		return fmt.Errorf("received %d of the set's %d frames", received, len(frames))
	}
	return nil
}

// frameChunk is a farmpb.FrameChunk decoded in place: data holds views of
// its bytes in gRPC's receive buffers, which it keeps until free.
type frameChunk struct {
	position uint32
	last     bool
	msg      mem.BufferSlice
	data     [][]byte
}

func (c *frameChunk) appendData(b []byte) []byte {
	for _, d := range c.data {
		b = append(b, d...)
	}
	return b
}

func (c *frameChunk) free() {
	c.msg.Free()
	c.msg, c.data = nil, nil
}

// chunkCodec is the protobuf codec, except that it decodes a frameChunk in
// place.
type chunkCodec struct{ encoding.CodecV2 }

func (cc chunkCodec) Unmarshal(msg mem.BufferSlice, v any) error {
	c, ok := v.(*frameChunk)
	if !ok {
		return cc.CodecV2.Unmarshal(msg, v)
	}
	if err := c.parse(msg); err != nil {
		return err
	}
	// gRPC frees msg when Unmarshal returns: keep a reference.
	msg.Ref()
	c.msg = msg
	return nil
}

var errChunk = errors.New("malformed frame chunk")

// parse reads the FrameChunk fields from msg, which may be split anywhere
// across buffers, as the protobuf runtime would: fields in any order, the
// last of a repeated field wins, unknown fields skipped.
func (c *frameChunk) parse(msg mem.BufferSlice) error {
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
			c.position = uint32(v)
		case num == 3 && typ == protowire.VarintType:
			v, err := r.varint()
			if err != nil {
				return err
			}
			c.last = v != 0
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
