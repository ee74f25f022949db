package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
)

func sampleStatus(now time.Time) *farmpb.JobStatus {
	return &farmpb.JobStatus{
		JobId: "a1b2c3d4e5f6", State: "running", FramesDir: "/frames/seq010",
		TotalFrames: 243, FramesDone: 100,
		Settings: &farmpb.EncodeSettings{Codec: "libx264", FpsNum: 24000, FpsDen: 1001, Crf: 18,
			Preset: "slow", PixFmt: "yuv420p", Width: 1921, Height: 1080, PadEven: true, Color: "bt709", ColorRange: "tv"},
		Sets: []*farmpb.SetStatus{
			{Index: 0, State: "C", FirstFrame: 1001, LastFrame: 1081, FrameCount: 81, Node: "render-01",
				FramesDone: 81, PartSize: 3 << 20, EncodeMs: 12345},
			{Index: 1, State: "B", FirstFrame: 1082, LastFrame: 1162, FrameCount: 81, Node: "render-02",
				FramesDone: 19, Failures: 1, Token: 7,
				LastError: "ffmpeg exited with status 1:\n[libx264 @ 0x55] width not divisible by 2 (1921x1080) and a lot more text that must be cut"},
			{Index: 2, State: "A", FirstFrame: 1163, LastFrame: 1243, FrameCount: 81},
		},
		Nodes: []*farmpb.NodeStatus{
			{Name: "render-01", LastSeenUnixMs: now.Add(-3 * time.Second).UnixMilli(), CpuLoad: 0.93, FreeCores: 0.5,
				SetsDone: 1, Breaker: &farmpb.BreakerInfo{State: "closed"}},
			{Name: "render-02", LastSeenUnixMs: now.Add(-95 * time.Second).UnixMilli(), CpuLoad: 0.25, FreeCores: 6,
				Failures: 3, Excluded: true, Breaker: &farmpb.BreakerInfo{State: "open", ConsecutiveFailures: 5}},
		},
	}
}

