// Package storagetest starts real object storage servers for tests: a
// versitygw process (S3, posix backend in a temporary folder) on a loopback
// port that stays the same across kills and restarts, with root keys that
// tests set in the standard AWS environment.
package storagetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The S3 server's root keys; the coordinator gets them from the standard
// AWS environment, and its log must never show the secret.
const (
	Access = "framefarmtest"
	Secret = "s3cr3t-never-logged-7f3a9c"
)

// S3 is a running versitygw.
type S3 struct {
	// Addr is host:port on loopback.
	Addr string
	// Root is the posix backend's folder: a bucket is a folder in it.
	Root string

	bin, meta string
	mu        sync.Mutex
	cmd       *exec.Cmd
	out       *lockedBuffer
}

// StartS3 starts versitygw with the given buckets and sets AWS_* in the
// test's environment so gocloud's s3 driver signs with the root keys and
// never looks elsewhere. VERSITYGW names the binary; by default bin/ at the
// module's root (scripts/install-versitygw.sh puts it there).
func StartS3(t testing.TB, buckets ...string) *S3 {
	t.Helper()
	bin := os.Getenv("VERSITYGW")
	if bin == "" {
		bin = filepath.Join(moduleRoot(), "bin", "versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("versitygw is required (run scripts/install-versitygw.sh or set VERSITYGW): %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	dir := t.TempDir()
	s := &S3{bin: bin, Root: filepath.Join(dir, "root"), meta: filepath.Join(dir, "meta"), Addr: addr, out: &lockedBuffer{}}
	if err := os.MkdirAll(s.meta, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range buckets {
		s.MakeBucket(t, b)
	}
	s.Start(t)
	t.Cleanup(func() {
		s.Kill(t)
		if t.Failed() {
			t.Logf("--- versitygw output:\n%s", s.out.String())
		}
	})
	t.Setenv("AWS_ACCESS_KEY_ID", Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", Secret)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-aws-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-aws-credentials"))
	return s
}

// MakeBucket creates a bucket (a folder of the posix backend).
func (s *S3) MakeBucket(t testing.TB, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(s.Root, name), 0o755); err != nil {
		t.Fatal(err)
	}
}

// Start (re)starts the server on its address and waits until it listens.
func (s *S3) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, "--port", s.Addr, "posix", "--sidecar", s.meta, s.Root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+Access, "ROOT_SECRET_ACCESS_KEY="+Secret)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw not listening on %s after 20s:\n%s", s.Addr, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL; Start brings it back on the same port
// with the same data.
func (s *S3) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// URL is a storage URL on this server: s3://bucket/key?endpoint=...; a key
// ending in / names a prefix.
func (s *S3) URL(bucket, key string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=us-east-1&use_path_style=true", bucket, key, s.Addr)
}

// Output is what the server printed so far.
func (s *S3) Output() string { return s.out.String() }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// moduleRoot is the folder of go.mod above this file.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}
