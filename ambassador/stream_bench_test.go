package ambassador

import (
	"context"
	"io"
	"testing"

	"github.com/framefarm/framefarm/node"
	farmpb "github.com/framefarm/framefarm/proto"
)

// BenchmarkStreamFrames measures the frame stream through the ambassador:
// a fake coordinator sends 1 MiB chunks, a node's receive path takes them.
//
//	go test -run - -bench StreamFrames -cpuprofile cpu.out ./ambassador
func BenchmarkStreamFrames(b *testing.B) {
	const frames, size = 64, 1 << 20
	f := &fakeCoord{}
	infos := make([]*farmpb.FrameInfo, frames)
	for i := range frames {
		f.chunks = append(f.chunks, &farmpb.FrameChunk{Position: uint32(i), Data: make([]byte, size), Last: true})
		infos[i] = &farmpb.FrameInfo{Number: int64(i), Size: size}
	}
	addr, _ := startFake(b, f)
	h := startAmb(b, addr, nil)
	b.SetBytes(frames * size)
	ctx := context.Background()
	for b.Loop() {
		var n int64
		err := node.ReceiveFrames(ctx, h.client, &farmpb.StreamFramesRequest{Node: "n1"}, infos,
			func(int) (io.WriteCloser, error) { return discard{&n}, nil })
		if err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{ n *int64 }

func (d discard) Write(p []byte) (int, error) { *d.n += int64(len(p)); return len(p), nil }
func (d discard) Close() error                { return nil }
