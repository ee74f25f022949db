package creds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	farmpb "github.com/framefarm/framefarm/proto"
)

func TestToken(t *testing.T) {
	t.Setenv(EnvToken, "from-env")
	if got := Token("from-flag"); got != "from-flag" {
		t.Errorf("Token(flag) = %q, want the flag", got)
	}
	if got := Token(""); got != "from-env" {
		t.Errorf("Token(\"\") = %q, want the environment's", got)
	}
	t.Setenv(EnvToken, "")
	if got := Token(""); got != "" {
		t.Errorf("Token(\"\") without environment = %q", got)
	}
}

func withAuth(values ...string) context.Context {
	md := metadata.MD{}
	for _, v := range values {
		md.Append(header, v)
	}
	return metadata.NewIncomingContext(context.Background(), md)
}

func TestChecker(t *testing.T) {
	const token = "s3cret-Token"
	c := NewChecker(token)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		ok   bool
	}{
		{"no metadata", context.Background(), false},
		{"no authorization", withAuth(), false},
		{"right", withAuth("Bearer " + token), true},
		{"wrong", withAuth("Bearer nope"), false},
		{"empty", withAuth("Bearer "), false},
		{"no scheme", withAuth(token), false},
		{"other scheme", withAuth("Basic " + token), false},
		{"lower-case scheme", withAuth("bearer " + token), false},
		{"prefix of the token", withAuth("Bearer " + token[:len(token)-1]), false},
		{"token and more", withAuth("Bearer " + token + "x"), false},
		{"trailing space", withAuth("Bearer " + token + " "), false},
		{"other case", withAuth("Bearer " + strings.ToUpper(token)), false},
		{"wrong then right", withAuth("Bearer nope", "Bearer "+token), true},
	} {
		err := c.Check(tc.ctx)
		// The tap handle, which sees the headers before the request,
		// decides the same.
		md, _ := metadata.FromIncomingContext(tc.ctx)
		if _, terr := c.Tap(context.Background(), &tap.Info{Header: md}); status.Code(terr) != status.Code(err) {
			t.Errorf("%s: Tap says %v, Check %v", tc.name, terr, err)
		}
		if tc.ok {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.name, err)
			}
			continue
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: got %v, want UNAUTHENTICATED", tc.name, err)
			continue
		}
		if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "nope") {
			t.Errorf("%s: the error repeats a token: %v", tc.name, err)
		}
		if !strings.Contains(err.Error(), "token") || !strings.Contains(err.Error(), EnvToken) {
			t.Errorf("%s: the error does not say what to do: %v", tc.name, err)
		}
	}
	if err := (Checker{}).Check(context.Background()); err != nil {
		t.Errorf("a checker without a token refused a call: %v", err)
	}
	if err := NewChecker("").Check(withAuth("Bearer x")); err != nil {
		t.Errorf("NewChecker(\"\") refused a call: %v", err)
	}
}

// FuzzChecker: a call gets in exactly when it presents the token.
func FuzzChecker(f *testing.F) {
	f.Add("tok", "tok")
	f.Add("tok", "to")
	f.Add("tok", "tok ")
	f.Add("a", "")
	f.Add("ü-token", "ü-token")
	f.Fuzz(func(t *testing.T, token, presented string) {
		if token == "" {
			return
		}
		err := NewChecker(token).Check(withAuth("Bearer " + presented))
		if (err == nil) != (presented == token) {
			t.Fatalf("token %q, presented %q: %v", token, presented, err)
		}
		if err != nil && status.Code(err) != codes.Unauthenticated {
			t.Fatalf("code %v, want UNAUTHENTICATED", status.Code(err))
		}
	})
}

