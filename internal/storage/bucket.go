package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	azblobblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	gcs "cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// ErrChanged is wrapped by reads of an object whose ETag or size is no
// longer the one its listing gave: the object was overwritten since, and
// mixing its old and new bytes (or scanning one and rendering the other)
// would be wrong.
var ErrChanged = errors.New("object changed")

// ErrNoSigner is wrapped by SignedURL when the storage cannot pre-sign URLs
// (file://); callers then stream the object instead.
var ErrNoSigner = errors.New("storage cannot pre-sign URLs")

// readBlock is the size of the block a ReaderAt fetches and keeps: an image
// header (and the bufio reads over it) fits in one, so reading it costs one
// request, and a PNG's end check one more.
const readBlock = 64 << 10

// ParsePrefix checks a folder URL such as
// s3://bucket/shots/sh010/?endpoint=... or file:///srv/frames/ and returns
// the bucket URL to open and the key prefix ("" or ending in "/"). A folder
// URL without the trailing slash names the same folder. Credentials in the
// URL are refused, as Parse does.
func ParsePrefix(raw string) (bucketURL, prefix string, err error) {
	u, c, cloud, err := parseURL(raw)
	if err != nil {
		return "", "", err
	}
	switch {
	case cloud:
		if u.Host == "" {
			return "", "", fmt.Errorf("%s names no %s: write %s://%s/FOLDER/", Redact(raw), strings.ToLower(c.bucket), c.scheme, c.bucket)
		}
		prefix = strings.TrimPrefix(u.Path, "/")
		if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "//") {
			return "", "", fmt.Errorf("%s has an empty folder name (//) in its path: write %s://%s/FOLDER/", Redact(raw), c.scheme, u.Host)
		}
		if prefix != "" && !strings.HasSuffix(prefix, "/") {
			prefix += "/"
		}
		b := *u
		b.Path, b.RawPath = "", ""
		return b.String(), prefix, nil
	case u.Scheme == "file":
		if u.Host != "" && u.Host != "localhost" {
			return "", "", fmt.Errorf("%s: a file URL names a path on this machine: write file:///FOLDER/", Redact(raw))
		}
		if !path.IsAbs(u.Path) {
			return "", "", fmt.Errorf("%s names no folder: write file:///FOLDER/", Redact(raw))
		}
		// The folder itself is the bucket: fileblob then keeps every key
		// inside it.
		dir := path.Clean(u.Path)
		if dir != "/" {
			dir += "/"
		}
		b := url.URL{Scheme: "file", Path: dir, RawQuery: u.RawQuery}
		return b.String(), "", nil
	case u.Scheme == "":
		return "", "", fmt.Errorf("%s is not a storage URL: write s3://BUCKET/FOLDER/ or file:///FOLDER/", Redact(raw))
	default:
		return "", "", fmt.Errorf("%s: unknown storage scheme %q (%s are supported)", Redact(raw), u.Scheme, Schemes)
	}
}

// Object is one object of a listing.
type Object struct {
	Key     string // the whole key, prefix included
	Size    int64
	ModTime time.Time
	ETag    string // without quotes; "" when the storage gives none
	// Meta is the object's metadata, as PutMeta wrote it: from Attributes
	// only (listings do not carry it).
	Meta map[string]string
}

// Bucket is an open bucket and its URL, for messages.
type Bucket struct {
	b   *blob.Bucket
	url string
}

// OpenBucket opens the bucket of a URL that ParsePrefix (or Parse, as
// Location.Bucket) returned.
func OpenBucket(ctx context.Context, bucketURL string) (*Bucket, error) {
	b, err := blob.OpenBucket(ctx, bucketURL)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", Redact(bucketURL), redactErr(err))
	}
	return &Bucket{b: b, url: bucketURL}, nil
}

// Close releases the bucket.
func (b *Bucket) Close() error { return b.b.Close() }

