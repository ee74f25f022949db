// Package web is the coordinator's HTTP side: the dashboard (jobs, a job's
// sets, nodes, submit), its JSON API, the farm's events as Server-Sent
// Events, and health checks. Its handlers are thin: every answer comes from
// the same *coordinator.Coordinator calls the gRPC FarmService makes, so the
// two never disagree, and no state machine lives here.
package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/framefarm/framefarm/coordinator"
	"github.com/framefarm/framefarm/internal/reason"
)

//go:embed assets
var assets embed.FS

// The signed-in pages, each filled into layout.html's frame.
//
//go:embed pages
var pageFiles embed.FS

// Options are what the web app is started with.
type Options struct {
	// Listener is what to serve on (its owner decides the address and
	// what to do when it is taken).
	Listener net.Listener
	// Token, when set, is asked for once at sign-in (a session cookie
	// follows) or sent by scripts as "Authorization: Bearer TOKEN".
	Token string
	// TLS, when set, serves HTTPS with the gRPC port's certificate.
	TLS *tls.Config
	// Metrics, when set, is served at /metrics (behind the token).
	Metrics http.Handler
	Limits  Limits
	Logger  *slog.Logger
	Now     func() time.Time
}

// Limits bound one upload through the submit page or POST /api/jobs.
type Limits struct {
	TotalBytes int64
	Files      int
	FileBytes  int64
}

// The upload limits when Options leave them zero.
const (
	DefaultTotalBytes = 20 << 30
	DefaultFiles      = 100_000
	DefaultFileBytes  = coordinator.MaxUploadFile
)

// Server is the web app of one coordinator.
type Server struct {
	c       *coordinator.Coordinator
	o       Options
	log     *slog.Logger
	auth    *auth
	handler http.Handler
	ready   chan struct{}
	addr    string
}

// New builds the web app over c.
func New(c *coordinator.Coordinator, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Limits.TotalBytes <= 0 {
		o.Limits.TotalBytes = DefaultTotalBytes
	}
	if o.Limits.Files <= 0 {
		o.Limits.Files = DefaultFiles
	}
	if o.Limits.FileBytes <= 0 {
		o.Limits.FileBytes = DefaultFileBytes
	}
	a, err := newAuth(o.Token, o.Now)
	if err != nil {
		return nil, err
	}
	pages, err := renderPages()
	if err != nil {
		return nil, err
	}
	s := &Server{c: c, o: o, log: o.Logger, auth: a, ready: make(chan struct{})}
	s.handler = s.routes(pages)
	return s, nil
}

// Handler is the whole app, for tests and for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready is closed once the server listens; Addr is then its address.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the address the server listens on, once Ready is closed.
func (s *Server) Addr() string { <-s.ready; return s.addr }

// Run serves until ctx ends, then shuts down (streams are cut).
func (s *Server) Run(ctx context.Context) error {
	s.removeCutUploads(ctx)
	lis := s.o.Listener
	if s.o.TLS != nil {
		lis = tls.NewListener(lis, s.o.TLS)
	}
	s.addr = lis.Addr().String()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	close(s.ready)
	s.log.Info("web app listening", "addr", s.addr, "tls", s.o.TLS != nil, "token", s.o.Token != "")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}

// removeCutUploads removes the upload folders of this app (web-*) that no
// job renders: uploads a crash or a kill cut off before the job was
// submitted or refused. It runs before the app serves, so none is in
// flight.
func (s *Server) removeCutUploads(ctx context.Context) {
	probe, err := s.c.UploadDir("web-0")
	if err != nil {
		return
	}
	root := filepath.Dir(probe)
	used := map[string]bool{}
	for _, j := range s.c.Snapshot(ctx).Jobs {
		used[j.FramesDir] = true
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if strings.HasPrefix(e.Name(), "web-") && e.IsDir() && !used[dir] {
			s.log.Info("removing an upload cut off before its job was submitted", "upload", e.Name())
			_ = os.RemoveAll(dir)
		}
	}
}

// csp allows nothing but the app's own files: no inline script or style,
// no other origin, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// renderPages fills each signed-in page into its frame once: the pages
// hold no data (their scripts fetch it), only their title and script.
func renderPages() (map[string][]byte, error) {
	t, err := template.ParseFS(pageFiles, "pages/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for page, title := range map[string]string{"jobs": "Jobs", "job": "Job", "nodes": "Nodes", "submit": "Submit"} {
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, page+".html", struct{ Page, Title string }{page, title}); err != nil {
			return nil, fmt.Errorf("page %s: %w", page, err)
		}
		out[page+".html"] = b.Bytes()
	}
	return out, nil
}

func (s *Server) routes(pages map[string][]byte) http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			if b, ok := pages[name]; ok {
				http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
				return
			}
			http.ServeFileFS(w, r, static, name)
		}
	}
	mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	mux.HandleFunc("GET /login", page("login.html"))
	mux.HandleFunc("POST /api/login", s.auth.login)
	mux.HandleFunc("POST /api/logout", s.auth.logout)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)

	signed := http.NewServeMux()
	signed.HandleFunc("GET /{$}", page("jobs.html"))
	signed.HandleFunc("GET /jobs/{id}", page("job.html"))
	signed.HandleFunc("GET /nodes", page("nodes.html"))
	signed.HandleFunc("GET /submit", page("submit.html"))
	signed.HandleFunc("GET /api/session", s.auth.session)
	signed.HandleFunc("GET /api/jobs", s.listJobs)
	signed.HandleFunc("POST /api/jobs", s.submit)
	signed.HandleFunc("GET /api/jobs/{id}", s.getJob)
	signed.HandleFunc("DELETE /api/jobs/{id}", s.deleteJob)
	signed.HandleFunc("POST /api/jobs/{id}/cancel", s.cancel)
	signed.HandleFunc("POST /api/jobs/{id}/reset", s.reset)
	signed.HandleFunc("POST /api/jobs/{id}/priority", s.priority)
	signed.HandleFunc("GET /api/jobs/{id}/video", s.video)
	signed.HandleFunc("GET /api/jobs/{id}/sets/{set}/thumbnail", s.thumbnail)
	signed.HandleFunc("GET /api/nodes", s.listNodes)
	signed.HandleFunc("GET /api/events", s.events)
	if s.o.Metrics != nil {
		signed.Handle("GET /metrics", s.o.Metrics)
	}
	mux.Handle("/", s.auth.require(signed))
	return headers(mux)
}

