package coordinator

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/internal/framebuf"
	farmpb "github.com/framefarm/framefarm/proto"
)

// A wireChunk must reach the node as the FrameChunk it stands for.
func TestChunkCodecEncodesFrameChunk(t *testing.T) {
	codec := newChunkCodec()
	pool := framebuf.Pool{Size: chunkSize}
	for _, tc := range []struct {
		pos  uint32
		last bool
		size int
	}{{0, false, 1}, {7, true, 300}, {1 << 20, true, chunkSize}, {3, false, 70000}} {
		buf := pool.Get(tc.size)
		for i := range *buf {
			(*buf)[i] = byte(i * 7)
		}
		want := bytes.Clone(*buf)
		data, err := codec.Marshal(&wireChunk{pos: tc.pos, last: tc.last, data: mem.NewBuffer(buf, &pool)})
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
