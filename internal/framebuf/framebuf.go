// Package framebuf is the buffer pool the ambassador and the node give gRPC
// to read HTTP/2 frames into. gRPC's own pool zeroes every buffer it hands
// out, although each is overwritten by the frame read into it: in a profile
// of a frame stream that was a tenth of the CPU.
package framebuf

import "sync"

// Pool is a grpc mem.BufferPool of frame-sized buffers that are not zeroed.
// The zero value is ready to use.
type Pool struct{ frames sync.Pool }

// frameBuf is the largest HTTP/2 frame gRPC reads.
const frameBuf = 16 << 10

// Get returns a buffer of n bytes, whatever they hold.
func (p *Pool) Get(n int) *[]byte {
	if n > frameBuf {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.frames.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, frameBuf)
	return &b
}

// Put gives a buffer from Get back.
func (p *Pool) Put(b *[]byte) {
	if cap(*b) == frameBuf {
		p.frames.Put(b)
	}
}
