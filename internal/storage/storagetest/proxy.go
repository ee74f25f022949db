package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a fault-injecting reverse proxy on a loopback port in front of an
// S3: tests point clients at it and make the next requests fail or wait.
//
// It forwards every request as the client sent it, Host header included:
// SigV4 signs the host the client dialled (the proxy's), and versitygw checks
// the signature against the Host header it receives, so signed requests and
// pre-signed URLs verify through the proxy as they would directly.
type Proxy struct {
	s   *S3
	lis net.Listener
	srv *http.Server

	mu     sync.Mutex
	faults []fault // applied in order, each to the next requests it matches

	requests atomic.Int64
	faulted  atomic.Int64
	held     atomic.Int64
	bytes    atomic.Int64
}

// fault is one planned misbehaviour for the next n matching requests.
type fault struct {
	n      int
	method string // "" matches any
	prefix string // of the path (/bucket/key); "" matches any
	status int    // 0: no error answer, only the delay
	code   string
	delay  time.Duration
	// body, for a PUT: what becomes of the request's body.
	body  bodyFault
	bytes int64 // where the body is cut
}

type bodyFault int

const (
	bodyWhole bodyFault = iota
	// bodyTruncated: the first bytes are forwarded as the whole object.
	bodyTruncated
	// bodyCut: the client's connection is closed after that many bytes;
	// nothing is forwarded.
	bodyCut
	// bodyCorrupt: the byte at that offset is inverted, the length kept.
	bodyCorrupt
	// bodyLate: read whole, then held for the fault's delay and forwarded
	// whatever the client did meanwhile.
	bodyLate
)

// StartProxy starts a proxy in front of s, stopped when the test ends.
func StartProxy(t testing.TB, s *S3) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{s: s, lis: lis}
	tr := &http.Transport{DisableCompression: true}
	rp := &httputil.ReverseProxy{
		// Only where the request goes changes; req.Host (the signed host)
		// stays the proxy's address.
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = s.Addr
			r.Out.Host = r.In.Host
			// No X-Forwarded-*: the request reaches S3 as the client sent it.
		},
		// No gzip negotiation of its own: bytes pass through as they are.
		Transport:     tr,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &p.bytes}
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.requests.Add(1)
			f, ok := p.take(r.Method, r.URL.Path)
			if ok && f.body == bodyLate {
				p.faulted.Add(1)
				b, err := io.ReadAll(r.Body)
				if err != nil {
					return
				}
				time.Sleep(f.delay)
				// Not the client's context, and one with a Done channel:
				// ReverseProxy cancels a request whose context has none
				// when the client's connection closes.
				ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
				defer cancel()
				r = r.WithContext(ctx)
				r.Body = io.NopCloser(bytes.NewReader(b))
				rp.ServeHTTP(w, r)
				return
			}
			if ok && f.delay > 0 {
				p.held.Add(1)
				select {
				case <-time.After(f.delay):
				case <-r.Context().Done():
					return
				}
			}
			if ok && f.body == bodyCut {
				p.faulted.Add(1)
				_, _ = io.CopyN(io.Discard, r.Body, f.bytes)
				// No answer at all: the connection goes as a link that
				// fails mid-upload would take it.
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
				return
			}
			if ok && (f.body == bodyTruncated || f.body == bodyCorrupt) {
				p.faulted.Add(1)
				// Read whole first, so that the client finishes sending and
				// reads S3's answer as to a complete upload.
				b, err := io.ReadAll(r.Body)
				if err != nil {
					return
				}
				if f.body == bodyTruncated {
					b = b[:min(int64(len(b)), f.bytes)]
				} else if f.bytes < int64(len(b)) {
					b[f.bytes] ^= 0xff
				}
				r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
				r.Header.Set("Content-Length", fmt.Sprint(len(b)))
				rp.ServeHTTP(w, r)
				return
			}
			if ok && f.status != 0 {
				p.faulted.Add(1)
				// The body is drained so a client that sent one (a PUT)
				// reads the answer rather than a reset connection.
				_, _ = io.Copy(io.Discard, r.Body)
				body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
					`<Error><Code>%s</Code><Message>injected by storagetest.Proxy</Message><Resource>%s</Resource><RequestId>proxy-%d</RequestId></Error>`,
					f.code, r.URL.Path, p.requests.Load())
				w.Header().Set("Content-Type", "application/xml")
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				w.WriteHeader(f.status)
				if r.Method != http.MethodHead {
					n, _ := io.WriteString(w, body)
					p.bytes.Add(int64(n))
				}
				return
			}
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		if err := p.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("storagetest proxy: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = p.srv.Close()
		tr.CloseIdleConnections()
	})
	return p
}