// String is the bucket's URL for messages, without credentials.
func (b *Bucket) String() string { return Redact(b.url) }

// Where names key (or a prefix, ending in "/") in b for messages: its URL,
// redacted.
func (b *Bucket) Where(key string) string {
	u, err := url.Parse(b.url)
	if err != nil {
		return Redact(b.url) + " " + key
	}
	p := path.Join("/", u.Path, key)
	if strings.HasSuffix(key, "/") && p != "/" {
		p += "/"
	}
	u.Path, u.RawPath = p, ""
	return Redact(u.String())
}

// List lists the objects directly under prefix ("" or ending in "/"):
// sub-folders and their objects are left out. The ETag comes with the
// listing on S3; other drivers (file://) give it through Attributes, one
// call per object (a local stat for file://).
func (b *Bucket) List(ctx context.Context, prefix string) ([]Object, error) {
	it := b.b.List(&blob.ListOptions{Prefix: prefix, Delimiter: "/"})
	var out []Object
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", b.Where(prefix), redactErr(err))
		}
		if o.IsDir {
			continue
		}
		obj := Object{Key: o.Key, Size: o.Size, ModTime: o.ModTime}
		// Each cloud's listing carries the ETag, as Attributes gives it:
		// one request a page, not one per object (10,000 frames on Azure
		// or GCS would take minutes). Size and ETag then come from one
		// answer, so an object replaced between two requests is never
		// recorded half old, half new.
		if etag, ok := listETag(o); ok {
			obj.ETag = etag
		} else {
			a, err := b.b.Attributes(ctx, o.Key)
			if err != nil {
				if IsNotFound(err) {
					continue // deleted since the listing: as if listed a moment later
				}
				return nil, fmt.Errorf("reading the attributes of %s: %w", b.Where(o.Key), redactErr(err))
			}
			obj.ETag = unquote(a.ETag)
		}
		out = append(out, obj)
	}
	return out, nil
}

// listETag is the ETag in a listing's entry, unquoted, when the driver
// gives one there (S3, Azure, GCS).
func listETag(o *blob.ListObject) (string, bool) {
	var so types.Object
	if o.As(&so) && so.ETag != nil {
		return unquote(*so.ETag), true
	}
	var ab container.BlobItem
	if o.As(&ab) && ab.Properties != nil && ab.Properties.ETag != nil {
		return unquote(string(*ab.Properties.ETag)), true
	}
	var ga gcs.ObjectAttrs
	if o.As(&ga) && ga.Etag != "" {
		return unquote(ga.Etag), true
	}
	return "", false
}

// Attributes returns one object's size, time, ETag and metadata.
func (b *Bucket) Attributes(ctx context.Context, key string) (Object, error) {
	a, err := b.b.Attributes(ctx, key)
	if err != nil {
		return Object{}, fmt.Errorf("reading the attributes of %s: %w", b.Where(key), redactErr(err))
	}
	return Object{Key: key, Size: a.Size, ModTime: a.ModTime, ETag: unquote(a.ETag), Meta: a.Metadata}, nil
}

// readerETag is the ETag of the object a reader reads: from the response
// itself on S3 and Azure (so the bytes and the ETag belong together, and
// no second request is made), else (GCS, whose reader carries none) from
// the object's attributes.
func (b *Bucket) readerETag(ctx context.Context, key string, r *blob.Reader) (string, error) {
	var out s3.GetObjectOutput
	if r.As(&out) && out.ETag != nil {
		return unquote(*out.ETag), nil
	}
	var az azblobblob.DownloadStreamResponse
	if r.As(&az) && az.ETag != nil {
		return unquote(string(*az.ETag)), nil
	}
	a, err := b.b.Attributes(ctx, key)
	if err != nil {
		return "", fmt.Errorf("reading the attributes of %s: %w", b.Where(key), redactErr(err))
	}
	return unquote(a.ETag), nil
}

