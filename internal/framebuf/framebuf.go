// Package framebuf is a pool of buffers that are not zeroed, for gRPC to
// read HTTP/2 frames into (the ambassador and the node) and for the
// coordinator to read frame files into. gRPC's own pool zeroes every buffer
// it hands out, although each is overwritten by what is read into it: in a
// profile of a frame stream that was a tenth of the CPU.
package framebuf

import "sync"

// Pool is a grpc mem.BufferPool of buffers of Size bytes (the largest
// HTTP/2 frame gRPC reads, 16 KiB, when 0) that are not zeroed. Larger
// requests get a buffer of their own.
type Pool struct {
	Size   int
	frames sync.Pool
}

// frameBuf is the largest HTTP/2 frame gRPC reads.
const frameBuf = 16 << 10

func (p *Pool) size() int {
	if p.Size > 0 {
		return p.Size
	}
	return frameBuf
}

// Get returns a buffer of n bytes, whatever they hold.
func (p *Pool) Get(n int) *[]byte {
	size := p.size()
	if n > size {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.frames.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, size)
	return &b
}

// Put gives a buffer from Get back.
func (p *Pool) Put(b *[]byte) {
	if cap(*b) == p.size() {
		p.frames.Put(b)
	}
}