// take consumes one use of the first planned fault that matches a
// request's method and path.
func (p *Proxy) take(method, path string) (fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.faults {
		f := &p.faults[i]
		if f.method != "" && f.method != method || !strings.HasPrefix(path, f.prefix) {
			continue
		}
		got := *f
		f.n--
		if f.n <= 0 {
			p.faults = append(p.faults[:i], p.faults[i+1:]...)
		}
		return got, true
	}
	return fault{}, false
}

func (p *Proxy) plan(f fault) {
	if f.n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, f)
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// URL is like S3.URL, through the proxy.
func (p *Proxy) URL(bucket, key string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=us-east-1&use_path_style=true", bucket, key, p.Addr())
}

// FailNext answers the next n requests with an S3 XML error of the given
// status and code (503 SlowDown, 500 InternalError, 403 AccessDenied...)
// without forwarding them.
func (p *Proxy) FailNext(n int, status int, code string) {
	p.FailNextMatching(n, "", status, code)
}

// FailNextMatching is FailNext for requests of one method only (GET, PUT,
// HEAD, POST; "" for any): others pass untouched.
func (p *Proxy) FailNextMatching(n int, method string, status int, code string) {
	p.plan(fault{n: n, method: method, status: status, code: code})
}

// FailNextUnder is FailNextMatching for requests whose path starts with
// prefix: "/bucket/" or "/bucket/key-prefix" (the URLs are path-style), so
// that a test can fail the GETs of frames and not those of parts.
func (p *Proxy) FailNextUnder(n int, method, prefix string, status int, code string) {
	p.plan(fault{n: n, method: method, prefix: prefix, status: status, code: code})
}

// TruncateNextPut forwards only the first keep bytes of the body of each of
// the next n PUTs under prefix (see FailNextUnder), as the whole object:
// S3 stores that half of it under the key and the client, which sent all
// of it, gets S3's 200. That is an object half-written where a finished
// one is expected, whatever made it so (a broken gateway, a server that
// stored what it got).
func (p *Proxy) TruncateNextPut(n int, prefix string, keep int64) {
	p.plan(fault{n: n, method: http.MethodPut, prefix: prefix, body: bodyTruncated, bytes: keep})
}

// CorruptNextPut inverts the byte at offset at of the body of each of the
// next n PUTs under prefix: S3 stores an object of the right size with
// other bytes, and the client gets S3's 200.
func (p *Proxy) CorruptNextPut(n int, prefix string, at int64) {
	p.plan(fault{n: n, method: http.MethodPut, prefix: prefix, body: bodyCorrupt, bytes: at})
}

// CutNextPut reads the first after bytes of the body of each of the next n
// PUTs under prefix, then closes the client's connection: no answer, and
// nothing reaches S3, as when the link fails mid-upload.
func (p *Proxy) CutNextPut(n int, prefix string, after int64) {
	p.plan(fault{n: n, method: http.MethodPut, prefix: prefix, body: bodyCut, bytes: after})
}

// LateNextPut takes the whole body of each of the next n PUTs under
// prefix, holds it for d, then forwards it even if the client has given up
// meanwhile: S3 stores the object after its client stopped waiting for the
// answer, as a server that had the whole upload when the client's request
// was cancelled may.
func (p *Proxy) LateNextPut(n int, prefix string, d time.Duration) {
	p.plan(fault{n: n, method: http.MethodPut, prefix: prefix, body: bodyLate, delay: d})
}

// DelayNext holds each of the next n requests for d before forwarding it.
// Planned faults are not combined: a request takes the first one planned
// (in the order of the calls) that matches its method.
func (p *Proxy) DelayNext(n int, d time.Duration) {
	p.plan(fault{n: n, delay: d})
}

// DelayNextUnder is DelayNext for requests of one method whose path
// starts with prefix (see FailNextUnder).
func (p *Proxy) DelayNextUnder(n int, method, prefix string, d time.Duration) {
	p.plan(fault{n: n, method: method, prefix: prefix, delay: d})
}

// Clear drops the faults and delays still planned.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// Requests is how many requests reached the proxy.
func (p *Proxy) Requests() int { return int(p.requests.Load()) }

// Faulted is how many requests were answered with an injected error, or
// had their body truncated or cut.
func (p *Proxy) Faulted() int { return int(p.faulted.Load()) }

// Held is how many requests a planned delay has held (or holds).
func (p *Proxy) Held() int { return int(p.held.Load()) }

// Bytes is how many response body bytes went to clients (forwarded and
// injected).
func (p *Proxy) Bytes() int64 { return p.bytes.Load() }

// countingBody counts what a client is sent of a forwarded response.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}
