package main

// Security, end to end: the real binary over loopback with a farm token,
// TLS and mutual TLS (certificates made by the test), a gRPC client that is
// not ours (grpcurl), and raw gRPC calls that try to leave the job's folder
// or overflow its bounds.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	farmpb "github.com/framefarm/framefarm/proto"
)

// secRun runs the binary to its end with extra environment (FRAMEFARM_TOKEN
// is never inherited) and returns its exit code and output.
func secRun(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FRAMEFARM_TOKEN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, o.String(), e.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), o.String(), e.String()
	}
	t.Fatalf("framefarm %s: %v", strings.Join(args, " "), err)
	return -1, "", ""
}

// startFarmWith is startFarm with extra ambassador flags (credentials).
func startFarmWith(t *testing.T, frames string, nodes int, ambArgs []string, coordArgs ...string) *farm {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	args := append([]string{"coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0",
		"--heartbeat-timeout", "5s", "--poll-window", "2s"}, coordArgs...)
	coord, m := start(t, "coordinator", coordReady, args...)
	f := &farm{coord: coord, job: m[1], addr: m[2]}
	for i := 0; i < nodes; i++ {
		f.addNode(t, fmt.Sprintf("node-%d", i), ambArgs...)
	}
	return f
}

// addNode starts an ambassador with ambArgs and a node named name behind it.
func (f *farm) addNode(t *testing.T, name string, ambArgs ...string) *proc {
	t.Helper()
	_, am := start(t, "ambassador of "+name, ambReady,
		append([]string{"ambassador", "--coordinator", f.addr, "--listen", "127.0.0.1:0"}, ambArgs...)...)
	p, _ := start(t, name, nil, "node", "--ambassador", am[1], "--name", name, "--once")
	return p
}

// fetchWith waits for the video and downloads it with the given flags.
func (f *farm) fetchWith(t *testing.T, out string, flags ...string) {
	t.Helper()
	code, stdout, stderr := secRun(t, nil, append([]string{"fetch", "--coordinator", f.addr, "-o", out, "--wait"}, flags...)...)
	if code != 0 {
		t.Fatalf("fetch %s: exit %d\n%s%s", strings.Join(flags, " "), code, stdout, stderr)
	}
}

// sameAsOneRun checks that video decodes to the frames of one plain ffmpeg
// FFV1 run over the n frames f_0001.png... in frames.
func sameAsOneRun(t *testing.T, video, frames string, n int) {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref.mkv")
	_, colour := plainColour(t, filepath.Join(frames, "f_0001.png"), "ffv1", "yuv420p", "mkv")
	runCmd(t, "ffmpeg", append(append([]string{"-v", "error", "-framerate", "24", "-start_number", "1", "-i", filepath.Join(frames, "f_%04d.png"),
		"-c:v", "ffv1", "-level", "3", "-pix_fmt", "yuv420p"}, colour...), ref)...)
	got, want := framemd5(t, video), framemd5(t, ref)
	if len(got) != n || len(want) != n {
		t.Fatalf("frames: farm %d, ffmpeg %d, want %d", len(got), len(want), n)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frame %d differs: farm %q, ffmpeg %q", i, got[i], want[i])
		}
	}
}

func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "ff-" + hex.EncodeToString(b)
}

// waitOutput waits until p has printed want.
func waitOutput(t *testing.T, p *proc, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %s:\n%s", p.name, want, d, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dialRaw(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func wantCode(t *testing.T, what string, err error, want ...codes.Code) {
	t.Helper()
	if got := status.Code(err); !slices.Contains(want, got) {
		t.Errorf("%s: %v (%s), want %v", what, err, got, want)
	}
}