func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.c.Ready():
	default:
		http.Error(w, "not listening yet", http.StatusServiceUnavailable)
		return
	}
	if err := s.c.Broken(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if r.Context().Err() != nil {
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

var pj = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// marshal writes a protobuf message as JSON with its .proto field names.
func marshal(m proto.Message) json.RawMessage {
	b, err := pj.Marshal(m)
	if err != nil {
		// Only invalid UTF-8 fails, and the farm keeps none.
		return json.RawMessage(`null`)
	}
	return b
}

func list[M proto.Message](ms []M) []json.RawMessage {
	out := make([]json.RawMessage, len(ms))
	for i, m := range ms {
		out[i] = marshal(m)
	}
	return out
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// apiError is every error the API answers: the message, and where the
// submit page shows it.
type apiError struct {
	Error string `json:"error"`
	// Reason is the gRPC reason the same call would carry (JOB_REFUSED...).
	Reason string `json:"reason,omitempty"`
	// Field names the form field the error is about, File the files.
	Field string   `json:"field,omitempty"`
	Files []string `json:"files,omitempty"`
}

// httpCode is the HTTP status of a gRPC code, as grpc-gateway maps them.
func httpCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.FailedPrecondition:
		return http.StatusConflict
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusInsufficientStorage
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Canceled:
		return 499
	}
	return http.StatusInternalServerError
}

// fail answers err as the gRPC service would, in JSON.
func (s *Server) fail(w http.ResponseWriter, err error) {
	st := s.c.Status(err)
	e := apiError{Error: st.Message(), Reason: reason.Of(st.Err())}
	writeJSON(w, httpCode(st.Code()), e)
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	snap := s.c.Snapshot(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"jobs": list(snap.Jobs), "last_event_seq": strconv.FormatUint(snap.LastEventSeq, 10)})
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	snap := s.c.Snapshot(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"nodes": list(snap.Nodes), "waiting": snap.Waiting})
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	js, err := s.c.Job(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, marshal(js))
}

func (s *Server) answer(w http.ResponseWriter, m proto.Message, err error) {
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, marshal(m))
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	js, err := s.c.Cancel(r.Context(), r.PathValue("id"))
	s.answer(w, js, err)
}

// reset takes ?all=1 (or a form field all) to render every set again.
func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	all, _ := strconv.ParseBool(r.FormValue("all"))
	js, err := s.c.Reset(r.Context(), r.PathValue("id"), all)
	s.answer(w, js, err)
}

// priority takes the new priority as ?priority=N, a form field, or a JSON
// body {"priority": N}.
func (s *Server) priority(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Priority *int `json:"priority"`
	}
	v := r.URL.Query().Get("priority")
	if v == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil || body.Priority == nil {
			s.fail(w, fmt.Errorf("%w: send {\"priority\": N}", coordinator.ErrInvalid))
			return
		}
		v = strconv.Itoa(*body.Priority)
	}
	if v == "" {
		v = r.PostFormValue("priority")
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < -1_000_000 || p > 1_000_000 {
		s.fail(w, fmt.Errorf("%w: priority %q: give a whole number from -1000000 to 1000000", coordinator.ErrInvalid, v))
		return
	}
	js, err := s.c.SetPriority(r.Context(), r.PathValue("id"), p)
	s.answer(w, js, err)
}

func (s *Server) deleteJob(w http.ResponseWriter, r *http.Request) {
	if err := s.c.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("id")})
}

// videoType is a final container's media type.
func videoType(ext string) string {
	switch strings.ToLower(ext) {
	case ".mp4":
		return "video/mp4"
	case ".mov":
		return "video/quicktime"
	case ".mkv":
		return "video/x-matroska"
	case ".webm":
		return "video/webm"
	}
	return "application/octet-stream"
}

// video serves a done job's final video with Range requests (so that a
// player seeks), or as a download with ?download=1.
func (s *Server) video(w http.ResponseWriter, r *http.Request) {
	f, name, _, sum, err := s.c.Final(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", videoType(filepath.Ext(name)))
	// The final never changes once done: its hash is its version.
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Cache-Control", "private, no-cache")
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", mimeAttachment(name))
	}
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

func mimeAttachment(name string) string {
	return `attachment; filename="` + strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, name) + `"`
}

func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) {
	set, err := strconv.Atoi(r.PathValue("set"))
	if err != nil {
		s.fail(w, fmt.Errorf("%w: set %q: give the set's number", coordinator.ErrInvalid, r.PathValue("set")))
		return
	}
	path, err := s.c.Thumbnail(r.Context(), r.PathValue("id"), set)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return
		}
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Cache-Control", "private, max-age=3600")
	http.ServeFile(w, r, path)
}