// row returns the line of out whose first field is key.
func row(t *testing.T, out, key string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == key {
			return f
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", key, out)
	return nil
}

func TestRenderStatusRunning(t *testing.T) {
	now := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	renderStatus(&buf, sampleStatus(now), now, false)
	out := buf.String()
	t.Log("\n" + out)

	for _, want := range []string{
		"job a1b2c3d4e5f6  running",
		"/frames/seq010",
		"libx264 crf 18 preset slow, yuv420p, 24000/1001 fps, 1921x1080 (padded to even), colour bt709 tv",
		"100/243 frames (41.2%)",
		"sets 1/3 completed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "final video") {
		t.Error("a running job must not show a final video")
	}

	hdr := row(t, out, "SET")
	wantHdr := []string{"SET", "STATE", "FRAMES", "COUNT", "NODE", "DONE", "SIZE", "ENCODE", "FAILS", "LAST-ERROR"}
	if strings.Join(hdr, " ") != strings.Join(wantHdr, " ") {
		t.Errorf("set header = %q, want %q", hdr, wantHdr)
	}
	tests := []struct {
		key  string
		want []string // leading cells
	}{
		{"0", []string{"0", "C", "1001-1081", "81", "render-01", "81", "3.0", "MiB", "12.3s", "0", "-"}},
		{"1", []string{"1", "B", "1082-1162", "81", "render-02", "19", "-", "-", "1", "ffmpeg", "exited"}},
		{"2", []string{"2", "A", "1163-1243", "81", "-", "0", "-", "-", "0", "-"}},
		{"render-01", []string{"render-01", "3s", "ago", "93%", "0.5", "1", "0", "no", "closed"}},
		{"render-02", []string{"render-02", "1m35s", "ago", "25%", "6.0", "0", "3", "yes", "open", "(5", "consecutive", "failures)"}},
	}
	for _, tt := range tests {
		got := row(t, out, tt.key)
		if len(got) < len(tt.want) || strings.Join(got[:len(tt.want)], " ") != strings.Join(tt.want, " ") {
			t.Errorf("row %s = %q, want it to start with %q", tt.key, got, tt.want)
		}
	}

	// The multi-line ffmpeg error stays on its row, cut short.
	setRow := strings.Join(row(t, out, "1"), " ")
	if !strings.HasSuffix(setRow, "…") || strings.Contains(setRow, "must be cut") {
		t.Errorf("last error not truncated: %q", setRow)
	}
	if !strings.Contains(setRow, "[libx264 @ 0x55]") {
		t.Errorf("last error lost its second line: %q", setRow)
	}
}

func TestRenderStatusDone(t *testing.T) {
	now := time.Now()
	st := sampleStatus(now)
	st.State, st.FramesDone = "done", 243
	st.FinalSize, st.FinalSha256 = 5<<20+123, strings.Repeat("ab", 32)
	for _, s := range st.Sets {
		s.State, s.FramesDone = "C", s.FrameCount
	}

	for _, tt := range []struct {
		out, want string
	}{
		{"/videos/seq010.mp4", "final video: /videos/seq010.mp4, 5.0 MiB, sha256 " + st.FinalSha256},
		{"", "final video: fetch it with: framefarm fetch --coordinator ADDR --job a1b2c3d4e5f6 -o FILE, 5.0 MiB, sha256 " + st.FinalSha256},
	} {
		st.OutPath = tt.out
		var buf bytes.Buffer
		renderStatus(&buf, st, now, false)
		out := buf.String()
		for _, want := range []string{tt.want, "243/243 frames (100.0%)", "sets 3/3 completed", "job a1b2c3d4e5f6  done"} {
			if !strings.Contains(out, want) {
				t.Errorf("out_path %q: output lacks %q:\n%s", tt.out, want, out)
			}
		}
	}
}

func TestRenderStatusFailedNoNodes(t *testing.T) {
	st := &farmpb.JobStatus{JobId: "f00", State: "failed", Reason: "set 2 failed on 3 nodes: frame 1044 cannot be decoded",
		TotalFrames: 10, Sets: []*farmpb.SetStatus{{Index: 0, State: "F", FirstFrame: 1, LastFrame: 10, FrameCount: 10, Failures: 3}}}
	var buf bytes.Buffer
	renderStatus(&buf, st, time.Now(), false)
	out := buf.String()
	for _, want := range []string{"job f00  failed", "reason: set 2 failed on 3 nodes: frame 1044 cannot be decoded",
		"0/10 frames (0.0%)", "no nodes have asked for work yet"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := row(t, out, "0"); got[1] != "F" || got[8] != "3" {
		t.Errorf("failed set row = %q", got)
	}
}

func TestHumanSize(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "-"}, {1, "1 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{10 << 20, "10.0 MiB"}, {3 << 30, "3.0 GiB"}, {5 << 40, "5.0 TiB"}, {5000 << 40, "4.9 PiB"},
	} {
		if got := humanSize(tt.n); got != tt.want {
			t.Errorf("humanSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"}, {-5 * time.Second, "just now"}, {59 * time.Second, "59s ago"},
		{61 * time.Second, "1m01s ago"}, {2*time.Hour + 5*time.Minute, "2h05m ago"},
	} {
		if got := ago(now, now.Add(-tt.d).UnixMilli()); got != tt.want {
			t.Errorf("ago(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	if got := ago(now, 0); got != "never" {
		t.Errorf("ago(0) = %q, want never", got)
	}
}

// TestBarsOnlyInATerminal: a terminal gets progress bars, a pipe plain
// lines that scripts and logs read.
func TestBarsOnlyInATerminal(t *testing.T) {
	now := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	st := sampleStatus(now)
	jobs := []*farmpb.JobSummary{{JobId: "a1b2c3d4e5f6", Name: "seq010", State: "running", FramesDone: 100, FramesTotal: 243, SubmittedUnixMs: now.UnixMilli()}}
	for _, bars := range []bool{true, false} {
		var s, j bytes.Buffer
		renderStatus(&s, st, now, bars)
		renderJobs(&j, jobs, now, bars)
		progress, _, _ := strings.Cut(s.String()[strings.Index(s.String(), "progress:"):], "\n")
		if got := strings.Contains(progress, "[#########"); got != bars {
			t.Errorf("bars %v: status progress line %q", bars, progress)
		}
		if got := strings.Contains(j.String(), "[########"); got != bars || !strings.Contains(j.String(), " 41%") {
			t.Errorf("bars %v: jobs:\n%s", bars, j.String())
		}
		if regexp.MustCompile(`\[[#.]+\]`).MatchString(s.String()) != bars {
			t.Errorf("bars %v: status:\n%s", bars, s.String())
		}
	}
}
