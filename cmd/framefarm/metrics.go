package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/framefarm/framefarm/internal/creds"
)

// metricsFlags are --metrics and --insecure of a server role.
type metricsFlags struct {
	addr     string
	insecure bool
}

func (m *metricsFlags) register(f *cmdFlags) {
	f.StringVar(&m.addr, "metrics", "", "serve Prometheus metrics at /metrics on `ADDR` (e.g. 127.0.0.1:9090), on their own HTTP server; off when empty")
	f.BoolVar(&m.insecure, "insecure", false, "serve on a network address without a token (anyone who reaches it acts as a client of the farm)")
}

// metricsServer is how a role's metrics are served: with its token (""
// for none) and, for the coordinator, its TLS certificate.
type metricsServer struct {
	handler         http.Handler
	token           string
	tlsCert, tlsKey string
	log             *slog.Logger
}

// start serves the metrics until ctx ends. Metrics are read-only, but they
// name jobs and nodes: the rules of the farm's other listeners hold. With a
// token, a scrape must send it (Authorization: Bearer TOKEN); without one,
// only a loopback address is served unless --insecure says otherwise.
func (m *metricsFlags) start(ctx context.Context, x *exposure, s metricsServer) error {
	if m.addr == "" {
		return nil
	}
	if err := x.check("--metrics", m.addr); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", m.addr)
	if err != nil {
		return fmt.Errorf("--metrics %s: %w", m.addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", bearer(creds.NewChecker(s.token), s.handler))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		var err error
		if s.tlsCert != "" {
			err = srv.ServeTLS(lis, s.tlsCert, s.tlsKey)
		} else {
			err = srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("metrics server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	s.log.Info("metrics listening", "addr", lis.Addr().String())
	return nil
}

// bearer lets through the requests that carry check's token as a bearer
// token, as the gRPC calls carry it.
func bearer(check creds.Checker, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		md := metadata.MD{"authorization": r.Header.Values("Authorization")}
		if err := check.Check(metadata.NewIncomingContext(r.Context(), md)); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="framefarm"`)
			http.Error(w, "missing or wrong farm token: send it as Authorization: Bearer TOKEN", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}
