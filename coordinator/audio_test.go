package coordinator

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/framefarm/framefarm/internal/ffmpeg"
)

// A job recorded before --audio existed keeps its settings JSON, and so
// its fingerprint, and resumes; with --audio the file is part of both.
func TestAudioSettingKeepsOldFingerprints(t *testing.T) {
	old := `{"codec":"libx264","fps_num":24,"fps_den":1,"crf":-1,"preset":"","pix_fmt":"yuv420p","pad_even":false,"width":64,"height":48,"frame_ext":"png","part_ext":"mp4","final_ext":"mp4"}`
	var s jobSettings
	if err := json.Unmarshal([]byte(old), &s); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(s); string(b) != old {
		t.Fatalf("settings without audio marshal to\n%s\nwas\n%s", b, old)
	}
	frames := []frameRecord{{Number: 1, Name: "f_0001.png", Size: 10}}
	fp := fingerprint(s, frames, 2)
	with := s
	with.Audio = "/music/song.wav"
	if fingerprint(with, frames, 2) == fp {
		t.Fatal("the audio file is not in the fingerprint")
	}
	if b, _ := json.Marshal(with); !strings.HasSuffix(string(b), `,"audio":"/music/song.wav"}`) {
		t.Fatalf("settings with audio: %s", b)
	}
}

func TestCheckAudio(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed (run scripts/install-deps.sh)")
	}
	dir := t.TempDir()
	wav, video, text := filepath.Join(dir, "song.wav"), filepath.Join(dir, "clip.mkv"), filepath.Join(dir, "notes.wav")
	for _, args := range [][]string{
		{"-f", "lavfi", "-i", "sine=d=1", wav},
		{"-f", "lavfi", "-i", "testsrc2=s=32x32:r=24", "-frames:v", "2", "-c:v", "ffv1", video},
	} {
		if out, err := exec.Command("ffmpeg", append([]string{"-v", "error"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
		}
	}
	if err := os.WriteFile(text, []byte("not a sound\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var r ffmpeg.Runner
	if got, err := checkAudio(ctx, r, "", "mp4"); got != "" || err != nil {
		t.Errorf("no --audio: %q, %v", got, err)
	}
	if got, err := checkAudio(ctx, r, wav, "mp4"); got != wav || err != nil {
		t.Errorf("a WAV file: %q, %v", got, err)
	}
	for _, tc := range []struct {
		path  string
		words []string
	}{
		{filepath.Join(dir, "missing.wav"), []string{"--audio", "missing.wav", "does not exist"}},
		{dir, []string{"--audio", dir, "is a folder"}},
		{text, []string{"--audio", "notes.wav", "not an audio file", "WAV"}},
		{video, []string{"--audio", "clip.mkv", "no audio stream", "leave --audio out"}},
	} {
		_, err := checkAudio(ctx, r, tc.path, "mp4")
		if err == nil {
			t.Errorf("%s: accepted", tc.path)
			continue
		}
		for _, w := range tc.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: message lacks %q: %v", tc.path, w, err)
			}
		}
	}
}
