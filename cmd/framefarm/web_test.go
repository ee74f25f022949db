package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

var webReady = regexp.MustCompile(`web app on (\S+)/$`)

// webFarm is a coordinator process with its web app.
type webFarm struct {
	*farm
	base string // http://host:port
	root string
	hc   *http.Client
	csrf string
}

func startWebFarm(t *testing.T, args ...string) *webFarm {
	t.Helper()
	root := t.TempDir()
	data := filepath.Join(root, "data")
	coord, m := start(t, "coordinator", webReady, append([]string{"coordinator", "--data", data, "--listen", "127.0.0.1:0",
		"--http", "127.0.0.1:0", "--heartbeat-timeout", "5s", "--poll-window", "2s"}, args...)...)
	g := farmReady.FindStringSubmatch(coord.out.String())
	if g == nil {
		t.Fatalf("no gRPC address in the coordinator's output:\n%s", coord.out)
	}
	jar, _ := cookiejar.New(nil)
	return &webFarm{farm: &farm{coord: coord, addr: g[1], data: data}, base: m[1], root: root, hc: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request; hdr holds extra headers.
func (w *webFarm) do(t *testing.T, method, path string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, w.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// session reads the page's CSRF token, as the pages do.
func (w *webFarm) session(t *testing.T) {
	t.Helper()
	resp, b := w.do(t, "GET", "/api/session", nil, nil)
	var s struct{ Csrf string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &s) != nil || s.Csrf == "" {
		t.Fatalf("GET /api/session: %s %s", resp.Status, b)
	}
	w.csrf = s.Csrf
}

type formPart struct {
	field, file string
	data        []byte
}

func multipartBody(t *testing.T, parts []formPart) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.file != "" {
			// CreateFormFile would escape nothing of a name: the file name
			// is sent as given, "../x" included.
			h := make(map[string][]string)
			h["Content-Disposition"] = []string{fmt.Sprintf(`form-data; name=%q; filename=%q`, p.field, p.file)}
			h["Content-Type"] = []string{"application/octet-stream"}
			w, err = mw.CreatePart(h)
		} else {
			w, err = mw.CreateFormField(p.field)
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.data)
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

type apiErr struct {
	Error string
	Field string
	Files []string
}

// upload POSTs a job; it returns the status and the answer.
func (w *webFarm) upload(t *testing.T, parts []formPart) (int, apiErr, []byte) {
	t.Helper()
	body, ct := multipartBody(t, parts)
	resp, b := w.do(t, "POST", "/api/jobs", body, map[string]string{"Content-Type": ct, "X-CSRF-Token": w.csrf})
	var e apiErr
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e, b
}

// webJob is what the app answers a job submitted with its upload.
type webJob struct {
	JobID     string `json:"job_id"`
	FramesDir string `json:"frames_dir"`
}

// submitJob uploads a job that must be taken.
func (w *webFarm) submitJob(t *testing.T, parts []formPart) webJob {
	t.Helper()
	code, _, raw := w.upload(t, parts)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, raw)
	}
	var j webJob
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatalf("upload answered %s: %v", raw, err)
	}
	return j
}

func frameParts(t *testing.T, dir string) []formPart {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ps []formPart
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, formPart{"frames", e.Name(), b})
	}
	return ps
}

