package storagetest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// emulator finds an emulator's binary: $env if set, else bin/NAME at the
// module's root (scripts/install-storage-emulators.sh puts it there). A
// missing binary skips the test on a developer's machine but fails it where
// FRAMEFARM_REQUIRE=1 (make test-storage installed it), so CI cannot pass a
// cloud that never ran.
func emulator(t testing.TB, env, name string) string {
	t.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		bin = filepath.Join(moduleRoot(), "bin", name)
	}
	if _, err := os.Stat(bin); err != nil {
		msg := "%s is missing (run scripts/install-storage-emulators.sh or set %s): %v"
		if os.Getenv("FRAMEFARM_REQUIRE") == "1" {
			t.Fatalf("required here (FRAMEFARM_REQUIRE=1): "+msg, name, env, err)
		}
		t.Skipf("skipped: "+msg, name, env, err)
	}
	return bin
}

// loopbackAddr is a free host:port on 127.0.0.1 for a server to take.
func loopbackAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// run starts cmd with its output in out, waits until addr takes
// connections, and kills it when the test ends (printing its output if the
// test failed).
func run(t testing.TB, name string, cmd *exec.Cmd, addr string, out *lockedBuffer) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, out.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited before listening on %s (%v):\n%s", name, addr, err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after 30s:\n%s", name, addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
