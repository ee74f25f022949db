//go:build browser

package main

// The colour a viewer sees (issue 16): the farm's final played in Debian's
// headless Chromium, driven with chromedp (make test-browser).

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lucasb-eyer/go-colorful"
)

// playerPage shows the video named in its query at its own size and marks
// the page ready once its first frame is on screen.
const playerPage = `<!doctype html><html><body style="margin:0;background:#808080">
<video id="v" muted playsinline preload="auto" style="display:block"></video>
<script>
const v = document.getElementById('v');
v.addEventListener('seeked', () => requestAnimationFrame(() => requestAnimationFrame(() => { document.body.dataset.ready = '1'; })));
v.addEventListener('loadeddata', () => { v.style.width = v.videoWidth + 'px'; v.style.height = v.videoHeight + 'px'; v.currentTime = 0; });
v.src = new URLSearchParams(location.search).get('v');
</script></body></html>`

// TestBrowserColourOfBars: SMPTE HD bars rendered by the farm with its
// default colour settings, played in Chromium, are on screen within a mean
// CIEDE2000 of 2 of the source frame; beside it, the same bars from one
// plain ffmpeg run without colour settings (BT.601, untagged).
func TestBrowserColourOfBars(t *testing.T) {
	needFFmpeg(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("no chromium: run scripts/install-deps.sh browser (make test-browser does)")
	}
	root := t.TempDir()
	frames := filepath.Join(root, "frames")
	if err := os.MkdirAll(frames, 0o755); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "smptehdbars=s=1280x720:r=24", "-frames:v", "4", "-start_number", "1", filepath.Join(frames, "f_%04d.png"))
	f := colourFarm(t)
	id := f.submit(t, "--frames", frames, "--codec", "libx264", "--crf", "12", "--sets", "2", "--out", filepath.Join(root, "farm.mp4"))
	site := filepath.Join(root, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	f.fetchJob(t, id, filepath.Join(site, "farm.mp4"))
	runCmd(t, "ffmpeg", "-v", "error", "-framerate", "24", "-start_number", "1", "-i", filepath.Join(frames, "f_%04d.png"),
		"-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", "-movflags", "+faststart", filepath.Join(site, "before.mp4"))
	if err := os.WriteFile(filepath.Join(site, "player.html"), []byte(playerPage), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(site)))
	defer srv.Close()

	src := readPNG(t, filepath.Join(frames, "f_0001.png"))
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 900), chromedp.Flag("force-color-profile", "srgb"))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// Start the browser on the tab's own context: one first started under
	// a context with a deadline closes when that context ends.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	shot := func(name string) image.Image {
		ctx, cancel := context.WithTimeout(bctx, time.Minute)
		defer cancel()
		err := chromedp.Do(ctx,
			chromedp.EmulateViewport(1400, 900),
			chromedp.Navigate(srv.URL+"/player.html?v="+name),
			chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)))
		var buf []byte
		if err == nil {
			buf, err = chromedp.Run(ctx, chromedp.Screenshot(chromedp.ID("v")))
		}
		if err != nil {
			t.Fatalf("Chromium playing %s: %v", name, err)
		}
		img, err := png.Decode(bytes.NewReader(buf))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	got, before := meanDeltaE(t, src, shot("farm.mp4")), meanDeltaE(t, src, shot("before.mp4"))
	t.Logf("SMPTE HD bars 1280x720, x264 crf 12, in Chromium: mean CIEDE2000 %.2f from the source (without colour settings: %.2f)", got, before)
	if got > 2 {
		t.Errorf("Chromium shows the farm's bars at a mean CIEDE2000 of %.2f from the source, want at most 2", got)
	}
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	img, err := png.Decode(r)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// meanDeltaE is the mean CIEDE2000 difference between two images of the
// same size, pixel by pixel, both taken as sRGB, in the usual units (L* of
// 0 to 100; go-colorful's distance is a hundredth of that).
func meanDeltaE(t *testing.T, a, b image.Image) float64 {
	t.Helper()
	if a.Bounds().Size() != b.Bounds().Size() {
		t.Fatalf("the screenshot is %v, the source %v", b.Bounds().Size(), a.Bounds().Size())
	}
	ab, bb := a.Bounds(), b.Bounds()
	var sum float64
	for y := 0; y < ab.Dy(); y++ {
		for x := 0; x < ab.Dx(); x++ {
			ca, _ := colorful.MakeColor(a.At(ab.Min.X+x, ab.Min.Y+y))
			cb, _ := colorful.MakeColor(b.At(bb.Min.X+x, bb.Min.Y+y))
			sum += 100 * ca.DistanceCIEDE2000(cb)
		}
	}
	return sum / float64(ab.Dx()*ab.Dy())
}