func TestWebSignInAndCSRF(t *testing.T) {
	needFFmpeg(t)
	const token = "web-t0ken-of-the-farm"
	w := startWebFarm(t, "--token", token)
	frames := filepath.Join(w.root, "frames")
	genFrames(t, frames, 6, 1, "64x48")
	id := strings.TrimSpace(runCmd(t, binary, "submit", "--coordinator", w.addr, "--token", token, "--frames", frames, "--sets", "2"))

	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
		want       int
	}{
		{"no token", "/api/jobs", nil, 401},
		{"wrong bearer", "/api/jobs", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"bearer of another length", "/api/jobs", map[string]string{"Authorization": "Bearer " + token + "x"}, 401},
		{"wrong cookie", "/api/jobs/" + id, map[string]string{"Cookie": "framefarm_session=00ff"}, 401},
		{"page without sign-in", "/", nil, 303},
		{"events without sign-in", "/api/events", nil, 401},
		{"video without sign-in", "/api/jobs/" + id + "/video", nil, 401},
		{"right bearer", "/api/jobs", map[string]string{"Authorization": "Bearer " + token}, 200},
		{"health needs nothing", "/healthz", nil, 200},
		{"readiness needs nothing", "/readyz", nil, 200},
	} {
		resp, b := w.do(t, "GET", tc.path, nil, tc.hdr)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: GET %s: %s %s, want %d", tc.name, tc.path, resp.Status, b, tc.want)
		}
		if tc.want == 401 && bytes.Contains(b, []byte(id)) {
			t.Errorf("%s: a refused answer names the job: %s", tc.name, b)
		}
		if tc.want == 303 && !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
			t.Errorf("%s: redirected to %q, want the sign-in page", tc.name, resp.Header.Get("Location"))
		}
	}

	// Sign-in: a wrong token is refused and starts no session.
	resp, b := w.do(t, "POST", "/api/login", strings.NewReader(`{"token":"nope"}`), map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("login with a wrong token: %s %s, cookies %v", resp.Status, b, resp.Cookies())
	}
	resp, b = w.do(t, "POST", "/api/login", strings.NewReader(`{"token":"`+token+`"}`), map[string]string{"Content-Type": "application/json"})
	if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %s %s", resp.Status, b)
	}
	ck := resp.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || len(ck.Value) < 32 || strings.Contains(ck.Value, token) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, a random id", ck)
	}
	w.session(t)
	if resp, b := w.do(t, "GET", "/api/jobs/"+id, nil, nil); resp.StatusCode != 200 {
		t.Fatalf("signed in: GET job: %s %s", resp.Status, b)
	}

	priority := func() int32 {
		t.Helper()
		js := getJobToken(t, w.addr, id, token)
		return js.Priority
	}
	// Forged cross-site requests: the browser sends the cookie (were it
	// not SameSite), but never the CSRF header, and says where it comes from.
	path := "/api/jobs/" + id + "/priority"
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		body string
	}{
		{"a cross-site form", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, "priority=9"},
		{"a same-looking form without the CSRF header", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "priority=9"},
		{"a wrong CSRF header", map[string]string{"Content-Type": "application/json", csrfHeaderName: "00" + w.csrf[2:]}, `{"priority":9}`},
		{"the right CSRF header from another origin", map[string]string{"Content-Type": "application/json", csrfHeaderName: w.csrf, "Origin": "http://evil.example"}, `{"priority":9}`},
		{"the right CSRF header, cross-site fetch", map[string]string{"Content-Type": "application/json", csrfHeaderName: w.csrf, "Sec-Fetch-Site": "cross-site"}, `{"priority":9}`},
	} {
		resp, b := w.do(t, "POST", path, strings.NewReader(tc.body), tc.hdr)
		if resp.StatusCode != 403 {
			t.Errorf("%s: %s %s, want 403", tc.name, resp.Status, b)
		}
	}
	if resp, b := w.do(t, "DELETE", "/api/jobs/"+id, nil, nil); resp.StatusCode != 403 {
		t.Errorf("DELETE without the CSRF header: %s %s", resp.Status, b)
	}
	if p := priority(); p != 0 {
		t.Fatalf("after forged requests the job's priority is %d, want 0", p)
	}
	// The page's own request, then a script's: both change the job, and
	// gRPC says what HTTP answered.
	resp, b = w.do(t, "POST", path, strings.NewReader(`{"priority":7}`), map[string]string{"Content-Type": "application/json", csrfHeaderName: w.csrf, "Origin": w.base, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"priority":7`)) {
		t.Fatalf("priority from the page: %s %s", resp.Status, b)
	}
	if p := priority(); p != 7 {
		t.Errorf("gRPC says priority %d after the page set 7", p)
	}
	bare := &http.Client{}
	req, _ := http.NewRequest("POST", w.base+path+"?priority=-3", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	r2, err := bare.Do(req)
	if err != nil || r2.StatusCode != 200 {
		t.Fatalf("priority from a script with the token: %v %v", r2.Status, err)
	}
	r2.Body.Close()
	if p := priority(); p != -3 {
		t.Errorf("gRPC says priority %d after the script set -3", p)
	}
	// Signed out, the cookie opens nothing.
	saved := w.hc.Jar.Cookies(mustURL(t, w.base))
	w.do(t, "POST", "/api/logout", nil, nil)
	req, _ = http.NewRequest("GET", w.base+"/api/jobs", nil)
	for _, c := range saved {
		req.AddCookie(c)
	}
	if r3, err := bare.Do(req); err != nil || r3.StatusCode != 401 {
		t.Errorf("the old session after sign-out: %v %v, want 401", r3.Status, err)
	}
	// Guessing: three wrong tokens were given above; after ten in a
	// minute this address is refused, the right token too, for a minute.
	wrong := 3
	for ; wrong < 10; wrong++ {
		if resp, b := w.do(t, "GET", "/api/jobs", nil, map[string]string{"Authorization": "Bearer guess"}); resp.StatusCode != 401 {
			t.Fatalf("wrong token %d: %s %s, want 401", wrong+1, resp.Status, b)
		}
	}
	for _, tc := range []struct{ method, path, body string }{{"POST", "/api/login", `{"token":"` + token + `"}`}, {"GET", "/api/jobs", ""}} {
		resp, b := w.do(t, tc.method, tc.path, strings.NewReader(tc.body), map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + token})
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !bytes.Contains(b, []byte("too many wrong tokens")) {
			t.Errorf("%s %s with the right token after %d wrong ones: %s %s, want 429 with Retry-After", tc.method, tc.path, wrong, resp.Status, b)
		}
	}
}

const csrfHeaderName = "X-CSRF-Token"

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func getJobToken(t *testing.T, addr, id, token string) *farmpb.JobStatus {
	t.Helper()
	out := runCmd(t, binary, "jobs", "--coordinator", addr, "--token", token, "--json")
	var jobs []struct {
		ID       string `json:"id"`
		Priority int32  `json:"priority"`
	}
	if err := json.Unmarshal([]byte(out), &jobs); err != nil {
		t.Fatalf("framefarm jobs --json: %v\n%s", err, out)
	}
	for _, j := range jobs {
		if j.ID == id {
			return &farmpb.JobStatus{JobId: id, Priority: j.Priority}
		}
	}
	t.Fatalf("framefarm jobs has no job %s:\n%s", id, out)
	return nil
}

func zipOf(t *testing.T, files map[string][]byte, links map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, b := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	for name, target := range links {
		h := &zip.FileHeader{Name: name}
		h.SetMode(fs.ModeSymlink | 0o777)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(target))
	}
	zw.Close()
	return buf.Bytes()
}

func tarOf(t *testing.T, hdrs []*tar.Header, data map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		b := data[h.Name]
		h.Size = int64(len(b))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b[:h.Size])
	}
	tw.Close()
	return buf.Bytes()
}

// TestWebUploadRefusals: traversal in any path or field, links in
// archives, uploads over the limits and malformed ones are refused with a
// message, and leave nothing on disk.
func TestWebUploadRefusals(t *testing.T) {
	needFFmpeg(t)
	w := startWebFarm(t, "--http-max-upload", "400000", "--http-max-files", "8", "--http-max-file", "120000")
	w.session(t)
	frames := filepath.Join(w.root, "frames")
	genFrames(t, frames, 4, 1, "64x48")
	good := frameParts(t, frames)
	png := good[0].data
	outside := filepath.Join(w.root, "evil.png")

	type tc struct {
		name  string
		parts []formPart
		code  int
		msg   string
		field string
	}
	cases := []tc{
		{"a frame named ../", []formPart{{"frames", "../evil.png", png}}, 400, "not a plain file name", "frames"},
		{"a frame named ../../", []formPart{{"frames", "../../../evil.png", png}}, 400, "not a plain file name", "frames"},
		{"a frame with an absolute path", []formPart{{"frames", outside, png}}, 400, "not a plain file name", "frames"},
		{"a frame in a subfolder", []formPart{{"frames", "sub/f_0001.png", png}}, 400, "not a plain file name", "frames"},
		{"a hidden frame", []formPart{{"frames", ".tmp-f_0001.png", png}}, 400, "not a plain file name", "frames"},
		{"a zip-slip entry", []formPart{{"frames", "shot.zip", zipOf(t, map[string][]byte{"f_0001.png": png, "../../evil.png": png}, nil)}}, 400, "leads out of its folder", "frames"},
		{"a zip entry with an absolute path", []formPart{{"frames", "shot.zip", zipOf(t, map[string][]byte{outside: png}, nil)}}, 400, "absolute path", "frames"},
		{"a symlink in a zip", []formPart{{"frames", "shot.zip", zipOf(t, map[string][]byte{"f_0001.png": png}, map[string]string{"f_0002.png": "/etc/passwd"})}}, 400, "not a plain file", "frames"},
		{"a symlink in a tar", []formPart{{"frames", "shot.tar", tarOf(t, []*tar.Header{{Name: "f_0001.png", Typeflag: tar.TypeReg}, {Name: "f_0002.png", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}, map[string][]byte{"f_0001.png": png})}}, 400, "not a plain file", "frames"},
		{"a hard link in a tar", []formPart{{"frames", "shot.tar", tarOf(t, []*tar.Header{{Name: "f_0001.png", Typeflag: tar.TypeReg}, {Name: "f_0002.png", Typeflag: tar.TypeLink, Linkname: "f_0001.png"}}, map[string][]byte{"f_0001.png": png})}}, 400, "not a plain file", "frames"},
		{"a tar entry with ..", []formPart{{"frames", "shot.tar", tarOf(t, []*tar.Header{{Name: "shot/../../evil.png", Typeflag: tar.TypeReg}}, map[string][]byte{"shot/../../evil.png": png})}}, 400, "leads out of its folder", "frames"},
		{"a tar entry with an absolute path", []formPart{{"frames", "shot.tar", tarOf(t, []*tar.Header{{Name: outside, Typeflag: tar.TypeReg}}, map[string][]byte{outside: png})}}, 400, "absolute path", "frames"},
		{"a tar that is not one", []formPart{{"frames", "shot.tar", []byte(strings.Repeat("not a tar ", 100))}}, 400, "not a readable tar", "frames"},
		{"a zip that is not one", []formPart{{"frames", "shot.zip", []byte("PK not a zip")}}, 400, "not a readable zip", "frames"},
		{"too many files", func() []formPart {
			var ps []formPart
			for i := 1; i <= 9; i++ {
				ps = append(ps, formPart{"frames", fmt.Sprintf("f_%04d.png", i), png})
			}
			return ps
		}(), 413, "at most 8 frames", "frames"},
		{"a file over the per-file limit", []formPart{{"frames", "f_0001.png", bytes.Repeat([]byte{1}, 130000)}}, 413, "the most one file may be", "frames"},
		{"an upload over the total limit", []formPart{{"frames", "f_0001.png", bytes.Repeat([]byte{1}, 110000)}, {"frames", "f_0002.png", bytes.Repeat([]byte{1}, 110000)},
			{"frames", "f_0003.png", bytes.Repeat([]byte{1}, 110000)}, {"frames", "f_0004.png", bytes.Repeat([]byte{1}, 110000)}}, 413, "larger than the farm takes", "frames"},
		{"a zip bomb over the total limit", []formPart{{"frames", "bomb.zip", zipOf(t, map[string][]byte{"f_0001.png": bytes.Repeat([]byte{0}, 110000), "f_0002.png": bytes.Repeat([]byte{0}, 110000),
			"f_0003.png": bytes.Repeat([]byte{0}, 110000), "f_0004.png": bytes.Repeat([]byte{0}, 110000)}, nil)}}, 413, "larger than the farm takes", "frames"},
		{"no frames", []formPart{{"codec", "", []byte("libx264")}}, 400, "no frames", "frames"},
		{"a gap in the numbering", []formPart{good[0], good[2]}, 400, "missing", "frames"},
		{"not images", []formPart{{"frames", "f_0001.png", []byte("hello")}, {"frames", "f_0002.png", []byte("world")}}, 400, "f_0001.png", "frames"},
		{"a bad fps", append([]formPart{{"fps", "", []byte("../../24")}}, good...), 400, "--fps", "fps"},
		{"a bad codec", append([]formPart{{"codec", "", []byte("../../bin/sh")}}, good...), 400, "--codec", "codec"},
		{"a container with a path", append([]formPart{{"container", "", []byte("../../evil")}}, good...), 400, "container", "container"},
		{"a container the codec cannot fill", append([]formPart{{"container", "", []byte("webm")}}, good...), 400, "webm", "container"},
		{"a bad sets", append([]formPart{{"sets", "", []byte("0")}}, good...), 400, "--sets", "sets"},
		{"a range the codec cannot take", append([]formPart{{"codec", "", []byte("prores_ks")}, {"range", "", []byte("pc")}}, good...), 400, "--range", "range"},
		{"an unknown colour", append([]formPart{{"color", "", []byte("srgb")}}, good...), 400, "--color", "color"},
		{"an unknown field", append([]formPart{{"frames_dir", "", []byte("/etc")}}, good...), 400, "unknown field", "frames_dir"},
		{"a name with a path", append([]formPart{{"name", "", []byte(strings.Repeat("../", 100))}}, good...), 400, "at most 200", "name"},
		{"a name too long for a form", append([]formPart{{"name", "", []byte(strings.Repeat("../", 400))}}, good...), 400, "at most 1024", "name"},
	}
	for _, c := range cases {
		code, e, raw := w.upload(t, c.parts)
		if code != c.code || !strings.Contains(e.Error, c.msg) || e.Field != c.field {
			t.Errorf("%s: %d %s; want %d with %q on field %q", c.name, code, raw, c.code, c.msg, c.field)
		}
	}
	// Malformed requests.
	for _, m := range []struct {
		name, ct, body string
		code           int
	}{
		{"not multipart", "application/json", `{"frames":["/etc/passwd"]}`, 400},
		{"cut off", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"frames\"; filename=\"f_0001.png\"\r\n\r\n" + string(png[:100]), 400},
		{"no boundary", "multipart/form-data", "--XX\r\n", 400},
	} {
		resp, b := w.do(t, "POST", "/api/jobs", strings.NewReader(m.body), map[string]string{"Content-Type": m.ct, csrfHeaderName: w.csrf})
		if resp.StatusCode != m.code || !bytes.Contains(b, []byte(`"error"`)) {
			t.Errorf("%s: %s %s, want %d with a message", m.name, resp.Status, b, m.code)
		}
	}
	// Traversal in the API's paths.
	for _, p := range []string{"/api/jobs/..%2F..%2F..%2Fetc%2Fpasswd", "/api/jobs/..%2F..%2Fdata/video", "/api/jobs/x/sets/..%2F..%2F/thumbnail",
		"/static/../../go.mod", "/static/..%2F..%2Fweb.go", "/jobs/..%2F..%2Fetc%2Fpasswd/video"} {
		resp, b := w.do(t, "GET", p, nil, nil)
		if resp.StatusCode == 200 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || bytes.Contains(b, []byte("root:")) || bytes.Contains(b, []byte("package ")) {
			t.Errorf("GET %s: %s %.200s", p, resp.Status, b)
		}
	}
	// Nothing was kept: no upload folder, no job, no file outside.
	entries, _ := os.ReadDir(filepath.Join(w.data, "uploads"))
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("refused uploads left %v in data/uploads", names)
	}
	if _, err := os.Stat(outside); err == nil {
		t.Errorf("%s was written", outside)
	}
	filepath.WalkDir(w.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "evil.png" {
			t.Errorf("a refused upload wrote %s", p)
		}
		return nil
	})
	if out := runCmd(t, binary, "jobs", "--coordinator", w.addr); strings.Contains(out, "web-") || strings.Contains(out, "queued") {
		t.Errorf("refused uploads made jobs:\n%s", out)
	}
	// And a good upload after them all is taken.
	if code, _, raw := w.upload(t, append([]formPart{{"sets", "", []byte("2")}}, good...)); code != 200 {
		t.Fatalf("a good upload: %d %s", code, raw)
	}
}

// sseEvents reads a job's event stream and sends each event's kind.
func sseEvents(ctx context.Context, t *testing.T, w *webFarm, query string) <-chan string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", w.base+"/api/events"+query, nil)
	resp, err := w.hc.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /api/events%s: %v %v", query, err, resp)
	}
	out := make(chan string, 1000)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		kind := ""
		for sc.Scan() {
			line := sc.Text()
			if k, ok := strings.CutPrefix(line, "event: "); ok {
				kind = k
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && kind == "event" {
				var e struct{ Kind string }
				json.Unmarshal([]byte(d), &e)
				out <- e.Kind
			}
		}
	}()
	return out
}

// TestWebRenderAndRange: a job uploaded over HTTP is rendered by a real
// node; its events stream as SSE, HTTP and gRPC say the same of it, and
// its video is served with the right type and Range requests.
func TestWebRenderAndRange(t *testing.T) {
	needFFmpeg(t)
	w := startWebFarm(t)
	w.session(t)
	frames := filepath.Join(w.root, "frames")
	genFrames(t, frames, 24, 1, "96x64")
	sum := w.submitJob(t, append([]formPart{{"sets", "", []byte("3")}, {"codec", "", []byte("libx264")}, {"name", "", []byte("web job")}}, frameParts(t, frames)...))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	events := sseEvents(ctx, t, w, "?job="+sum.JobID+"&tail=100")
	addNode(t, w.farm, "web-n1", nodeOpts{})
	var kinds []string
	for k := range events {
		kinds = append(kinds, k)
		if k == "job_done" {
			break
		}
	}
	if len(kinds) == 0 || kinds[len(kinds)-1] != "job_done" || !strings.Contains(strings.Join(kinds, " "), "part_accepted") {
		t.Fatalf("SSE events: %v, want part_accepted ... job_done", kinds)
	}
	cancel()

	// HTTP and gRPC agree on the job.
	_, b := w.do(t, "GET", "/api/jobs/"+sum.JobID, nil, nil)
	var viaHTTP struct {
		State     string
		Sets      []struct{ State, Node, Part_size string }
		FinalSize string `json:"final_size"`
	}
	json.Unmarshal(b, &viaHTTP)
	status := runCmd(t, binary, "status", "--coordinator", w.addr, "--job", sum.JobID)
	if viaHTTP.State != "done" || len(viaHTTP.Sets) != 3 || !strings.Contains(status, "done") {
		t.Fatalf("HTTP says %s with %d sets; gRPC status:\n%s", viaHTTP.State, len(viaHTTP.Sets), status)
	}

	fetched := filepath.Join(w.root, "fetched.mp4")
	runCmd(t, binary, "fetch", "--coordinator", w.addr, "--job", sum.JobID, "-o", fetched)
	want, err := os.ReadFile(fetched)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(len(want)) != viaHTTP.FinalSize {
		t.Errorf("HTTP says the final has %s bytes, fetch got %d", viaHTTP.FinalSize, len(want))
	}
	video := "/api/jobs/" + sum.JobID + "/video"
	resp, got := w.do(t, "GET", video, nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/mp4" || !bytes.Equal(got, want) {
		t.Fatalf("GET video: %s %s, %d bytes (equal to fetch: %v)", resp.Status, resp.Header.Get("Content-Type"), len(got), bytes.Equal(got, want))
	}
	n := len(want)
	for _, r := range []struct {
		rng      string
		from, to int
	}{{"bytes=0-99", 0, 99}, {"bytes=1000-1999", 1000, 1999}, {fmt.Sprintf("bytes=%d-", n-300), n - 300, n - 1}, {"bytes=-500", n - 500, n - 1}, {fmt.Sprintf("bytes=%d-%d", n-10, n+1000), n - 10, n - 1}} {
		resp, got := w.do(t, "GET", video, nil, map[string]string{"Range": r.rng})
		wantCR := fmt.Sprintf("bytes %d-%d/%d", r.from, r.to, n)
		if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != wantCR || !bytes.Equal(got, want[r.from:r.to+1]) {
			t.Errorf("Range %s: %s, Content-Range %q (want %q), %d bytes, equal %v", r.rng, resp.Status, resp.Header.Get("Content-Range"), wantCR, len(got), bytes.Equal(got, want[r.from:r.to+1]))
		}
	}
	if resp, _ := w.do(t, "GET", video, nil, map[string]string{"Range": fmt.Sprintf("bytes=%d-", n+10)}); resp.StatusCode != 416 {
		t.Errorf("a range past the end: %s, want 416", resp.Status)
	}
	resp, _ = w.do(t, "GET", video+"?download=1", nil, nil)
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") {
		t.Errorf("download: Content-Disposition %q", cd)
	}

	// A thumbnail, made once and kept in the job's folder.
	resp, img := w.do(t, "GET", "/api/jobs/"+sum.JobID+"/sets/1/thumbnail", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || len(img) < 100 || img[0] != 0xff || img[1] != 0xd8 {
		t.Fatalf("thumbnail: %s %s %d bytes", resp.Status, resp.Header.Get("Content-Type"), len(img))
	}
	if thumbs, _ := filepath.Glob(filepath.Join(w.data, "jobs", sum.JobID, "thumbs", "1-*.jpg")); len(thumbs) != 1 {
		t.Errorf("thumbnails kept: %v", thumbs)
	}
	if resp, _ := w.do(t, "GET", "/api/jobs/"+sum.JobID+"/sets/3/thumbnail", nil, nil); resp.StatusCode != 404 {
		t.Errorf("thumbnail of a set the job lacks: %s", resp.Status)
	}

	// Deleted over HTTP: the job, its folder and its uploaded frames go.
	resp, b = w.do(t, "DELETE", "/api/jobs/"+sum.JobID, nil, map[string]string{csrfHeaderName: w.csrf})
	if resp.StatusCode != 200 {
		t.Fatalf("DELETE: %s %s", resp.Status, b)
	}
	for _, d := range []string{sum.FramesDir, filepath.Join(w.data, "jobs", sum.JobID)} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s is still there after delete", d)
		}
	}
	if resp, _ := w.do(t, "GET", "/api/jobs/"+sum.JobID, nil, nil); resp.StatusCode != 404 {
		t.Errorf("GET a deleted job: %s", resp.Status)
	}
}

// TestOffLoopbackNeedsToken: safe by default.
func TestOffLoopbackNeedsToken(t *testing.T) {
	data := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		flag string
	}{
		{"coordinator gRPC", []string{"coordinator", "--data", data, "--listen", "0.0.0.0:0", "--http", ""}, "--listen 0.0.0.0:0"},
		{"coordinator HTTP", []string{"coordinator", "--data", data, "--listen", "127.0.0.1:0", "--http", ":0"}, "--http :0"},
		{"ambassador", []string{"ambassador", "--coordinator", "127.0.0.1:1", "--listen", "0.0.0.0:0"}, "--listen 0.0.0.0:0"},
	} {
		cmd := exec.Command(binary, tc.args...)
		cmd.Env = append(os.Environ(), "FRAMEFARM_TOKEN=")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.flag) || !strings.Contains(string(out), "--token") || !strings.Contains(string(out), "--insecure") {
			t.Errorf("%s without a token: %v\n%s", tc.name, err, out)
		}
	}
	// With --insecure it starts; with a token but no TLS it warns once.
	start(t, "insecure", farmReady, "coordinator", "--data", filepath.Join(data, "a"), "--listen", "0.0.0.0:0", "--http", "", "--insecure")
	p, _ := start(t, "token", webReady, "coordinator", "--data", filepath.Join(data, "b"), "--listen", "0.0.0.0:0", "--http", "0.0.0.0:0", "--token", "tok")
	if n := strings.Count(p.out.String(), "crosses the network in clear"); n != 1 {
		t.Errorf("warned %d times of a token without TLS, want once:\n%s", n, p.out)
	}
}

// TestWebCutUploadRemoved: an upload cut off by a crash (its folder and no
// job) is removed when the coordinator starts again; uploads of jobs and of
// submit --upload stay.
func TestWebCutUploadRemoved(t *testing.T) {
	needFFmpeg(t)
	w := startWebFarm(t)
	w.session(t)
	frames := filepath.Join(w.root, "frames")
	genFrames(t, frames, 2, 1, "64x48")
	code, _, raw := w.upload(t, append([]formPart{{"sets", "", []byte("1")}}, frameParts(t, frames)...))
	if code != 200 {
		t.Fatalf("upload: %d %s", code, raw)
	}
	var sum struct {
		FramesDir string `json:"frames_dir"`
	}
	json.Unmarshal(raw, &sum)
	sendSignal(t, w.coord, syscall.SIGTERM)
	exited(t, w.coord, 20*time.Second)
	cut := filepath.Join(w.data, "uploads", "web-0123456789abcdef")
	cli := filepath.Join(w.data, "uploads", "sh010")
	for _, d := range []string{cut, cli} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "f_0001.png"), []byte("half"), 0o644)
	}
	start(t, "coordinator-2", webReady, "coordinator", "--data", w.data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0")
	if _, err := os.Stat(cut); err == nil {
		t.Errorf("the cut upload %s is still there", cut)
	}
	for _, d := range []string{cli, sum.FramesDir} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}
