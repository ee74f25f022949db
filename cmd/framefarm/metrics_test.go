package main

// Metrics and health, end to end: after a real job, each role's /metrics is
// scraped, parsed with the Prometheus text parser and held against the
// job's status; the gRPC health service answers probes that carry no token.

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/framefarm/framefarm/internal/creds"
	farmpb "github.com/framefarm/framefarm/proto"
)

// scrape reads addr's /metrics (with token as a bearer token, unless
// empty) and parses it.
func scrape(t *testing.T, addr, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scraping %s: %s: %s", addr, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s's metrics: %v", addr, err)
	}
	return fams
}

// scrapeUntil scrapes addr until done holds of what it read (a role counts
// a call as it ends, a moment after the other side saw it end), for up to
// 10s, and returns the last scrape.
func scrapeUntil(t *testing.T, addr, token string, done func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams := scrape(t, addr, token)
		if done(fams) || time.Now().After(deadline) {
			return fams
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counted reports whether fams counts n of name{want}.
func counted(fams map[string]*dto.MetricFamily, n float64, name string, want ...string) bool {
	f := fams[name]
	if f == nil {
		return false
	}
	for _, m := range f.Metric {
		ok := true
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == k && l.GetValue() == v)
			}
			ok = ok && found
		}
		if ok && m.GetCounter().GetValue() == n {
			return true
		}
	}
	return false
}

// series is the metric of family name whose labels include want ("k=v"
// pairs); it fails the test when there is none.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) *dto.Metric {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			ok = ok && labels[k] == v
		}
		if ok {
			return m
		}
	}
	t.Fatalf("no series %s{%s}", name, strings.Join(want, ","))
	return nil
}

// value is a counter's or gauge's value.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	m := series(t, fams, name, want...)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s is neither a counter nor a gauge", name)
	return 0
}

// histogram is a histogram's count and sum.
func histogram(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) (uint64, float64) {
	t.Helper()
	h := series(t, fams, name, want...).Histogram
	if h == nil {
		t.Fatalf("%s is not a histogram", name)
	}
	return h.GetSampleCount(), h.GetSampleSum()
}

func expect(t *testing.T, what string, got, want float64) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// healthOf asks addr's health service about service ("": the server),
// without a token.
func healthOf(t *testing.T, addr, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(dial(t, addr)).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return r.GetStatus(), err
}

