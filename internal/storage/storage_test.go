package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct{ in, bucket, key, err string }{
		{"s3://b/shots/final.mkv?endpoint=http://127.0.0.1:9000&region=us-east-1&use_path_style=true",
			"s3://b?endpoint=http://127.0.0.1:9000&region=us-east-1&use_path_style=true", "shots/final.mkv", ""},
		{"file:///srv/out/final.mp4", "file:///srv/out/", "final.mp4", ""},
		{"s3:///final.mkv", "", "", "names no bucket"},
		{"s3://b/", "", "", "names no object"},
		{"s3://AKIA:sekrit@b/final.mkv", "", "", "holds credentials"},
		{"s3://b/final.mkv?secret_access_key=sekrit", "", "", "holds credentials"},
		{"gs://b/shots/final.mkv", "gs://b", "shots/final.mkv", ""},
		{"azblob://c/final.mkv?domain=127.0.0.1:10000&protocol=http&localemu=true",
			"azblob://c?domain=127.0.0.1:10000&protocol=http&localemu=true", "final.mkv", ""},
		{"gs:///final.mkv", "", "", "names no bucket: write gs://BUCKET/KEY"},
		{"azblob:///final.mkv", "", "", "names no container: write azblob://CONTAINER/KEY"},
		{"gs://b/shots/", "", "", "names no object"},
		{"gs://me:sekrit@b/final.mkv", "", "", "GOOGLE_APPLICATION_CREDENTIALS"},
		{"azblob://c/final.mkv?sig=sekrit&sv=2020-10-02", "", "", "AZURE_STORAGE_SAS_TOKEN"},
		{"azblob://acct:sekrit@c/final.mkv", "", "", "AZURE_STORAGE_KEY"},
		{"s3://b/final.mkv?access_key=sekrit", "", "", "AWS_SECRET_ACCESS_KEY"},
		{"ftp://b/final.mkv", "", "", "s3://, gs://, azblob:// and file:// are supported"},
		{"file://host/final.mkv", "", "", "path on this machine"},
	} {
		loc, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) = %v, want error with %q", c.in, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "sekrit") {
				t.Errorf("Parse(%q) error shows the secret: %v", c.in, err)
			}
			continue
		}
		if err != nil || loc.Bucket != c.bucket || loc.Key != c.key {
			t.Errorf("Parse(%q) = %+v, %v; want %q %q", c.in, loc, err, c.bucket, c.key)
		}
	}
}

func TestRedact(t *testing.T) {
	got := Redact("s3://AKIA:sekrit@b/k?X-Amz-Signature=sekrit&region=us-east-1")
	if strings.Contains(got, "sekrit") || strings.Contains(got, "AKIA") || !strings.Contains(got, "region=us-east-1") {
		t.Fatalf("Redact = %q", got)
	}
}

// TestPutFileFileblob round-trips a file through the file:// driver.
func TestPutFileFileblob(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.mkv")
	want := strings.Repeat("framefarm", 100000)
	if err := os.WriteFile(src, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "out")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	loc, err := Parse("file://" + dest + "/final.mkv")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := PutFile(ctx, src, loc); err != nil {
		t.Fatal(err)
	}
	a, err := Stat(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != int64(len(want)) || a.ContentType != "video/x-matroska" {
		t.Fatalf("attributes %d %q", a.Size, a.ContentType)
	}
	got, err := os.ReadFile(filepath.Join(dest, "final.mkv"))
	if err != nil || string(got) != want {
		t.Fatalf("object differs (%d bytes, %v)", len(got), err)
	}
}
