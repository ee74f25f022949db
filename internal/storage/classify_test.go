//go:build storage

package storage

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/framefarm/framefarm/internal/storage/storagetest"
)

// TestPermanent classifies what a real versitygw answers a PutFile with:
// a missing bucket and wrong keys are permanent, server trouble and a
// server that is down are not.
func TestPermanent(t *testing.T) {
	s := storagetest.StartS3(t, "finals")
	p := storagetest.StartProxy(t, s)
	src := filepath.Join(t.TempDir(), "final.mkv")
	if err := os.WriteFile(src, []byte("a small final"), 0o644); err != nil {
		t.Fatal(err)
	}
	put := func(raw string) error {
		t.Helper()
		loc, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return PutFile(context.Background(), src, loc)
	}
	if err := put(s.URL("finals", "ok.mkv")); err != nil {
		t.Fatalf("a good put: %v", err)
	}
	for _, c := range []struct {
		name      string
		setup     func(t *testing.T)
		url       string
		permanent bool
		says      string
	}{
		{"missing bucket", nil, s.URL("nosuch", "final.mkv"), true, "NoSuchBucket"},
		{"wrong secret", func(t *testing.T) { t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-"+storagetest.Secret) }, s.URL("finals", "final.mkv"), true, "SignatureDoesNotMatch"},
		{"unknown key", func(t *testing.T) { t.Setenv("AWS_ACCESS_KEY_ID", "nobody") }, s.URL("finals", "final.mkv"), true, "XAdminUserNotFound"}, // versitygw's InvalidAccessKeyId
		{"denied", func(t *testing.T) { p.FailNext(1, http.StatusForbidden, "AccessDenied") }, p.URL("finals", "final.mkv"), true, "AccessDenied"},
		{"slow down", func(t *testing.T) { p.FailNext(10, http.StatusServiceUnavailable, "SlowDown") }, p.URL("finals", "final.mkv"), false, "SlowDown"},
		{"internal error", func(t *testing.T) { p.FailNext(10, http.StatusInternalServerError, "InternalError") }, p.URL("finals", "final.mkv"), false, "InternalError"},
		{"server down", func(t *testing.T) { s.Kill(t) }, s.URL("finals", "final.mkv"), false, "connection refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p.Clear()
			if c.setup != nil {
				c.setup(t)
			}
			err := put(c.url)
			if err == nil {
				t.Fatal("the put succeeded")
			}
			if got := Permanent(err); got != c.permanent {
				t.Errorf("Permanent = %v, want %v: %v", got, c.permanent, err)
			}
			if !strings.Contains(Answer(err), c.says) {
				t.Errorf("Answer = %q, want %q in it", Answer(err), c.says)
			}
			if c.permanent && Hint(err, "--out") == "" {
				t.Errorf("no hint for %v", err)
			}
			if h := Hint(err, "--storage"); strings.Contains(h, "{flag}") || strings.Contains(h, "--out") {
				t.Errorf("the hint for --storage is %q", h)
			}
			if strings.Contains(err.Error(), storagetest.Secret) {
				t.Errorf("the error shows the secret: %v", err)
			}
			t.Logf("permanent=%v hint=%q answer=%q", Permanent(err), Hint(err, "--out"), Answer(err))
		})
	}
	if Permanent(nil) {
		t.Error("Permanent(nil)")
	}
}
