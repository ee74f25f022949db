package chunk

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/internal/framebuf"
	farmpb "github.com/framefarm/framefarm/proto"
)

// An Out must reach the node as the FrameChunk it stands for.
func TestChunkCodecEncodesFrameChunk(t *testing.T) {
	codec := NewCodec()
	pool := framebuf.Pool{Size: Size}
	for _, tc := range []struct {
		pos  uint32
		last bool
		size int
	}{{0, false, 1}, {7, true, 300}, {1 << 20, true, Size}, {3, false, 70000}} {
		buf := pool.Get(tc.size)
		for i := range *buf {
			(*buf)[i] = byte(i * 7)
		}
		want := bytes.Clone(*buf)
		data, err := codec.Marshal(&Out{Pos: tc.pos, Last: tc.last, Data: mem.NewBuffer(buf, &pool)})
		if err != nil {
			t.Fatal(err)
		}
		var got farmpb.FrameChunk
		if err := proto.Unmarshal(data.Materialize(), &got); err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		data.Free()
		if got.Position != tc.pos || got.Last != tc.last || !bytes.Equal(got.Data, want) {
			t.Errorf("%+v: decoded position %d last %v and %d bytes (equal: %v)", tc, got.Position, got.Last, len(got.Data), bytes.Equal(got.Data, want))
		}
	}
	// Every other message goes through the protobuf codec.
	data, err := codec.Marshal(&farmpb.FrameChunk{Position: 2, Last: true})
	if err != nil {
		t.Fatal(err)
	}
	var got farmpb.FrameChunk
	if err := codec.Unmarshal(data, &got); err != nil || got.Position != 2 || !got.Last {
		t.Errorf("plain FrameChunk: %v, %v", &got, err)
	}
}

// A frame chunk decoded in place must match the protobuf runtime's decoding
// however gRPC split the message across buffers.
func TestFrameChunkParse(t *testing.T) {
	data := make([]byte, 300)
	for i := range data {
		data[i] = byte(i)
	}
	std, err := proto.Marshal(&farmpb.FrameChunk{Position: 300, Data: data, Last: true})
	if err != nil {
		t.Fatal(err)
	}
	// Fields out of order, an unknown field of each wire type, data twice
	// (the last wins).
	var odd []byte
	odd = protowire.AppendTag(odd, 3, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 1)
	odd = protowire.AppendTag(odd, 2, protowire.BytesType)
	odd = protowire.AppendBytes(odd, []byte("old"))
	odd = protowire.AppendTag(odd, 9, protowire.Fixed32Type)
	odd = protowire.AppendFixed32(odd, 5)
	odd = protowire.AppendTag(odd, 10, protowire.Fixed64Type)
	odd = protowire.AppendFixed64(odd, 5)
	odd = protowire.AppendTag(odd, 11, protowire.BytesType)
	odd = protowire.AppendBytes(odd, []byte("x"))
	odd = protowire.AppendTag(odd, 12, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 1<<40)
	odd = protowire.AppendTag(odd, 2, protowire.BytesType)
	odd = protowire.AppendBytes(odd, data)
	odd = protowire.AppendTag(odd, 1, protowire.VarintType)
	odd = protowire.AppendVarint(odd, 300)
	for name, msg := range map[string][]byte{"standard": std, "reordered": odd, "empty": nil} {
		var want farmpb.FrameChunk
		if err := proto.Unmarshal(msg, &want); err != nil {
			t.Fatal(err)
		}
		for cut1 := 0; cut1 <= len(msg); cut1 += 7 {
			for cut2 := cut1; cut2 <= len(msg); cut2 += 5 {
				bs := mem.BufferSlice{mem.SliceBuffer(msg[:cut1]), mem.SliceBuffer(msg[cut1:cut2]), mem.SliceBuffer(msg[cut2:])}
				var c In
				if err := c.parse(bs); err != nil {
					t.Fatalf("%s cut at %d, %d: %v", name, cut1, cut2, err)
				}
				if got := c.AppendData(nil); c.Position != want.Position || c.Last != want.Last || !bytes.Equal(got, want.Data) {
					t.Fatalf("%s cut at %d, %d: position %d last %v %d bytes, want %d %v %d", name, cut1, cut2,
						c.Position, c.Last, len(got), want.Position, want.Last, len(want.Data))
				}
			}
		}
	}
	for _, bad := range [][]byte{{0x08}, {0x12, 0x05, 1, 2}, {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, {0x0b}} {
		var c In
		if err := c.parse(mem.BufferSlice{mem.SliceBuffer(bad)}); err == nil {
			t.Errorf("% x: parsed, want an error", bad)
		}
	}
}
