//go:build browser

// Browser tests (make test-browser): the web app in real headless Chromium
// (Debian's chromium, scripts/install-deps.sh browser), driven with chromedp,
// over a farm of real processes. Screenshots go to $FRAMEFARM_ARTIFACTS, or
// a folder the test prints.

package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"

	"github.com/framefarm/framefarm/internal/creds"
	farmpb "github.com/framefarm/framefarm/proto"
)

// artifacts is the folder screenshots are saved in.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FRAMEFARM_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "framefarm-browser-"); err != nil {
			t.Fatal(err)
		}
	}
	dir = filepath.Join(dir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	fmt.Printf("%s: screenshots in %s\n", t.Name(), dir)
	return dir
}

// newBrowser starts headless Chromium with a 1280x900 window.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is required (run scripts/install-deps.sh browser): %v", err)
	}
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]), chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900), chromedp.Flag("autoplay-policy", "no-user-gesture-required"))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// res is a call's value and error, for try(f()).must(t, "what").
type res[T any] struct {
	v   T
	err error
}

func try[T any](v T, err error) res[T] { return res[T]{v, err} }

func (r res[T]) must(t *testing.T, what string) T {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v", what, r.err)
	}
	return r.v
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	return try(chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))).must(t, js)
}

// poll waits until js is true, across page loads (a navigation ends one
// wait; the next starts on the new page).
func poll(t *testing.T, ctx context.Context, what, js string, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(min(time.Until(end), 10*time.Second)),
			chromedp.WithPollingInterval(100*time.Millisecond)))
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("waiting for %s (%s): %v", what, js, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	b := try(chromedp.Run(ctx, chromedp.CaptureScreenshot())).must(t, "screenshot "+name)
	if err := os.WriteFile(filepath.Join(dir, name+".png"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// gridStates reads the job page's canvas: each set's state from the colour
// of its cell's top edge (a rendering set's progress fills from the bottom).
const gridStates = `(() => {
  const c = document.getElementById("grid");
  if (!c.dataset.layout) return "";
  const [cell, gap, cols, n] = c.dataset.layout.split(" ").map(Number);
  const dpr = window.devicePixelRatio || 1, g = c.getContext("2d");
  const css = getComputedStyle(document.documentElement);
  const rgb = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
  const pal = Object.fromEntries([..."ABCF"].map((k) => [k, rgb(css.getPropertyValue("--" + k.toLowerCase()).trim())]));
  let out = "";
  for (let i = 0; i < n; i++) {
    const x = (i % cols) * (cell + gap) + cell / 2, y = Math.floor(i / cols) * (cell + gap) + 1;
    const d = g.getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data;
    let best = "?", bd = Infinity;
    for (const [k, p] of Object.entries(pal)) {
      const dd = (p[0] - d[0]) ** 2 + (p[1] - d[1]) ** 2 + (p[2] - d[2]) ** 2;
      if (dd < bd) { bd = dd; best = k; }
    }
    out += best;
  }
  return out;
})()`

func farmSvc(t *testing.T, addr, token string) farmpb.FarmServiceClient {
	t.Helper()
	opts := try(creds.DialOptions(token, creds.ClientTLS{})).must(t, "dial options")
	conn := try(grpc.NewClient(addr, opts...)).must(t, "dial")
	t.Cleanup(func() { conn.Close() })
	return farmpb.NewFarmServiceClient(conn)
}

func TestBrowserDashboard(t *testing.T) {
	needFFmpeg(t)
	const token = "browser-t0ken"
	shots := artifacts(t)
	w := startWebFarm(t, "--token", token)
	fc := farmSvc(t, w.addr, token)
	frames := filepath.Join(w.root, "shot010")
	genFrames(t, frames, 48, 1, "320x240")
	other := filepath.Join(w.root, "shot020")
	genFrames(t, other, 24, 1, "160x120")
	ctx := newBrowser(t)

	// Sign in once: the page asks for the token, then the cookie serves.
	do(t, ctx, "open the farm", chromedp.Navigate(w.base+"/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	if loc := try(chromedp.Run(ctx, chromedp.Location())).must(t, "location"); !strings.Contains(loc, "/login") {
		t.Fatalf("signed out, / went to %s, want the sign-in page", loc)
	}
	shot(t, ctx, shots, "login")
	do(t, ctx, "a wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "nope"), chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.CSS("#error")))
	eval[bool](t, ctx, `(document.getElementById("token").value = "") === ""`)
	do(t, ctx, "sign in", chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login button")), chromedp.WaitVisible(chromedp.CSS("#jobs")))

	// Submit: a bad setting first, named beside its field; then the folder.
	do(t, ctx, "the submit page", chromedp.Navigate(w.base+"/submit"), chromedp.WaitVisible(chromedp.CSS("#folder")),
		// A folder picker is given the folder, as a person picks it.
		chromedp.SetUploadFiles(chromedp.CSS("#folder"), []string{frames}))
	poll(t, ctx, "the chosen files", `document.getElementById("chosen").textContent.startsWith("48 file")`, 10*time.Second)
	do(t, ctx, "a bad fps", chromedp.SetValue(chromedp.CSS("input[name=fps]"), "fast"), chromedp.Click(chromedp.CSS("#go")))
	poll(t, ctx, "the fps error", `document.querySelector('[data-for="fps"]').textContent.includes("--fps")`, 30*time.Second)
	shot(t, ctx, shots, "submit-error")
	if up, _ := os.ReadDir(filepath.Join(w.data, "uploads")); len(up) != 0 {
		t.Errorf("a refused upload left %d folders in data/uploads", len(up))
	}
	do(t, ctx, "submit the folder", chromedp.SetValue(chromedp.CSS("input[name=fps]"), "24"), chromedp.SetValue(chromedp.CSS("input[name=sets]"), "8"),
		chromedp.SetValue(chromedp.CSS("input[name=name]"), "shot010"), chromedp.Click(chromedp.CSS("#go")))
	poll(t, ctx, "the job's page", `location.pathname.startsWith("/jobs/") && document.getElementById("grid").dataset.layout`, 60*time.Second)
	id := strings.TrimPrefix(try(chromedp.Run(ctx, chromedp.Location())).must(t, "location"), w.base+"/jobs/")
	if g := eval[string](t, ctx, gridStates); g != "AAAAAAAA" {
		t.Errorf("the new job's grid reads %q, want 8 sets waiting", g)
	}

	// A second job, cancelled from the jobs page.
	id2 := strings.TrimSpace(runCmd(t, binary, "submit", "--coordinator", w.addr, "--token", token, "--frames", other, "--sets", "2", "--priority", "-5", "--name", "shot020"))
	do(t, ctx, "the jobs page", chromedp.Navigate(w.base+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-job="`+id2+`"] [data-act=cancel]`)))
	shot(t, ctx, shots, "jobs")
	do(t, ctx, "cancel", chromedp.Click(chromedp.CSS(`tr[data-job="`+id2+`"] [data-act=cancel]`)))
	poll(t, ctx, "the cancelled row", `document.querySelector('tr[data-job="`+id2+`"] .state').textContent === "cancelled"`, 30*time.Second)
	if js := try(fc.GetJob(context.Background(), &farmpb.GetJobRequest{JobId: id2})).must(t, "GetJob"); js.State != "cancelled" {
		t.Errorf("after Cancel on the page gRPC says job 2 is %s", js.State)
	}

	// Real nodes render the first; its grid turns C with no reload.
	do(t, ctx, "the job page", chromedp.Navigate(w.base+"/jobs/"+id))
	poll(t, ctx, "the grid", `document.getElementById("grid").dataset.layout`, 30*time.Second)
	eval[bool](t, ctx, `window.sameLoad = true`)
	for _, n := range []string{"n1", "n2"} {
		addNode(t, w.farm, n, nodeOpts{slow: 1500 * time.Millisecond, noOnce: true, token: token})
	}
	poll(t, ctx, "sets done and sets to do", `(() => { const g = `+gridStates+`; return g.includes("C") && /[AB]/.test(g); })()`, 90*time.Second)
	shot(t, ctx, shots, "job-rendering")
	poll(t, ctx, "every set done", `(`+gridStates+`) === "CCCCCCCC" && document.getElementById("state").textContent === "done"`, 3*time.Minute)
	if !eval[bool](t, ctx, `window.sameLoad === true`) {
		t.Fatal("the job page was reloaded")
	}
	js := try(fc.GetJob(context.Background(), &farmpb.GetJobRequest{JobId: id})).must(t, "GetJob")
	var want string
	for _, s := range js.Sets {
		want += s.State
	}
	if got := eval[string](t, ctx, gridStates); got != want {
		t.Errorf("the grid reads %q, gRPC says %q", got, want)
	}
	// A set in detail, with its thumbnail.
	eval[bool](t, ctx, `(() => { const c = document.getElementById("grid"), r = c.getBoundingClientRect();
  return c.dispatchEvent(new MouseEvent("click", { clientX: r.left + 4, clientY: r.top + 4, bubbles: true })); })()`)
	poll(t, ctx, "the thumbnail", `document.getElementById("thumb").complete && document.getElementById("thumb").naturalWidth === 160`, 30*time.Second)
	if got := eval[string](t, ctx, `document.getElementById("setinfo").textContent`); !strings.Contains(got, "Encode time") || !strings.Contains(got, js.Sets[0].Node) {
		t.Errorf("set 0's detail: %q (gRPC: node %s)", got, js.Sets[0].Node)
	}
	shot(t, ctx, shots, "job-done")

	// The final plays in the page's player: its duration is the job's.
	fetched := filepath.Join(w.root, "fetched.mp4")
	runCmd(t, binary, "fetch", "--coordinator", w.addr, "--token", token, "--job", id, "-o", fetched)
	probe := strings.TrimSpace(runCmd(t, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", fetched))
	wantDur := try(strconv.ParseFloat(probe, 64)).must(t, "duration")
	poll(t, ctx, "the player", `document.getElementById("video").readyState >= 1`, 30*time.Second)
	dur := eval[float64](t, ctx, `document.getElementById("video").duration`)
	if d := dur - wantDur; d > 0.001 || d < -0.001 || dur < 1.99 {
		t.Errorf("the player says %.4f s, the video is %.4f s (48 frames at 24 fps)", dur, wantDur)
	}
	eval[bool](t, ctx, `(() => { const v = document.getElementById("video"); v.muted = true; v.play(); return true; })()`)
	poll(t, ctx, "playback", `document.getElementById("video").currentTime > 0.3`, 20*time.Second)
	shot(t, ctx, shots, "job-playing")

	// Downloaded through the page's link: the bytes fetch gets.
	dl := t.TempDir()
	try(chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dl, EventsEnabled: ptrTo(true)})).must(t, "download behaviour")
	var mu sync.Mutex
	path := ""
	done := make(chan struct{})
	if err := chromedp.ListenBrowser(ctx, func(ev any) {
		if p, ok := ev.(*browser.EventDownloadProgress); ok && p.State == browser.DownloadProgressStateCompleted {
			mu.Lock()
			if path == "" {
				path = filepath.Join(dl, p.GUID)
				close(done)
			}
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "download", chromedp.Click(chromedp.CSS("#download")))
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the download did not complete")
	}
	got := try(os.ReadFile(path)).must(t, "downloaded")
	wantB := try(os.ReadFile(fetched)).must(t, "fetched")
	if sha256.Sum256(got) != sha256.Sum256(wantB) {
		t.Errorf("downloaded %d bytes, fetch %d: they differ", len(got), len(wantB))
	}

	// The nodes page shows what gRPC says of the nodes.
	nodes := ctx
	do(t, nodes, "the nodes page", chromedp.Navigate(w.base+"/nodes"), chromedp.WaitVisible(chromedp.CSS(`tr[data-node="n2"]`)))
	shot(t, nodes, shots, "nodes")
	js = try(fc.GetJob(context.Background(), &farmpb.GetJobRequest{JobId: id})).must(t, "GetJob")
	for _, n := range js.Nodes {
		row := eval[[]string](t, nodes, `[...document.querySelectorAll('tr[data-node="`+n.Name+`"] td')].map((td) => td.textContent)`)
		if len(row) < 7 || row[0] != n.Name || row[4] != strconv.Itoa(int(n.SetsDone)) || row[5] != strconv.Itoa(int(n.Slots)) || row[6] != "—" {
			t.Errorf("nodes page row %v; gRPC: %s with %d sets done, %d slots, none held", row, n.Name, n.SetsDone, n.Slots)
		}
	}
	do(t, ctx, "the jobs page, done", chromedp.Navigate(w.base+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-job="`+id+`"] [data-act=download]`)))
	shot(t, ctx, shots, "jobs-done")
}

func ptrTo[T any](v T) *T { return &v }

// TestBrowserGridScale measures (prints, never asserts) how the job page
// draws a 1,000-set job while 100 simulated nodes take sets, heartbeat
// their progress and give sets back, through the real coordinator's gRPC,
// as the events stream in.
func TestBrowserGridScale(t *testing.T) {
	needFFmpeg(t)
	const sets, nodes = 1000, 100
	shots := artifacts(t)
	w := startWebFarm(t)
	frames := filepath.Join(w.root, "frames")
	genFrames(t, frames, 4*sets, 1, "32x32")
	id := strings.TrimSpace(runCmd(t, binary, "submit", "--coordinator", w.addr, "--frames", frames, "--sets", strconv.Itoa(sets), "--codec", "ffv1"))
	ctx := newBrowser(t)
	do(t, ctx, "the job page", chromedp.Navigate(w.base+"/jobs/"+id))
	poll(t, ctx, "the grid", `document.getElementById("grid").dataset.layout?.endsWith(" `+strconv.Itoa(sets)+`")`, 30*time.Second)

	conn := try(grpc.NewClient(w.addr, try(creds.DialOptions("", creds.ClientTLS{})).must(t, "opts")...)).must(t, "dial")
	defer conn.Close()
	nc := farmpb.NewNodeServiceClient(conn)
	sctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("sim-%03d", i)
			for sctx.Err() == nil {
				r, err := nc.AcquireSet(sctx, &farmpb.AcquireSetRequest{Node: name, CpuLoad: 0.5, FreeCores: 4})
				a := r.GetAssignment()
				if err != nil || a == nil {
					time.Sleep(200 * time.Millisecond)
					continue
				}
				for f := 1; f <= len(a.Frames) && sctx.Err() == nil; f++ {
					time.Sleep(400 * time.Millisecond)
					nc.Heartbeat(sctx, &farmpb.HeartbeatRequest{Node: name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token, FramesDone: uint32(f), CpuLoad: 0.5, FreeCores: 4})
				}
				nc.ReleaseSet(context.Background(), &farmpb.ReleaseSetRequest{Node: name, JobId: a.JobId, SetIndex: a.SetIndex, Token: a.Token})
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()
	poll(t, ctx, "100 nodes in the table", `document.querySelectorAll("#nodes tbody tr").length >= `+strconv.Itoa(nodes), 60*time.Second)

	const measure = `new Promise((resolve) => {
  const gaps = [], long = [];
  const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) long.push(e.duration); });
  try { obs.observe({ type: "longtask" }); } catch (e) {}
  performance.clearMeasures();
  const logBefore = document.querySelectorAll("#log li").length;
  const t0 = performance.now();
  let last = t0;
  function tick(t) {
    gaps.push(t - last); last = t;
    if (t - t0 < 10000) { requestAnimationFrame(tick); return; }
    obs.disconnect();
    const m = (n) => performance.getEntriesByName(n).map((e) => e.duration);
    resolve({ seconds: (t - t0) / 1000, gaps, long, draw: m("grid-draw"), apply: m("state-apply"),
      b: (` + gridStates + `).split("").filter((c) => c === "B").length, rows: document.querySelectorAll("#nodes tbody tr").length, logBefore });
  }
  requestAnimationFrame(tick);
})`
	type result struct {
		Seconds                 float64
		Gaps, Long, Draw, Apply []float64
		B, Rows, LogBefore      int
	}
	fc := farmSvc(t, w.addr, "")
	before := try(fc.GetJob(context.Background(), &farmpb.GetJobRequest{JobId: id})).must(t, "GetJob").LastEventSeq
	r := eval[result](t, ctx, measure)
	after := try(fc.GetJob(context.Background(), &farmpb.GetJobRequest{JobId: id})).must(t, "GetJob").LastEventSeq
	shot(t, ctx, shots, "job-1000-sets")
	stats := func(v []float64) string {
		if len(v) == 0 {
			return "-"
		}
		s := slices.Clone(v)
		sort.Float64s(s)
		q := func(p float64) float64 { return s[min(len(s)-1, int(p*float64(len(s))))] }
		return fmt.Sprintf("n=%d p50=%.2fms p95=%.2fms max=%.2fms", len(s), q(0.5), q(0.95), s[len(s)-1])
	}
	fps := float64(len(r.Gaps)) / r.Seconds
	fmt.Printf("\nGrid scale: %d sets, %d simulated nodes (AcquireSet, a Heartbeat per frame every 400 ms, ReleaseSet), measured %.1f s in headless Chromium\n", sets, nodes, r.Seconds)
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| farm events streamed | %d (%.0f per s) |\n", after-before, float64(after-before)/r.Seconds)
	fmt.Printf("| animation frames | %d (%.1f per s) |\n", len(r.Gaps), fps)
	fmt.Printf("| frame interval | %s |\n", stats(r.Gaps))
	fmt.Printf("| long tasks (>50 ms) | %s |\n", stats(r.Long))
	fmt.Printf("| state messages applied (state-apply) | %s |\n", stats(r.Apply))
	fmt.Printf("| grid redraws (grid-draw) | %s |\n", stats(r.Draw))
	fmt.Printf("| sets in B at the end | %d |\n| node rows | %d |\n\n", r.B, r.Rows)
}
