package node

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	farmpb "github.com/framefarm/framefarm/proto"
)

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
				var c frameChunk
				if err := c.parse(bs); err != nil {
					t.Fatalf("%s cut at %d, %d: %v", name, cut1, cut2, err)
				}
				if got := c.appendData(nil); c.position != want.Position || c.last != want.Last || !bytes.Equal(got, want.Data) {
					t.Fatalf("%s cut at %d, %d: position %d last %v %d bytes, want %d %v %d", name, cut1, cut2,
						c.position, c.last, len(got), want.Position, want.Last, len(want.Data))
				}
			}
		}
	}
	for _, bad := range [][]byte{{0x08}, {0x12, 0x05, 1, 2}, {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, {0x0b}} {
		var c frameChunk
		if err := c.parse(mem.BufferSlice{mem.SliceBuffer(bad)}); err == nil {
			t.Errorf("% x: parsed, want an error", bad)
		}
	}
}
