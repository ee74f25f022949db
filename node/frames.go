package node

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/framefarm/framefarm/internal/chunk"
	farmpb "github.com/framefarm/framefarm/proto"
)

// ReceiveFrames streams a set's frames and writes frame i (its position in
// frames) to the writer create(i) returns, closing it after the frame's
// last chunk. It checks that every frame arrives whole. It is what a node
// does with a set's frames (exported so that the benchmark's stand-in node
// receives exactly the same way).
//
// Chunks are decoded in place (see chunk.In): the protobuf codec would
// copy every byte twice (into a zeroed buffer, then into a fresh 1 MiB
// slice per chunk), which made the node the slowest hop of the stream.
func ReceiveFrames(ctx context.Context, client farmpb.NodeServiceClient, req *farmpb.StreamFramesRequest,
	frames []*farmpb.FrameInfo, create func(pos int) (io.WriteCloser, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we stop early
	stream, err := client.StreamFrames(ctx, req, grpc.ForceCodecV2(chunk.NewCodec()))
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
		var c chunk.In
		err := stream.RecvMsg(&c)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if int(c.Position) >= len(frames) {
			c.Free()
			return fmt.Errorf("coordinator sent frame position %d of a %d-frame set", c.Position, len(frames))
		}
		if w == nil {
			pos, written = int(c.Position), 0
			if w, err = create(pos); err != nil {
				c.Free()
				return err
			}
		} else if int(c.Position) != pos {
			c.Free()
			return fmt.Errorf("frame %d ended without its last chunk", frames[pos].Number)
		}
		buf = c.AppendData(buf[:0])
		c.Free()
		if _, err := w.Write(buf); err != nil {
			return err
		}
		written += int64(len(buf))
		if c.Last {
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
