// Package storage puts files into and reads them from object storage named
// by a URL, through gocloud.dev/blob. Four drivers are linked:
//   - file:///path: a folder on this machine.
//   - s3://bucket/key: any S3-compatible server (?endpoint=&region=
//     &use_path_style=true), on aws-sdk-go-v2; credentials from the standard
//     AWS environment and files (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//     ~/.aws).
//   - gs://bucket/key: Google Cloud Storage; credentials from Application
//     Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's file, the
//     metadata server); STORAGE_EMULATOR_HOST points it at an emulator.
//   - azblob://container/key: Azure Blob Storage; the account and its
//     credentials from AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or
//     AZURE_STORAGE_SAS_TOKEN, or AZURE_STORAGE_CONNECTION_STRING, else
//     Azure's default credential chain (?domain=&protocol=&localemu=true
//     reach an emulator on loopback).
//
// Credentials never go in a URL: they would end up in logs and job records.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"os"
	"path"
	"strings"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/s3blob"    // s3://
)

// Location is a storage URL split into the bucket it opens and the key of
// one object inside it.
type Location struct {
	// Bucket is the URL gocloud opens (scheme, bucket, query).
	Bucket string
	// Key is the object's key inside the bucket.
	Key string
}

// IsURL reports whether s names object storage rather than a local path.
func IsURL(s string) bool {
	i := strings.Index(s, "://")
	return i > 0 && !strings.ContainsAny(s[:i], "/\\.")
}

// Parse checks an object URL such as s3://bucket/shots/final.mkv?region=...,
// gs://bucket/final.mkv, azblob://container/final.mkv or
// file:///srv/finals/final.mkv and splits it. Credentials in the URL are
// refused: they would end up in logs and the job's record.
func Parse(raw string) (Location, error) {
	u, c, cloud, err := parseURL(raw)
	if err != nil {
		return Location{}, err
	}
	switch {
	case cloud:
		return c.location(raw, u)
	case u.Scheme == "file":
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("%s: a file URL names a path on this machine: write file:///PATH", Redact(raw))
		}
		if !path.IsAbs(u.Path) || strings.HasSuffix(u.Path, "/") {
			return Location{}, fmt.Errorf("%s names no file: write file:///FOLDER/NAME", Redact(raw))
		}
		dir, name := path.Split(u.Path)
		b := url.URL{Scheme: "file", Path: dir, RawQuery: u.RawQuery}
		return Location{Bucket: b.String(), Key: name}, nil
	default:
		return Location{}, fmt.Errorf("%s: unknown storage scheme %q (%s are supported)", Redact(raw), u.Scheme, Schemes)
	}
}

// parseURL parses a storage URL for Parse and ParsePrefix, refusing one
// that holds credentials (they would end up in logs and the job's record),
// and says which cloud its scheme names (cloud is false for file:// and
// unknown schemes).
func parseURL(raw string) (u *url.URL, c cloud, isCloud bool, err error) {
	u, err = url.Parse(raw)
	if err != nil {
		return nil, cloud{}, false, fmt.Errorf("%s is not a URL: %w", Redact(raw), unwrapURLError(err))
	}
	c, isCloud = cloudScheme(u.Scheme)
	if u.User != nil {
		return nil, c, isCloud, fmt.Errorf("%s holds credentials: give them in the environment%s instead", Redact(raw), c.credsHint())
	}
	for k := range u.Query() {
		if secretParam(k) {
			return nil, c, isCloud, fmt.Errorf("%s holds credentials (%s): give them in the environment%s instead", Redact(raw), k, c.credsHint())
		}
	}
	return u, c, isCloud, nil
}

// Schemes lists the storage URLs Parse takes, for messages and help.
const Schemes = "s3://, gs://, azblob:// and file://"

// cloud is what Parse knows of one cloud's scheme: the name of its bucket
// and where its driver reads credentials.
type cloud struct {
	scheme, bucket, env string
}

// cloudScheme is the cloud of a URL scheme; ok is false for file:// and
// unknown schemes.
func cloudScheme(scheme string) (c cloud, ok bool) {
	switch scheme {
	case "s3":
		return cloud{"s3", "BUCKET", "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or ~/.aws"}, true
	case "gs":
		return cloud{"gs", "BUCKET", "GOOGLE_APPLICATION_CREDENTIALS or gcloud's application default credentials"}, true
	case "azblob":
		return cloud{"azblob", "CONTAINER", "AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or AZURE_STORAGE_CONNECTION_STRING"}, true
	}
	return cloud{}, false
}

