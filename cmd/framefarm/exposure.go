package main

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/framefarm/framefarm/internal/creds"
)

// Safe by default (as Redis's protected mode): a server that anyone on the
// network can reach must have the farm's token, unless its owner says
// --insecure; with a token but without TLS, the token crosses the network
// in clear, which is said once.

// loopback says whether addr (host:port) listens on loopback only. An
// empty host, 0.0.0.0 and :: listen on every interface; a name other than
// localhost may resolve anywhere.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// exposure is one process's check of its listeners.
type exposure struct {
	insecure bool
	token    bool
	tls      bool
	log      *slog.Logger
	warned   sync.Once
}

// check refuses flag's addr off loopback without a token (unless
// --insecure), and warns once of a token sent without TLS.
func (x *exposure) check(flag, addr string) error {
	if addr == "" || loopback(addr) {
		return nil
	}
	if !x.token {
		if x.insecure {
			x.log.Warn("serving without a token on a network address: anyone who reaches it controls the farm (--insecure)", "flag", flag, "addr", addr)
			return nil
		}
		return fmt.Errorf("%s %s serves anyone who can reach it, and the farm has no token: add --token TOKEN (or set %s), "+
			"or listen on loopback (127.0.0.1), or give --insecure to serve without one", flag, addr, creds.EnvToken)
	}
	if !x.tls {
		x.warned.Do(func() {
			x.log.Warn("the farm's token crosses the network in clear: add TLS (--tls-cert and --tls-key) or keep the farm on a trusted network", "flag", flag, "addr", addr)
		})
	}
	return nil
}