// TestMetricsAndHealth renders a job with a token on the farm, then checks
// every role's metrics against the job's status, the token rules of the
// metrics listener, and the health service of the coordinator and the
// ambassador (SERVING without a token, NOT_SERVING once the coordinator
// is told to stop).
func TestMetricsAndHealth(t *testing.T) {
	needFFmpeg(t)
	const token, sets, nframes = "metrics-test-token", 4, 40
	dir := t.TempDir()
	frames := filepath.Join(dir, "frames")
	genFrames(t, frames, nframes, 1, "96x64")
	var frameBytes int64
	entries, _ := os.ReadDir(frames)
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		frameBytes += fi.Size()
	}

	coordMetrics, ambMetrics, nodeMetrics := freeAddr(t), freeAddr(t), freeAddr(t)
	coord, m := start(t, "coordinator", coordReady, "coordinator", "--frames", frames, "--data", filepath.Join(dir, "data"),
		"--listen", "127.0.0.1:0", "--sets", fmt.Sprint(sets), "--poll-window", "2s", "--token", token, "--metrics", coordMetrics)
	jobID, addr := m[1], m[2]
	_, am := start(t, "ambassador", ambReady, "ambassador", "--coordinator", addr, "--listen", "127.0.0.1:0",
		"--token", token, "--metrics", ambMetrics)
	// Without --once the node stays up to be scraped; streamed frames go
	// through the ambassador, so its byte counts are tested too.
	start(t, "node", nil, "node", "--ambassador", am[1], "--name", "n1", "--frames-from", "stream", "--metrics", nodeMetrics)

	// The health service answers without a token; the farm's calls do not.
	for _, svc := range []string{"", "framefarm.v1.NodeService", "framefarm.v1.FarmService"} {
		if st, err := healthOf(t, addr, svc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("coordinator health of %q without a token: %v, %v; want SERVING", svc, st, err)
		}
	}
	for _, svc := range []string{"", "framefarm.v1.NodeService"} {
		if st, err := healthOf(t, am[1], svc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("ambassador health of %q: %v, %v; want SERVING", svc, st, err)
		}
	}
	if _, err := healthOf(t, addr, "framefarm.v1.NoSuchService"); status.Code(err) != codes.NotFound {
		t.Errorf("coordinator health of an unknown service: %v; want NotFound", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := farmpb.NewFarmServiceClient(dial(t, addr)).ListJobs(ctx, &farmpb.ListJobsRequest{})
	cancel()
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListJobs without a token: %v; want Unauthenticated", err)
	}

	video := filepath.Join(dir, "out.mp4")
	fetch := runToEnd(t, 5*time.Minute, "fetch", "--coordinator", addr, "--token", token, "-o", video, "--wait")
	if fetch != "" {
		t.Fatalf("fetch: %s", fetch)
	}
	opts, err := creds.DialOptions(token, creds.ClientTLS{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	st, err := farmpb.NewFarmServiceClient(conn).GetJob(ctx, &farmpb.GetJobRequest{JobId: jobID})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "done" || len(st.Sets) != sets || st.TotalFrames != nframes {
		t.Fatalf("job %s: %d sets, %d frames; want done, %d, %d", st.State, len(st.Sets), st.TotalFrames, sets, nframes)
	}
	var partBytes int64
	var encodeMS uint64
	for _, s := range st.Sets {
		partBytes += s.PartSize
		encodeMS += s.EncodeMs
	}

	// A scrape without the token is refused, as a call is.
	resp, err := http.Get("http://" + coordMetrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("coordinator metrics without the token: %s, want 401", resp.Status)
	}

	c := scrapeUntil(t, coordMetrics, token, func(f map[string]*dto.MetricFamily) bool {
		return counted(f, sets, "grpc_server_handled_total", "grpc_method=UploadPart", "grpc_code=OK")
	})
	job := "job_id=" + jobID
	for state, want := range map[string]float64{"A": 0, "B": 0, "C": sets, "F": 0} {
		expect(t, "sets "+state, value(t, c, "framefarm_job_sets", job, "state="+state), want)
	}
	for _, state := range []string{"queued", "running", "joining", "done", "failed", "cancelled"} {
		expect(t, "jobs "+state, value(t, c, "framefarm_jobs", "state="+state), map[bool]float64{true: 1}[state == "done"])
	}
	expect(t, "job info", value(t, c, "framefarm_job_info", job, "state=done", "name=frames"), 1)
	expect(t, "frames encoded", value(t, c, "framefarm_frames_encoded_total"), nframes)
	expect(t, "job frames", value(t, c, "framefarm_job_frames", job), nframes)
	expect(t, "job frames done", value(t, c, "framefarm_job_frames_done", job), nframes)
	expect(t, "nodes excluded", value(t, c, "framefarm_job_nodes_excluded", job), 0)
	expect(t, "queue depth", value(t, c, "framefarm_queue_depth"), 0)
	n, sum := histogram(t, c, "framefarm_part_bytes")
	expect(t, "parts", float64(n), sets)
	expect(t, "part bytes", sum, float64(partBytes))
	expect(t, "part upload bytes", value(t, c, "framefarm_part_upload_bytes_total"), float64(partBytes))
	n, sum = histogram(t, c, "framefarm_part_encode_seconds")
	expect(t, "encodes", float64(n), sets)
	if math.Abs(sum-float64(encodeMS)/1000) > 1e-6 {
		t.Errorf("encode seconds = %v, the sets say %v", sum, float64(encodeMS)/1000)
	}
	expect(t, "frame stream bytes", value(t, c, "framefarm_frame_stream_bytes_total"), float64(frameBytes))
	expect(t, "frame upload bytes", value(t, c, "framefarm_frame_upload_bytes_total"), 0)
	if n, _ := histogram(t, c, "framefarm_grant_latency_seconds"); n < sets {
		t.Errorf("grant latencies observed: %d, want at least the %d sets", n, sets)
	}
	// Every event of the farm (all this job's) was written by a group commit.
	if n, sum := histogram(t, c, "framefarm_commit_batch_events"); sum != float64(st.LastEventSeq) || n == 0 {
		t.Errorf("group commits: %d holding %v events; the job has %d events", n, sum, st.LastEventSeq)
	}
	if n, _ := histogram(t, c, "framefarm_commit_seconds"); n == 0 {
		t.Error("no commit durations")
	}
	expect(t, "heartbeat expiries", value(t, c, "framefarm_lease_expiries_total", "reason=heartbeat"), 0)
	expect(t, "progress expiries", value(t, c, "framefarm_lease_expiries_total", "reason=progress"), 0)
	expect(t, "nodes", value(t, c, "framefarm_nodes"), 1)
	expect(t, "nodes alive", value(t, c, "framefarm_nodes_alive"), 1)
	expect(t, "n1 breaker", value(t, c, "framefarm_node_breaker_state", "node=n1"), 0)
	expect(t, "n1 breaker opens", value(t, c, "framefarm_node_breaker_opens_total", "node=n1"), 0)
	expect(t, "uploads handled", value(t, c, "grpc_server_handled_total",
		"grpc_service=framefarm.v1.NodeService", "grpc_method=UploadPart", "grpc_code=OK"), sets)
	expect(t, "streams handled", value(t, c, "grpc_server_handled_total",
		"grpc_service=framefarm.v1.NodeService", "grpc_method=StreamFrames", "grpc_code=OK"), sets)
	if value(t, c, "go_goroutines") <= 0 {
		t.Error("no Go runtime metrics")
	}

	nm := scrapeUntil(t, nodeMetrics, "", func(f map[string]*dto.MetricFamily) bool {
		return counted(f, sets, "framefarm_node_sets_total", "outcome=uploaded")
	})
	expect(t, "node sets uploaded", value(t, nm, "framefarm_node_sets_total", "outcome=uploaded"), sets)
	expect(t, "node sets failed", value(t, nm, "framefarm_node_sets_total", "outcome=failed"), 0)
	expect(t, "node frames", value(t, nm, "framefarm_node_frames_encoded_total"), nframes)
	expect(t, "node upload bytes", value(t, nm, "framefarm_node_upload_bytes_total"), float64(partBytes))
	expect(t, "ffmpeg failures", value(t, nm, "framefarm_node_ffmpeg_failures_total"), 0)
	n, sum = histogram(t, nm, "framefarm_node_encode_seconds")
	expect(t, "node encodes", float64(n), sets)
	// The coordinator hears each encode's time in whole milliseconds.
	if d := sum - float64(encodeMS)/1000; d < 0 || d > sets*0.001 {
		t.Errorf("node encode seconds = %v, the sets say %v", sum, float64(encodeMS)/1000)
	}

	a := scrapeUntil(t, ambMetrics, token, func(f map[string]*dto.MetricFamily) bool {
		return counted(f, sets, "framefarm_ambassador_calls_total", "method=UploadPart", "outcome=ok") &&
			counted(f, sets, "grpc_server_handled_total", "grpc_method=UploadPart", "grpc_code=OK")
	})
	expect(t, "breaker closed", value(t, a, "framefarm_ambassador_breaker_state", "state=closed"), 1)
	expect(t, "breaker open", value(t, a, "framefarm_ambassador_breaker_state", "state=open"), 0)
	expect(t, "breaker opens", value(t, a, "framefarm_ambassador_breaker_opens_total"), 0)
	expect(t, "uploads forwarded", value(t, a, "framefarm_ambassador_calls_total", "method=UploadPart", "outcome=ok"), sets)
	expect(t, "streams forwarded", value(t, a, "framefarm_ambassador_calls_total", "method=StreamFrames", "outcome=ok"), sets)
	// Messages in wire form: the bytes, and a few of protobuf framing per
	// message (a part's header and trailer, each frame's position).
	if got := value(t, a, "framefarm_ambassador_forwarded_bytes_total", "stream=parts"); got < float64(partBytes) || got > float64(partBytes+sets*512) {
		t.Errorf("part bytes forwarded = %v, parts are %d bytes", got, partBytes)
	}
	if got := value(t, a, "framefarm_ambassador_forwarded_bytes_total", "stream=frames"); got < float64(frameBytes) || got > float64(frameBytes+nframes*64) {
		t.Errorf("frame bytes forwarded = %v, frames are %d bytes", got, frameBytes)
	}
	expect(t, "ambassador's gRPC uploads", value(t, a, "grpc_server_handled_total", "grpc_method=UploadPart", "grpc_code=OK"), sets)

	// Told to stop, the coordinator says so to a probe watching it before
	// it goes.
	hctx, hcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer hcancel()
	w, err := healthpb.NewHealthClient(dial(t, addr)).Watch(hctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watching health: %v, %v; want SERVING", r, err)
	}
	sendSignal(t, coord, syscall.SIGTERM)
	if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watching health while the coordinator stops: %v, %v; want NOT_SERVING", r, err)
	}
}

// runToEnd runs the binary to its end and returns its output when it
// failed.
func runToEnd(t *testing.T, d time.Duration, args ...string) string {
	t.Helper()
	p, _ := start(t, args[0], nil, args...)
	if err := p.wait(t, d); err != nil {
		return fmt.Sprintf("%v\n%s", err, p.out.String())
	}
	return ""
}

// TestMetricsListenRules: metrics off loopback need a token or --insecure,
// as the farm's other listeners do.
func TestMetricsListenRules(t *testing.T) {
	p, _ := start(t, "node", nil, "node", "--ambassador", "127.0.0.1:1", "--metrics", "0.0.0.0:0")
	if err := p.wait(t, 30*time.Second); err == nil || !strings.Contains(p.out.String(), "--insecure") {
		t.Errorf("node --metrics 0.0.0.0:0 without a token: %v, want a refusal naming --insecure:\n%s", err, p.out.String())
	}
	p, _ = start(t, "ambassador", nil, "ambassador", "--coordinator", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--metrics", "0.0.0.0:0")
	if err := p.wait(t, 30*time.Second); err == nil || !strings.Contains(p.out.String(), "--token") {
		t.Errorf("ambassador --metrics 0.0.0.0:0 without a token: %v, want a refusal naming --token:\n%s", err, p.out.String())
	}
	// With --insecure it serves, on every address.
	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	start(t, "node", nil, "node", "--ambassador", "127.0.0.1:1", "--metrics", "0.0.0.0:"+port, "--insecure")
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("node metrics with --insecure: %s", resp.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node metrics with --insecure: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fams := scrape(t, addr, "")
	expect(t, "sets uploaded by an idle node", value(t, fams, "framefarm_node_sets_total", "outcome=uploaded"), 0)
}