// credsHint names the cloud's credential environment in a refusal.
func (c cloud) credsHint() string {
	if c.env == "" {
		return ""
	}
	return " (" + c.env + ")"
}

// location splits scheme://BUCKET/KEY?query into the bucket URL gocloud
// opens (the query is the driver's options) and the object's key.
func (c cloud) location(raw string, u *url.URL) (Location, error) {
	if u.Host == "" {
		return Location{}, fmt.Errorf("%s names no %s: write %s://%s/KEY", Redact(raw), strings.ToLower(c.bucket), c.scheme, c.bucket)
	}
	key := strings.TrimPrefix(u.Path, "/")
	if key == "" || strings.HasSuffix(key, "/") {
		return Location{}, fmt.Errorf("%s names no object: write %s://%s/KEY", Redact(raw), c.scheme, u.Host)
	}
	b := *u
	b.Path = ""
	return Location{Bucket: b.String(), Key: key}, nil
}

// String is the location as one URL, for logs and errors (redacted).
func (l Location) String() string {
	u, err := url.Parse(l.Bucket)
	if err != nil {
		return Redact(l.Bucket) + " " + l.Key
	}
	u.Path = path.Join("/", u.Path, l.Key)
	return Redact(u.String())
}

// PutFile streams a local file to the location: blob.Writer uploads it in
// parts (multipart on S3), so memory stays bounded whatever the file's size.
// The object appears only once the whole file is written.
func PutFile(ctx context.Context, local string, loc Location) (err error) {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := blob.OpenBucket(ctx, loc.Bucket)
	if err != nil {
		return fmt.Errorf("opening %s: %w", loc, redactErr(err))
	}
	defer b.Close()
	return (&Bucket{b: b, url: loc.Bucket}).Put(ctx, loc.Key, f)
}

// Stat returns the object's attributes (size, content type, ETag).
func Stat(ctx context.Context, loc Location) (*blob.Attributes, error) {
	b, err := blob.OpenBucket(ctx, loc.Bucket)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", loc, redactErr(err))
	}
	defer b.Close()
	a, err := b.Attributes(ctx, loc.Key)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", loc, redactErr(err))
	}
	return a, nil
}

// Open returns a reader of the object; the caller closes it.
func Open(ctx context.Context, loc Location) (io.ReadCloser, error) {
	b, err := blob.OpenBucket(ctx, loc.Bucket)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", loc, redactErr(err))
	}
	r, err := b.NewReader(ctx, loc.Key, nil)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("reading %s: %w", loc, redactErr(err))
	}
	return &bucketReader{Reader: r, b: b}, nil
}

type bucketReader struct {
	*blob.Reader
	b *blob.Bucket
}

func (r *bucketReader) Close() error {
	return errors.Join(r.Reader.Close(), r.b.Close())
}

// ContentType is the media type of a video file by its extension.
func ContentType(key string) string {
	switch strings.ToLower(path.Ext(key)) {
	case ".mkv":
		return "video/x-matroska"
	case ".mov":
		return "video/quicktime"
	}
	if t := mime.TypeByExtension(path.Ext(key)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// Redact removes credentials from a URL: its user information and any query
// parameter that carries a key, secret, token or signature.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Unparseable: keep only the scheme, as the rest may hold anything.
		if i := strings.Index(raw, "://"); i > 0 {
			return raw[:i] + "://REDACTED"
		}
		return "REDACTED"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	q := u.Query()
	changed := false
	for k := range q {
		if secretParam(k) {
			q.Set(k, "REDACTED")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func secretParam(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"secret", "key", "token", "signature", "credential", "password", "sig"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// redactErr keeps the error's chain (for errors.Is and gcerrors) while its
// message loses any URL credentials that a driver may have quoted.
func redactErr(err error) error {
	return &redacted{err: err}
}

type redacted struct{ err error }

func (r *redacted) Error() string {
	words := strings.Fields(r.err.Error())
	for i, w := range words {
		if IsURL(strings.Trim(w, `"'`)) || strings.Contains(w, "://") {
			words[i] = Redact(strings.Trim(w, `"'`))
		}
	}
	return strings.Join(words, " ")
}

func (r *redacted) Unwrap() error { return r.err }

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