// TestTokenAuth: with --token, only callers holding the token get in. An
// ambassador with the right one renders the job; status and fetch without
// it, or with a wrong one, exit 1 and say so; an ambassador with a wrong
// token gets its node nowhere; the coordinator never writes either token
// in its log; FRAMEFARM_TOKEN works in place of --token.
func TestTokenAuth(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	genFrames(t, frames, 12, 1, "64x48")
	token, wrong := randomToken(t), randomToken(t)
	f := startFarmWith(t, frames, 0, nil, "--codec", "ffv1", "--sets", "2", "--token", token)

	// An ambassador holding a wrong token: its node gets nowhere.
	intruder := f.addNode(t, "intruder", "--token", wrong)

	// Raw calls without the token, to both services.
	conn := dialRaw(t, f.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := farmpb.NewFarmServiceClient(conn).GetJob(ctx, &farmpb.GetJobRequest{})
	wantCode(t, "GetJob without a token", err, codes.Unauthenticated)
	_, err = farmpb.NewNodeServiceClient(conn).AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: "raw"})
	wantCode(t, "AcquireSet without a token", err, codes.Unauthenticated)
	wrongCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+wrong)
	_, err = farmpb.NewFarmServiceClient(conn).GetJob(wrongCtx, &farmpb.GetJobRequest{})
	wantCode(t, "GetJob with a wrong token", err, codes.Unauthenticated)
	stream, err := farmpb.NewNodeServiceClient(conn).StreamFrames(ctx, &farmpb.StreamFramesRequest{Node: "raw", Token: 1})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "StreamFrames without a token", err, codes.Unauthenticated)

	// status and fetch without the token or with a wrong one.
	video := filepath.Join(tmp, "refused.mkv")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"status without a token", nil, []string{"status", "--coordinator", f.addr}},
		{"status with a wrong token", nil, []string{"status", "--coordinator", f.addr, "--token", wrong}},
		{"status with a wrong FRAMEFARM_TOKEN", []string{"FRAMEFARM_TOKEN=" + wrong}, []string{"status", "--coordinator", f.addr}},
		{"status --watch without a token", nil, []string{"status", "--coordinator", f.addr, "--watch"}},
		{"fetch without a token", nil, []string{"fetch", "--coordinator", f.addr, "-o", video}},
		{"fetch --wait with a wrong token", nil, []string{"fetch", "--coordinator", f.addr, "-o", video, "--wait", "--token", wrong}},
	} {
		code, stdout, stderr := secRun(t, tc.env, tc.args...)
		if code != 1 || !strings.Contains(stderr, "missing or wrong farm token") || !strings.Contains(stderr, "--token") {
			t.Errorf("%s: exit %d, want 1 and a message about the token:\n%s%s", tc.name, code, stdout, stderr)
		}
		if strings.Contains(stdout+stderr, token) || strings.Contains(stdout+stderr, wrong) {
			t.Errorf("%s: the output shows a token:\n%s%s", tc.name, stdout, stderr)
		}
	}
	if _, err := os.Stat(video); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused fetch left %s: %v", video, err)
	}

	// The intruder's node is told UNAUTHENTICATED, and keeps being.
	waitOutput(t, intruder, "Unauthenticated", 30*time.Second)

	// The farm's own node renders the job.
	f.addNode(t, "node-0", "--token", token)
	out := filepath.Join(tmp, "out.mkv")
	f.fetchWith(t, out, "--token", token)
	sameAsOneRun(t, out, frames, 12)

	// FRAMEFARM_TOKEN in place of --token.
	code, stdout, stderr := secRun(t, []string{"FRAMEFARM_TOKEN=" + token}, "status", "--coordinator", f.addr, "--json")
	if code != 0 {
		t.Fatalf("status with FRAMEFARM_TOKEN: exit %d\n%s", code, stderr)
	}
	var st struct {
		State string `json:"state"`
		Nodes []struct {
			Name string `json:"name"`
		} `json:"nodes"`
		Sets []struct {
			Node string `json:"node"`
		} `json:"sets"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	if st.State != "done" {
		t.Errorf("job is %s after the fetch, want done", st.State)
	}
	for _, n := range st.Nodes {
		if n.Name == "intruder" {
			t.Errorf("the node with a wrong token reached the coordinator:\n%s", stdout)
		}
	}
	for _, s := range st.Sets {
		if s.Node != "node-0" {
			t.Errorf("a set was rendered by %q, want node-0", s.Node)
		}
	}
	select {
	case <-intruder.done:
		t.Errorf("the intruder's node ended (%v); it should still be refused:\n%s", intruder.err, intruder.out.String())
	default:
	}
	if n := strings.Count(intruder.out.String(), "Unauthenticated"); n < 2 {
		t.Errorf("the intruder's node was refused %d times; want it to keep asking and be refused", n)
	}

	log := f.coord.out.String()
	if strings.Contains(log, token) || strings.Contains(log, wrong) {
		t.Errorf("the coordinator's log shows a token:\n%s", log)
	}
	if strings.Contains(log, "panic") {
		t.Errorf("the coordinator panicked:\n%s", log)
	}
}

// Certificates made by the test.

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, dir, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
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
	ca := testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

func serialNumber(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes a certificate signed by ca and its key: for 127.0.0.1 when
// server, for client authentication otherwise.
func (ca testCA) issue(t *testing.T, dir, name string, server bool) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(t, cert, "CERTIFICATE", der)
	writePEM(t, key, "PRIVATE KEY", kder)
	return cert, key
}

// TestTLS: a coordinator serving TLS (with a token too), and one requiring
// mutual TLS; a job renders through an ambassador with the right
// credentials, and clients without them are refused.
func TestTLS(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	certs := t.TempDir()
	ca, other := newTestCA(t, certs, "farm-ca"), newTestCA(t, certs, "other-ca")
	srvCert, srvKey := ca.issue(t, certs, "coordinator", true)
	cliCert, cliKey := ca.issue(t, certs, "client", false)
	strCert, strKey := other.issue(t, certs, "stranger", false)
	token := randomToken(t)

	type check struct {
		name string
		args []string
		ok   bool
		hint string // what the refusal must say
	}
	for _, tc := range []struct {
		name      string
		coordArgs []string
		clientArg []string // what the farm's own clients pass
		checks    []check
	}{
		{
			name:      "TLS",
			coordArgs: []string{"--tls-cert", srvCert, "--tls-key", srvKey, "--token", token},
			clientArg: []string{"--tls-ca", ca.file, "--token", token},
			checks: []check{
				{"status without --tls-ca", []string{"--token", token}, false, "pass --tls-ca"},
				{"status trusting another CA", []string{"--tls-ca", other.file, "--token", token}, false, "check --tls-ca"},
				{"status over TLS without the token", []string{"--tls-ca", ca.file}, false, "missing or wrong farm token"},
				{"status with --tls-ca and the token", []string{"--tls-ca", ca.file, "--token", token}, true, ""},
			},
		},
		{
			name:      "mutual TLS",
			coordArgs: []string{"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", ca.file},
			clientArg: []string{"--tls-ca", ca.file, "--tls-cert", cliCert, "--tls-key", cliKey},
			checks: []check{
				{"status in plain text", nil, false, "pass --tls-ca"},
				{"status without a client certificate", []string{"--tls-ca", ca.file}, false, "pass --tls-cert and --tls-key"},
				{"status with a client certificate of another CA", []string{"--tls-ca", ca.file, "--tls-cert", strCert, "--tls-key", strKey}, false,
					"check that --tls-cert is signed by a CA the coordinator trusts"},
				{"status with a client certificate", []string{"--tls-ca", ca.file, "--tls-cert", cliCert, "--tls-key", cliKey}, true, ""},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			frames := filepath.Join(tmp, "frames")
			genFrames(t, frames, 12, 1, "64x48")
			f := startFarmWith(t, frames, 1, tc.clientArg, append([]string{"--codec", "ffv1", "--sets", "2"}, tc.coordArgs...)...)
			out := filepath.Join(tmp, "out.mkv")
			f.fetchWith(t, out, tc.clientArg...)
			sameAsOneRun(t, out, frames, 12)
			for _, c := range tc.checks {
				code, stdout, stderr := secRun(t, nil, append([]string{"status", "--coordinator", f.addr}, c.args...)...)
				switch {
				case c.ok && (code != 0 || !strings.Contains(stdout, "done")):
					t.Errorf("%s: exit %d, want 0 and the job done:\n%s%s", c.name, code, stdout, stderr)
				case !c.ok && code != 1:
					t.Errorf("%s: exit %d, want 1:\n%s%s", c.name, code, stdout, stderr)
				case !c.ok && strings.Contains(stdout, f.job):
					t.Errorf("%s: refused, yet it shows the job:\n%s", c.name, stdout)
				case !strings.Contains(stderr, c.hint):
					t.Errorf("%s: the refusal does not say %q:\n%s", c.name, c.hint, stderr)
				}
				if !c.ok {
					t.Logf("%s: %s", c.name, strings.TrimSpace(stderr))
				}
			}
			// A raw client that speaks plain text gets nothing either.
			conn := dialRaw(t, f.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := farmpb.NewFarmServiceClient(conn).GetJob(ctx, &farmpb.GetJobRequest{})
			wantCode(t, "plain-text GetJob", err, codes.Unavailable)
		})
	}
}

// grpcurl is installed once per run, into the folder of the test binary.
var grpcurlInstall struct {
	once sync.Once
	path string
	out  string
	err  error
}

const grpcurlModule = "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3"

func grpcurl(t *testing.T) string {
	t.Helper()
	g := &grpcurlInstall
	g.once.Do(func() {
		gobin := filepath.Join(filepath.Dir(binary), "gobin")
		cmd := exec.Command("go", "install", grpcurlModule)
		cmd.Env = append(os.Environ(), "GOBIN="+gobin)
		out, err := cmd.CombinedOutput()
		g.path, g.out, g.err = filepath.Join(gobin, "grpcurl"), string(out), err
	})
	if g.err != nil {
		fetch := []string{"dial tcp", "no such host", "connection refused", "i/o timeout", "proxy.golang.org",
			"TLS handshake", "network is unreachable", "module lookup disabled", "403 Forbidden", "410 Gone"}
		for _, s := range fetch {
			if strings.Contains(g.out, s) {
				t.Skipf("go cannot fetch %s (no module proxy here?), so no grpcurl: %v\n%s", grpcurlModule, g.err, g.out)
			}
		}
		t.Fatalf("go install %s: %v\n%s", grpcurlModule, g.err, g.out)
	}
	return g.path
}

// runGrpcurl runs grpcurl; it exits non-zero for a failed call.
func runGrpcurl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, grpcurl(t), append([]string{"-max-time", "20"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
	return -1, ""
}

// TestGrpcurl: a gRPC client that is not ours. With --reflection it lists
// the services, but only with the token; calls with hostile arguments get
// error codes and the coordinator keeps serving. Without --reflection the
// services are not listed.
func TestGrpcurl(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	grpcurl(t) // install first, or skip
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	genFrames(t, frames, 6, 1, "32x32")
	token := randomToken(t)
	auth := "authorization: Bearer " + token
	f := startFarmWith(t, frames, 0, nil, "--reflection", "--token", token)
	plain := startFarmWith(t, frames, 0, nil, "--token", token)

	code, out := runGrpcurl(t, "-plaintext", f.addr, "list")
	if code == 0 || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("list without the token: exit %d, want an Unauthenticated failure:\n%s", code, out)
	}
	code, out = runGrpcurl(t, "-plaintext", "-H", "authorization: Bearer "+token+"x", f.addr, "list")
	if code == 0 || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("list with a wrong token: exit %d, want an Unauthenticated failure:\n%s", code, out)
	}
	code, out = runGrpcurl(t, "-plaintext", "-H", auth, f.addr, "list")
	if code != 0 || !strings.Contains(out, "framefarm.v1.NodeService") || !strings.Contains(out, "framefarm.v1.FarmService") {
		t.Errorf("list with the token: exit %d, want both services:\n%s", code, out)
	}

	for _, tc := range []struct {
		name, method, body, want string
	}{
		{"GetJob of ../../etc/passwd", "framefarm.v1.FarmService/GetJob", `{"job_id":"../../etc/passwd"}`, "NotFound"},
		{"GetJob of /etc/passwd", "framefarm.v1.FarmService/GetJob", `{"job_id":"/etc/passwd"}`, "NotFound"},
		{"DownloadVideo of ../", "framefarm.v1.FarmService/DownloadVideo", `{"job_id":"../"}`, "NotFound"},
		{"Heartbeat for set 99999", "framefarm.v1.NodeService/Heartbeat", `{"node":"x","set_index":99999,"token":"1","frames_done":5}`, "NotFound"},
		{"Heartbeat for set 2^32-1", "framefarm.v1.NodeService/Heartbeat", `{"node":"x","set_index":4294967295,"token":"18446744073709551615"}`, "NotFound"},
		{"StreamFrames for set 99999", "framefarm.v1.NodeService/StreamFrames", `{"node":"x","set_index":99999,"token":"1"}`, "NotFound"},
		{"ReleaseSet of a set not held", "framefarm.v1.NodeService/ReleaseSet", `{"node":"x","set_index":0,"token":"7"}`, "FailedPrecondition"},
		{"AcquireSet without a node name", "framefarm.v1.NodeService/AcquireSet", `{}`, "InvalidArgument"},
	} {
		code, out := runGrpcurl(t, "-plaintext", "-H", auth, "-d", tc.body, f.addr, tc.method)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want %s:\n%s", tc.name, code, tc.want, out)
		}
	}
	code, out = runGrpcurl(t, "-plaintext", "-H", auth, "-d", `{}`, f.addr, "framefarm.v1.FarmService/GetJob")
	if code != 0 || !strings.Contains(out, f.job) {
		t.Errorf("GetJob after the hostile calls: exit %d, want the job %s:\n%s", code, f.job, out)
	}
	select {
	case <-f.coord.done:
		t.Fatalf("the coordinator exited: %v\n%s", f.coord.err, f.coord.out.String())
	default:
	}

	code, out = runGrpcurl(t, "-plaintext", "-H", auth, plain.addr, "list")
	if code == 0 || strings.Contains(out, "framefarm.v1.NodeService") {
		t.Errorf("list without --reflection: exit %d, want a failure:\n%s", code, out)
	}
	t.Logf("list without --reflection: %s", strings.TrimSpace(out))
}

// TestPathTraversalAndLimits: requests whose job ids try to leave the job's
// folder, out-of-range sets, and uploads beyond their bounds, sent with a
// raw gRPC client to a real coordinator; and frames folders holding links
// that leave them.
func TestPathTraversalAndLimits(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	genFrames(t, frames, 12, 1, "32x32")
	data := filepath.Join(tmp, "data")
	f := startFarmWith(t, frames, 0, nil, "--codec", "ffv1", "--sets", "4", "--data", data)
	conn := dialRaw(t, f.addr)
	nc, fc := farmpb.NewNodeServiceClient(conn), farmpb.NewFarmServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := listTree(t, data)

	notOurs := []codes.Code{codes.NotFound, codes.InvalidArgument}
	for _, id := range []string{
		"../", "..", ".", "/", "../../etc/passwd", "/etc/passwd", strings.Repeat("../", 64) + "etc/passwd",
		"../" + f.job, "./" + f.job, f.job + "/", f.job + "/../" + f.job, "jobs/" + f.job, f.job + "/../../framefarm.db",
		"\x00", f.job + "\x00", "\x00" + f.job, "a\x00/../b", "..\\..\\windows", "%2e%2e%2f", " " + f.job,
	} {
		what := func(rpc string) string { return fmt.Sprintf("%s with job id %q", rpc, id) }
		_, err := fc.GetJob(ctx, &farmpb.GetJobRequest{JobId: id})
		wantCode(t, what("GetJob"), err, notOurs...)
		dl, err := fc.DownloadVideo(ctx, &farmpb.DownloadVideoRequest{JobId: id})
		if err == nil {
			_, err = dl.Recv()
		}
		wantCode(t, what("DownloadVideo"), err, notOurs...)
		we, err := fc.WatchEvents(ctx, &farmpb.WatchEventsRequest{JobId: id})
		if err == nil {
			_, err = we.Recv()
		}
		wantCode(t, what("WatchEvents"), err, notOurs...)
		_, err = nc.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n", JobId: id, Token: 1})
		wantCode(t, what("Heartbeat"), err, notOurs...)
		_, err = nc.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: "n", JobId: id, Token: 1, Error: "x"})
		wantCode(t, what("ReleaseSet"), err, notOurs...)
		sf, err := nc.StreamFrames(ctx, &farmpb.StreamFramesRequest{Node: "n", JobId: id, Token: 1})
		if err == nil {
			_, err = sf.Recv()
		}
		wantCode(t, what("StreamFrames"), err, notOurs...)
		_, err = rawUpload(ctx, nc, &farmpb.PartHeader{Node: "n", JobId: id, Token: 1, Size: 10}, []byte("0123456789"))
		wantCode(t, what("UploadPart"), err, notOurs...)
	}
	for _, idx := range []uint32{4, 99999, 1 << 31, 1<<32 - 1} {
		_, err := nc.Heartbeat(ctx, &farmpb.HeartbeatRequest{Node: "n", SetIndex: idx, Token: 1})
		wantCode(t, fmt.Sprintf("Heartbeat for set %d", idx), err, codes.NotFound)
		sf, err := nc.StreamFrames(ctx, &farmpb.StreamFramesRequest{Node: "n", SetIndex: idx, Token: 1})
		if err == nil {
			_, err = sf.Recv()
		}
		wantCode(t, fmt.Sprintf("StreamFrames for set %d", idx), err, codes.NotFound)
	}
	_, err := nc.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: strings.Repeat("n", 201)})
	wantCode(t, "AcquireSet with a 201-byte node name", err, codes.InvalidArgument)
	if after := listTree(t, data); after != before {
		t.Errorf("the hostile requests changed the data folder:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Uploads beyond their bounds, each under a real lease. A refused part
	// counts as a failure of its set on its node, and a node gets the sets
	// it has not failed first: with these names, sets 0, 1 and 2 fail twice
	// each, and none three times (which would fail the job).
	names := []string{"rogue-1", "rogue-1", "rogue-1", "rogue-2", "rogue-2", "rogue-2", "rogue-2"}
	grant := func() (*farmpb.Assignment, string) {
		t.Helper()
		name := names[0]
		names = names[1:]
		resp, err := nc.AcquireSet(ctx, &farmpb.AcquireSetRequest{Node: name})
		if err != nil || resp.GetAssignment() == nil {
			t.Fatalf("AcquireSet(%s): %v %v", name, resp, err)
		}
		return resp.GetAssignment(), name
	}
	header := func(a *farmpb.Assignment, node string, size int64) *farmpb.PartHeader {
		return &farmpb.PartHeader{Node: node, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token, Size: size, Frames: uint32(len(a.Frames))}
	}
	for _, tc := range []struct {
		name   string
		size   int64
		data   []byte
		want   codes.Code
		phrase string
	}{
		{"a header announcing more than the bound", 1 << 40, []byte("x"), codes.InvalidArgument, "out of bounds"},
		{"a header announcing 0 bytes", 0, []byte("x"), codes.InvalidArgument, "out of bounds"},
		{"a header announcing a negative size", -5, []byte("x"), codes.InvalidArgument, "out of bounds"},
		{"more data than announced", 100, make([]byte, 1000), codes.InvalidArgument, "larger than"},
		{"one message over the 4 MiB bound", 6 << 20, make([]byte, 5<<20), codes.ResourceExhausted, "larger than max"},
		{"a part that is not a video", 64, make([]byte, 64), codes.InvalidArgument, "not a readable video"},
	} {
		a, node := grant()
		_, err := rawUpload(ctx, nc, header(a, node, tc.size), tc.data)
		wantCode(t, tc.name, err, tc.want)
		if err != nil && !strings.Contains(err.Error(), tc.phrase) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.phrase)
		}
		if tc.want == codes.ResourceExhausted {
			// The transfer broke off; the node gives its set back.
			if _, err := nc.ReleaseSet(ctx, &farmpb.ReleaseSetRequest{Node: node, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token}); err != nil {
				t.Errorf("giving back set %d: %v", a.SetIndex, err)
			}
		}
	}

	// A client that streams forever is stopped: after its header and a
	// chunk, it sends empty messages until the coordinator ends the stream.
	a, node := grant()
	up, err := nc.UploadPart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	const forever = 200000
	if err := up.Send(&farmpb.UploadPartRequest{Msg: &farmpb.UploadPartRequest_Header{Header: header(a, node, 100)}}); err != nil {
		t.Fatal(err)
	}
	for ; sent < forever; sent++ {
		msg := &farmpb.UploadPartRequest{}
		if sent == 0 {
			msg.Msg = &farmpb.UploadPartRequest_Chunk{Chunk: []byte("0123456789")}
		}
		if up.Send(msg) != nil {
			break
		}
	}
	_, err = up.CloseAndRecv()
	wantCode(t, "an endless upload", err, codes.InvalidArgument)
	if sent == forever {
		t.Errorf("the coordinator took %d empty messages of an upload without stopping it (%v)", forever, err)
	}

	// Nothing of the refused uploads is stored.
	parts := filepath.Join(data, "jobs", f.job, "parts")
	if entries, err := os.ReadDir(parts); err != nil || len(entries) != 0 {
		t.Errorf("the parts folder holds %v (%v), want nothing", entries, err)
	}
	jobEntries, _ := os.ReadDir(filepath.Join(data, "jobs", f.job))
	for _, e := range jobEntries {
		if e.Name() != "parts" {
			t.Errorf("the job folder holds %s", e.Name())
		}
	}
	st, err := fc.GetJob(ctx, &farmpb.GetJobRequest{})
	if err != nil || st.State != "running" {
		t.Fatalf("job after the refused uploads: %v %v", st, err)
	}

	// Frames folders with links that leave them: the coordinator refuses to
	// start, naming the link.
	outside := filepath.Join(tmp, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "f_0013.png")
	runCmd(t, "cp", filepath.Join(frames, "f_0012.png"), secret)
	for _, tc := range []struct{ name, target string }{
		{"absolute link", secret},
		{"relative link", "../outside/f_0013.png"},
		{"link through a linked folder", filepath.Join("up", "f_0013.png")},
	} {
		dir := filepath.Join(tmp, "linked "+tc.name)
		runCmd(t, "cp", "-a", frames, dir)
		if err := os.Remove(filepath.Join(dir, "f_0012.png")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, "up")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(tc.target, filepath.Join(dir, "f_0012.png")); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := secRun(t, nil, "coordinator", "--frames", dir, "--data", filepath.Join(tmp, "data "+tc.name), "--listen", "127.0.0.1:0")
		if code != 1 || !strings.Contains(stderr, "f_0012.png") || !strings.Contains(stderr, "outside") {
			t.Errorf("%s: exit %d, want 1 and a message naming f_0012.png:\n%s%s", tc.name, code, stdout, stderr)
		}
	}
	// A link to a frame inside the folder is fine.
	dir := filepath.Join(tmp, "linked inside")
	runCmd(t, "cp", "-a", frames, dir)
	if err := os.Remove(filepath.Join(dir, "f_0012.png")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f_0011.png", filepath.Join(dir, "f_0012.png")); err != nil {
		t.Fatal(err)
	}
	start(t, "coordinator on inside links", coordReady, "coordinator", "--frames", dir, "--data", filepath.Join(tmp, "data inside"), "--listen", "127.0.0.1:0")
}

// rawUpload sends one part: its header, the data in one message, and a
// trailer with the data's SHA-256.
func rawUpload(ctx context.Context, nc farmpb.NodeServiceClient, h *farmpb.PartHeader, data []byte) (*farmpb.UploadPartResponse, error) {
	up, err := nc.UploadPart(ctx)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	for _, m := range []*farmpb.UploadPartRequest{
		{Msg: &farmpb.UploadPartRequest_Header{Header: h}},
		{Msg: &farmpb.UploadPartRequest_Chunk{Chunk: data}},
		{Msg: &farmpb.UploadPartRequest_Trailer{Trailer: &farmpb.PartTrailer{Sha256: sum[:]}}},
	} {
		if up.Send(m) != nil {
			break // the coordinator ended the stream: CloseAndRecv says why
		}
	}
	return up.CloseAndRecv()
}

// listTree lists the files below dir (names and sizes; the database files
// change as they please and are left out).
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(fi.Name(), "framefarm.db") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v\n", rel, fi.IsDir())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
