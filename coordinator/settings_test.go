package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/framefarm/framefarm/internal/ffmpeg"
)

// A job's filter thread count is fixed when it is created: a coordinator
// started again on its data (on a machine with other cores, say) gives the
// nodes the count the job's first parts were converted with.
func TestResumedJobKeepsItsFilterThreads(t *testing.T) {
	dir := t.TempDir()
	frames := filepath.Join(dir, "frames")
	if err := os.Mkdir(frames, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		var b bytes.Buffer
		if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 16, 16))); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(frames, fmt.Sprintf("f_%04d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		JobSpec: JobSpec{FramesDir: frames, Sets: 2, Codec: "ffv1", FPS: "24", CRF: -1},
		Data:    filepath.Join(dir, "data"), Listen: "127.0.0.1:0",
		Lease: time.Minute, HeartbeatTimeout: 10 * time.Second, PollWindow: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
		FFmpeg: ffmpeg.Runner{FFmpeg: filepath.Join(dir, "no-ffmpeg"), FFprobe: filepath.Join(dir, "no-ffprobe")},
	}
	ctx := context.Background()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.only().encodeSettings().FilterThreads, uint32(ffmpeg.AutoFilterThreads(runtime.NumCPU())); got != want {
		t.Errorf("new job: filter threads %d, want %d (ffmpeg's own count here)", got, want)
	}
	// As if the job had been created on a machine with 6 cores.
	s := c.only().rec.Settings
	s.FilterThreads = 7
	b, _ := json.Marshal(s)
	if _, err := c.sqlite().db.Exec(`UPDATE jobs SET settings=? WHERE id=?`, string(b), c.only().rec.ID); err != nil {
		t.Fatal(err)
	}
	id := c.JobID()
	c.close()

	c, err = New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if c.JobID() != id {
		t.Fatalf("started again: job %s, want %s resumed", c.JobID(), id)
	}
	if got := c.only().encodeSettings().FilterThreads; got != 7 {
		t.Errorf("resumed job: filter threads %d, want the job's 7", got)
	}
}