// checkSame fails with ErrChanged when the reader's object is not the one
// of the given size (when size >= 0) and ETag (when etag != "").
func (b *Bucket) checkSame(ctx context.Context, key string, r *blob.Reader, size int64, etag string) error {
	if size >= 0 && r.Size() != size {
		return fmt.Errorf("reading %s: %w: it is now %d bytes, it was %d bytes when listed", b.Where(key), ErrChanged, r.Size(), size)
	}
	if etag == "" {
		return nil
	}
	got, err := b.readerETag(ctx, key, r)
	if err != nil {
		return err
	}
	if got != etag {
		return fmt.Errorf("reading %s: %w: its ETag is now %q, it was %q when listed", b.Where(key), ErrChanged, got, etag)
	}
	return nil
}

// quietReads keeps the S3 client from logging, at every read, that it did
// not validate a checksum: a ranged read never carries the whole object's
// checksum, and S3-compatible servers often give none, so on a farm reading
// thousands of frame headers that line would flood stderr. (It goes to the
// SDK's own logger, not slog.) Other drivers ignore it.
func quietReads() *blob.ReaderOptions {
	return &blob.ReaderOptions{BeforeRead: func(as func(any) bool) error {
		var opts *[]func(*s3.Options)
		if as(&opts) {
			*opts = append(*opts, func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
		}
		return nil
	}}
}

// Open reads a whole object; the caller closes the reader. It fails with
// ErrChanged (wrapped) when the object's size is not size (size >= 0) or,
// when etag != "", its ETag is not etag: checked before Open returns, from
// the reader's own response.
func (b *Bucket) Open(ctx context.Context, key string, size int64, etag string) (io.ReadCloser, error) {
	r, err := b.b.NewReader(ctx, key, quietReads())
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", b.Where(key), redactErr(err))
	}
	if err := b.checkSame(ctx, key, r, size, etag); err != nil {
		r.Close()
		return nil, err
	}
	return &objectReader{r: r, where: b.Where(key)}, nil
}

// objectReader keeps the object's name on its errors, without credentials.
type objectReader struct {
	r     *blob.Reader
	where string
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("reading %s: %w", o.where, redactErr(err))
	}
	return n, err
}

func (o *objectReader) Close() error { return o.r.Close() }

// ReaderAt reads one object of the given size by ranged reads, keeping the
// last 64 KiB block it fetched, so that reading an image header costs one
// or two requests. Every fetch checks the object's size and, when etag !=
// "", its ETag: a read of an object changed since the listing fails with an
// error wrapping ErrChanged. ctx bounds every read. Parallel ReadAt calls are
// safe (they take turns).
func (b *Bucket) ReaderAt(ctx context.Context, key string, size int64, etag string) io.ReaderAt {
	return &objectReaderAt{b: b, ctx: ctx, key: key, size: size, etag: etag, blk: -1}
}

type objectReaderAt struct {
	b    *Bucket
	ctx  context.Context
	key  string
	size int64
	etag string

	mu      sync.Mutex
	blk     int64 // index of the cached block, -1 for none
	buf     []byte
	fetches int // range requests made, for tests
}

func (r *objectReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading %s: negative offset %d", r.b.Where(r.key), off)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.size {
			return n, io.EOF
		}
		blk := pos / readBlock
		if blk != r.blk {
			if err := r.fetch(blk); err != nil {
				return n, err
			}
		}
		n += copy(p[n:], r.buf[pos-blk*readBlock:])
	}
	return n, nil
}

