// Package creds is the farm's credentials: the shared token every call
// carries, and TLS (optionally mutual) between the coordinator and its
// clients. The coordinator checks them; the ambassador, status and fetch
// present them.
package creds

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// EnvToken is the environment variable that holds the token when --token
// is not given.
const EnvToken = "FRAMEFARM_TOKEN"

const header = "authorization"

// Token returns flagValue, or the environment's token when it is empty.
func Token(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv(EnvToken)
}

// tokenCreds attaches the token to every call.
type tokenCreds struct {
	token  string
	secure bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{header: "Bearer " + t.token}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return t.secure }

// ClientTLS is what a client needs for TLS: the CA that signed the
// coordinator's certificate and, for mutual TLS, its own certificate.
type ClientTLS struct {
	CA, Cert, Key string
}

// DialOptions are a client's transport and token options.
func DialOptions(token string, t ClientTLS) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if t.CA == "" && (t.Cert != "" || t.Key != "") {
		return nil, errors.New("--tls-cert and --tls-key need --tls-ca (the CA of the coordinator's certificate)")
	}
	if t.CA != "" {
		cfg, err := clientTLS(t)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCreds{token: token, secure: t.CA != ""}))
	}
	return opts, nil
}

func clientTLS(t ClientTLS) (*tls.Config, error) {
	pool, err := loadPool(t.CA, "--tls-ca")
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if t.Cert != "" || t.Key != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", t.Cert, t.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ServerTLS is the coordinator's TLS: its certificate and key, and for
// mutual TLS the CA its clients' certificates must chain to.
type ServerTLS struct {
	Cert, Key, ClientCA string
}

// ServerOptions returns the coordinator's transport option (nil without TLS).
func ServerOptions(t ServerTLS) ([]grpc.ServerOption, error) {
	cfg, err := ServerConfig(t)
	if cfg == nil || err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}

// ServerConfig is the coordinator's TLS configuration (nil without TLS),
// for its gRPC and its HTTP ports alike.
func ServerConfig(t ServerTLS) (*tls.Config, error) {
	if t.Cert == "" && t.Key == "" {
		if t.ClientCA != "" {
			return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", t.Cert, t.Key, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCA != "" {
		pool, err := loadPool(t.ClientCA, "--tls-client-ca")
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadPool(path, flag string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", flag, path)
	}
	return pool, nil
}

// Checker verifies the token of incoming calls. The zero value (no token)
// lets every call in.
type Checker struct {
	sum [32]byte
	set bool
}

// NewChecker checks calls against token ("" checks nothing).
func NewChecker(token string) Checker {
	if token == "" {
		return Checker{}
	}
	return Checker{sum: sha256.Sum256([]byte(token)), set: true}
}

// Check returns UNAUTHENTICATED unless ctx carries the token. Hashing both
// sides first makes the comparison constant-time whatever the lengths.
func (c Checker) Check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	return c.checkMD(md)
}

// Tap is the server's InTapHandle: it checks the token from the headers as
// a call's stream is created, before any of its messages is read, so that
// a client without the token cannot make the server take in a request of
// up to the message limit (or many of them) first.
func (c Checker) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if Open(info.FullMethodName) {
		return ctx, nil
	}
	return ctx, c.checkMD(info.Header)
}

// Open reports whether method is called without the token: only the
// standard health service, which Kubernetes' gRPC probes and
// grpc_health_probe call without one, and which tells nothing but whether
// the server serves.
func Open(method string) bool {
	return strings.HasPrefix(method, "/"+healthpb.Health_ServiceDesc.ServiceName+"/")
}

func (c Checker) checkMD(md metadata.MD) error {
	if !c.set {
		return nil
	}
	for _, v := range md.Get(header) {
		got, ok := strings.CutPrefix(v, "Bearer ")
		if !ok {
			continue
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], c.sum[:]) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "missing or wrong farm token: pass the coordinator's --token (or set "+EnvToken+")")
}

// Unary and Stream are the server interceptors that check every call.
func (c Checker) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if Open(info.FullMethod) {
		return h(ctx, req)
	}
	if err := c.Check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (c Checker) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if Open(info.FullMethod) {
		return h(srv, ss)
	}
	if err := c.Check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
