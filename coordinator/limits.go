package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/internal/chunk"
	farmpb "github.com/framefarm/framefarm/proto"
)

// What a client can make the coordinator hold. gRPC reads a whole message
// before any handler sees it, up to the server's one receive limit; that
// limit is the largest message a client of ours sends (an upload's chunk),
// each call is held to what it needs once read, streams per connection are
// capped by gRPC, and connections in total and per peer address here.
const (
	// maxRecvMsg is the largest message the coordinator reads: a chunk of
	// a part or of uploaded frames, and its few header bytes.
	maxRecvMsg = chunk.Size + 16<<10
	// maxStreams is how many calls a connection may have at once: a node's
	// ambassador needs a handful (a long poll, heartbeats, a frame stream
	// and an upload per slot).
	maxStreams = 64
	// fdReserve is how many descriptors connections may never take: the
	// store, the parts being received, the frames being streamed, the join
	// and its ffmpeg.
	fdReserve = 512
	// handshakeTimeout bounds how long a new connection may take to send
	// its HTTP/2 preface (and TLS handshake) before it is closed.
	handshakeTimeout = 10 * time.Second
)

// DefaultMaxConnsPerPeer is how many connections one address may hold by
// default: a node's ambassador holds two, and a thousand simulated nodes
// of the benchmark share one loopback address.
const DefaultMaxConnsPerPeer = 1200

// methodCap is the largest request a call needs, checked on each message
// it reads: a heartbeat is a few hundred bytes whatever a client sends.
func methodCap(method string) int {
	switch method {
	case farmpb.NodeService_UploadPart_FullMethodName, farmpb.FarmService_UploadFrames_FullMethodName:
		return maxRecvMsg
	case farmpb.NodeService_ReleaseSet_FullMethodName:
		// A failure's text, which nodes cut to 2000 bytes.
		return 16 << 10
	case farmpb.FarmService_SubmitJob_FullMethodName:
		// Paths and settings.
		return 64 << 10
	default:
		// Names, ids, numbers and a breaker's counts.
		return 4 << 10
	}
}

// errTooLarge: a request larger than its call needs.
var errTooLarge = errors.New("request too large")

func checkSize(method string, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	if n, limit := proto.Size(pm), methodCap(method); n > limit {
		return fmt.Errorf("%w: %s takes messages of up to %d bytes, this one has %d", errTooLarge, method, limit, n)
	}
	return nil
}

func sizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := checkSize(info.FullMethod, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func sizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, &sizedStream{ServerStream: ss, method: info.FullMethod})
}

type sizedStream struct {
	grpc.ServerStream
	method string
}

func (s *sizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkSize(s.method, m)
}

// connLimits bound the connections the coordinator accepts.
type connLimits struct {
	total, perPeer int
}

// descriptorLimit returns the process's descriptor limit (Go raises the
// soft limit to the hard one at start) and so the connections it leaves
// room for beside fdReserve.
func descriptorLimit() (limit, conns int) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0
	}
	limit = int(min(rl.Cur, 1<<30))
	reserve := min(fdReserve, limit/2)
	return limit, max(limit-reserve, 1)
}

// limitListener refuses a connection beyond the total or its peer
// address's share, closing it at once: an idle HTTP/2 connection that
// answers pings would otherwise hold a descriptor and buffers for good.
type limitListener struct {
	net.Listener
	limits connLimits
	log    *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	open    int
	perPeer map[string]int
	// refused counts the connections refused since the last log line,
	// which is written at most every 10 s.
	refused  int
	lastNote time.Time
}

func newLimitListener(l net.Listener, lim connLimits, log *slog.Logger, now func() time.Time) *limitListener {
	return &limitListener{Listener: l, limits: lim, log: log, now: now, perPeer: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				l.log.Error("out of file descriptors accepting a connection: the coordinator's own limit, raise it (ulimit -n) or lower --max-conns", "err", err)
			}
			return nil, err
		}
		peer := peerHost(c.RemoteAddr())
		if why := l.admit(peer); why != "" {
			c.Close()
			l.note(peer, why)
			continue
		}
		return &limitConn{Conn: c, l: l, peer: peer}, nil
	}
}

// admit counts a new connection from peer in, or says why it may not be.
func (l *limitListener) admit(peer string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.limits.total > 0 && l.open >= l.limits.total:
		return fmt.Sprintf("the coordinator holds its %d connections (--max-conns)", l.limits.total)
	case l.limits.perPeer > 0 && l.perPeer[peer] >= l.limits.perPeer:
		return fmt.Sprintf("%s holds its %d connections (--max-conns-per-peer)", peer, l.limits.perPeer)
	}
	l.open++
	l.perPeer[peer]++
	return ""
}

func (l *limitListener) release(peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.perPeer[peer]--; l.perPeer[peer] <= 0 {
		delete(l.perPeer, peer)
	}
}

func (l *limitListener) note(peer, why string) {
	l.mu.Lock()
	l.refused++
	now := l.now()
	if now.Sub(l.lastNote) < 10*time.Second {
		l.mu.Unlock()
		return
	}
	n := l.refused
	l.refused, l.lastNote = 0, now
	l.mu.Unlock()
	l.log.Warn("connections refused", "last_peer", peer, "why", why, "refused", n)
}

func peerHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

type limitConn struct {
	net.Conn
	l    *limitListener
	peer string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.peer) })
	return err
}