// fetch reads block blk into r.buf.
func (r *objectReaderAt) fetch(blk int64) error {
	r.blk = -1
	start := blk * readBlock
	length := min(readBlock, r.size-start)
	r.fetches++
	rd, err := r.b.b.NewRangeReader(r.ctx, r.key, start, length, quietReads())
	if err != nil {
		return fmt.Errorf("reading %s: %w", r.b.Where(r.key), redactErr(err))
	}
	defer rd.Close()
	if err := r.b.checkSame(r.ctx, r.key, rd, r.size, r.etag); err != nil {
		return err
	}
	if cap(r.buf) < readBlock {
		r.buf = make([]byte, readBlock)
	}
	r.buf = r.buf[:length]
	if _, err := io.ReadFull(rd, r.buf); err != nil {
		return fmt.Errorf("reading %s at %d: %w", r.b.Where(r.key), start, redactErr(err))
	}
	r.blk = blk
	return nil
}

// SignedURL returns a pre-signed URL for a GET or PUT of key, valid for
// expiry. A PUT URL is signed without a content type, so a plain upload
// (curl -T, an http.Request without Content-Type) is accepted; s3blob can
// enforce neither a given nor an absent content type. It fails with
// ErrNoSigner (wrapped) when the storage cannot sign (file://).
func (b *Bucket) SignedURL(ctx context.Context, key, method string, expiry time.Duration) (string, error) {
	if method != http.MethodGet && method != http.MethodPut {
		return "", fmt.Errorf("signing a URL for %s: method %q: only GET and PUT are signed", b.Where(key), method)
	}
	s, err := b.b.SignedURL(ctx, key, &blob.SignedURLOptions{Method: method, Expiry: expiry})
	if err != nil {
		if gcerrors.Code(err) == gcerrors.Unimplemented {
			hint := ""
			if strings.HasPrefix(b.url, "gs:") {
				hint = " (GCS signs with a service account's key: point GOOGLE_APPLICATION_CREDENTIALS at its JSON key file)"
			}
			return "", fmt.Errorf("signing a %s URL for %s: %w%s", method, b.Where(key), ErrNoSigner, hint)
		}
		return "", fmt.Errorf("signing a %s URL for %s: %w", method, b.Where(key), redactErr(err))
	}
	return s, nil
}

// PutHeaders are the headers a PUT to a URL that SignedURL made must
// carry besides the body: Azure refuses a blob PUT without its blob type
// (and gocloud signs it so); S3 and GCS need none.
func (b *Bucket) PutHeaders() map[string]string {
	if strings.HasPrefix(b.url, "azblob:") {
		return map[string]string{"x-ms-blob-type": "BlockBlob"}
	}
	return nil
}

// Put streams r to key: blob.Writer uploads it in parts (multipart on S3),
// so memory stays bounded whatever the size, and the object appears only
// once r is read to its end. An error from r abandons the upload.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader) error {
	return b.PutMeta(ctx, key, r, nil)
}

// PutMeta is Put with metadata kept beside the object (keys in lower
// case: S3 and Azure fold them).
func (b *Bucket) PutMeta(ctx context.Context, key string, r io.Reader, meta map[string]string) error {
	wctx, cancel := context.WithCancel(ctx)
	// Cancelling before Close abandons the upload instead of completing a
	// partial object.
	defer cancel()
	w, err := b.b.NewWriter(wctx, key, &blob.WriterOptions{ContentType: ContentType(key), Metadata: meta})
	if err != nil {
		return fmt.Errorf("writing %s: %w", b.Where(key), redactErr(err))
	}
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		_ = w.Close()
		return fmt.Errorf("writing %s: %w", b.Where(key), redactErr(err))
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", b.Where(key), redactErr(err))
	}
	return nil
}

// Gone reports whether the bucket itself is not there (deleted, or never
// made), as the server answered; false when it could not be asked.
func (b *Bucket) Gone(ctx context.Context) bool {
	ok, err := b.b.IsAccessible(ctx)
	return err == nil && !ok
}

// Delete removes key.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := b.b.Delete(ctx, key); err != nil {
		return fmt.Errorf("deleting %s: %w", b.Where(key), redactErr(err))
	}
	return nil
}

// unquote strips the quotes S3 puts around an ETag.
func unquote(etag string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(etag, "W/"), `"`), `"`)
}
