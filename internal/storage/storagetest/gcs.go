package storagetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// GCS is a running fake-gcs-server: Google Cloud Storage's JSON API over
// plain HTTP on loopback, objects in memory.
type GCS struct {
	// Addr is host:port on loopback.
	Addr string
	out  *lockedBuffer
}

// StartGCS starts fake-gcs-server (FAKE_GCS_SERVER names the binary, by
// default bin/fake-gcs-server) with the given buckets and sets
// STORAGE_EMULATOR_HOST, which gocloud's gcsblob and Google's storage client
// honour: no credentials are looked for and every request goes to the
// emulator, so plain gs://BUCKET/KEY URLs reach it.
func StartGCS(t testing.TB, buckets ...string) *GCS {
	t.Helper()
	bin := emulator(t, "FAKE_GCS_SERVER", "fake-gcs-server")
	addr := loopbackAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	g := &GCS{Addr: addr, out: &lockedBuffer{}}
	// Google's client reads objects through the XML API at
	// http://EMULATOR/BUCKET/KEY; fake-gcs-server serves that path only for
	// its -public-host, so the public host is the emulator's own address.
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", port,
		"-external-url", "http://"+addr, "-public-host", addr, "-backend", "memory", "-log-level", "info")
	run(t, "fake-gcs-server", cmd, addr, g.out)
	for _, b := range buckets {
		g.MakeBucket(t, b)
	}
	t.Setenv("STORAGE_EMULATOR_HOST", addr)
	return g
}

// MakeBucket creates a bucket through the JSON API.
func (g *GCS) MakeBucket(t testing.TB, name string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name})
	resp, err := http.Post("http://"+g.Addr+"/storage/v1/b?project=framefarm", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("creating bucket %s: %s %s", name, resp.Status, msg)
	}
}

// URL is a storage URL on this server: gs://bucket/key (the emulator is
// reached through STORAGE_EMULATOR_HOST).
func (g *GCS) URL(bucket, key string) string { return fmt.Sprintf("gs://%s/%s", bucket, key) }

// Output is what the server printed so far.
func (g *GCS) Output() string { return g.out.String() }