// Certificates made for the tests.

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func serialNumber(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate and key signed by ca into dir and returns
// their paths: for 127.0.0.1 when server, for client authentication else.
func (ca testCA) issue(t *testing.T, dir, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestOptionErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "ca")
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, ca.pem)
	notPEM := filepath.Join(dir, "not.pem")
	writeFile(t, notPEM, []byte("hello"))
	cert, key := ca.issue(t, dir, "client", false)
	for _, tc := range []struct {
		name string
		tls  ClientTLS
		want string
	}{
		{"cert without CA", ClientTLS{Cert: cert, Key: key}, "need --tls-ca"},
		{"missing CA", ClientTLS{CA: filepath.Join(dir, "none.pem")}, "--tls-ca"},
		{"CA not PEM", ClientTLS{CA: notPEM}, "holds no PEM certificate"},
		{"cert without key", ClientTLS{CA: caFile, Cert: cert}, "--tls-cert"},
		{"key is not the cert's", ClientTLS{CA: caFile, Cert: cert, Key: notPEM}, "--tls-key"},
	} {
		if _, err := DialOptions("t", tc.tls); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DialOptions, %s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, err := DialOptions("t", ClientTLS{CA: caFile, Cert: cert, Key: key}); err != nil {
		t.Errorf("DialOptions with a CA and a client certificate: %v", err)
	}
	scert, skey := ca.issue(t, dir, "server", true)
	for _, tc := range []struct {
		name string
		tls  ServerTLS
		want string
	}{
		{"client CA without cert", ServerTLS{ClientCA: caFile}, "--tls-client-ca needs"},
		{"cert without key", ServerTLS{Cert: scert}, "--tls-cert"},
		{"missing files", ServerTLS{Cert: scert + ".x", Key: skey}, "--tls-cert"},
		{"client CA not PEM", ServerTLS{Cert: scert, Key: skey, ClientCA: notPEM}, "holds no PEM certificate"},
	} {
		if _, err := ServerOptions(tc.tls); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ServerOptions, %s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if opts, err := ServerOptions(ServerTLS{}); err != nil || opts != nil {
		t.Errorf("ServerOptions without TLS = %v, %v; want nothing", opts, err)
	}
}

// farm answers ListJobs: a call of the farm's that needs the token.
type farm struct {
	farmpb.UnimplementedFarmServiceServer
}

func (farm) ListJobs(context.Context, *farmpb.ListJobsRequest) (*farmpb.ListJobsResponse, error) {
	return &farmpb.ListJobsResponse{}, nil
}

// serve runs a gRPC server with a farm service and the health service
// behind the farm's credentials, checked as the coordinator checks them,
// and returns its address.
func serve(t *testing.T, token string, st ServerTLS) string {
	t.Helper()
	opts, err := ServerOptions(st)
	if err != nil {
		t.Fatal(err)
	}
	check := NewChecker(token)
	srv := grpc.NewServer(append(opts, grpc.InTapHandle(check.Tap),
		grpc.ChainUnaryInterceptor(check.Unary), grpc.ChainStreamInterceptor(check.Stream))...)
	farmpb.RegisterFarmServiceServer(srv, farm{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func call(t *testing.T, addr, token string, ct ClientTLS) error {
	t.Helper()
	opts, err := DialOptions(token, ct)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = farmpb.NewFarmServiceClient(conn).ListJobs(ctx, &farmpb.ListJobsRequest{})
	return err
}

// TestHealthWithoutToken: probes (Kubernetes', grpc_health_probe) send no
// token, so the health service answers without one; every other call
// still needs it.
func TestHealthWithoutToken(t *testing.T) {
	addr := serve(t, "tok", ServerTLS{})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check without a token: %v, %v; want SERVING", r, err)
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		var r *healthpb.HealthCheckResponse
		r, err = w.Recv()
		if err == nil && r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Watch without a token: %v; want SERVING", r)
		}
	}
	if err != nil {
		t.Errorf("Watch without a token: %v", err)
	}
	_, err = farmpb.NewFarmServiceClient(conn).ListJobs(ctx, &farmpb.ListJobsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListJobs without a token: %v; want Unauthenticated", err)
	}
	if err := call(t, addr, "tok", ClientTLS{}); err != nil {
		t.Errorf("ListJobs with the token: %v", err)
	}
	// Only the health service's own methods are open.
	for _, m := range []string{"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"} {
		if !Open(m) {
			t.Errorf("Open(%q) = false", m)
		}
	}
	for _, m := range []string{farmpb.FarmService_ListJobs_FullMethodName, "/grpc.health.v1.HealthX/Check", "/grpc.health.v1.Health", "grpc.health.v1.Health/Check"} {
		if Open(m) {
			t.Errorf("Open(%q) = true", m)
		}
	}
}

// TestTLS: TLS and mutual TLS with certificates made here, over loopback.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newCA(t, "farm CA"), newCA(t, "other CA")
	caFile, otherFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other.pem")
	writeFile(t, caFile, ca.pem)
	writeFile(t, otherFile, other.pem)
	scert, skey := ca.issue(t, dir, "server", true)
	ccert, ckey := ca.issue(t, dir, "client", false)
	xcert, xkey := other.issue(t, dir, "stranger", false)

	tlsAddr := serve(t, "tok", ServerTLS{Cert: scert, Key: skey})
	mtlsAddr := serve(t, "", ServerTLS{Cert: scert, Key: skey, ClientCA: caFile})
	plainAddr := serve(t, "tok", ServerTLS{})
	for _, tc := range []struct {
		name  string
		addr  string
		token string
		tls   ClientTLS
		want  codes.Code
	}{
		{"TLS with the CA and the token", tlsAddr, "tok", ClientTLS{CA: caFile}, codes.OK},
		{"TLS without the token", tlsAddr, "", ClientTLS{CA: caFile}, codes.Unauthenticated},
		{"TLS with a wrong token", tlsAddr, "nope", ClientTLS{CA: caFile}, codes.Unauthenticated},
		{"plain text to a TLS server", tlsAddr, "tok", ClientTLS{}, codes.Unavailable},
		{"TLS trusting another CA", tlsAddr, "tok", ClientTLS{CA: otherFile}, codes.Unavailable},
		{"mutual TLS with a client certificate", mtlsAddr, "", ClientTLS{CA: caFile, Cert: ccert, Key: ckey}, codes.OK},
		{"mutual TLS without a client certificate", mtlsAddr, "", ClientTLS{CA: caFile}, codes.Unavailable},
		{"mutual TLS with a certificate of another CA", mtlsAddr, "", ClientTLS{CA: caFile, Cert: xcert, Key: xkey}, codes.Unavailable},
		{"token in plain text", plainAddr, "tok", ClientTLS{}, codes.OK},
		{"TLS to a plain-text server", plainAddr, "tok", ClientTLS{CA: caFile}, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := call(t, tc.addr, tc.token, tc.tls)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}
