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

// checkMuxed passes a video copied beside its audio, and catches one whose
// frames moved: ffmpeg's default for Matroska shifts every stream by an
// Opus encoder's delay, which MuxAudioArgs turns off.
func TestCheckMuxed(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed (run scripts/install-deps.sh)")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ffmpeg", append([]string{"-v", "error", "-y"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
		}
	}
	wav := filepath.Join(dir, "tone.wav")
	run("-f", "lavfi", "-i", "sine=d=3", wav)
	c := &Coordinator{}
	ctx := context.Background()
	opus := ffmpeg.AudioCodec{Encoder: "libopus", Codec: "opus"}
	for _, ext := range []string{"mkv", "mp4"} {
		video := filepath.Join(dir, "video."+ext)
		codec := map[string]string{"mkv": "ffv1", "mp4": "libx264"}[ext]
		run("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24", "-frames:v", "24", "-c:v", codec, "-pix_fmt", "yuv420p", video)
		good := filepath.Join(dir, "good."+ext)
		ac, _ := ffmpeg.ChooseAudio(ext, "pcm_s16le")
		args := ffmpeg.MuxAudioArgs(video, good, ffmpeg.MuxAudio{Audio: wav, Codec: ac, Duration: "1.000000", FastStart: true})
		if err := c.cfg.FFmpeg.Run(ctx, args, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.checkMuxed(ctx, video, good, ac); err != nil {
			t.Errorf("%s: %v", ext, err)
		}
		if err := c.checkMuxed(ctx, video, good, opus); ac != opus && (err == nil || !strings.Contains(err.Error(), "expected opus")) {
			t.Errorf("%s: audio of another codec: %v", ext, err)
		}
	}
	shifted := filepath.Join(dir, "shifted.mkv")
	run("-i", filepath.Join(dir, "video.mkv"), "-t", "1", "-i", wav, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "libopus", shifted)
	if err := c.checkMuxed(ctx, filepath.Join(dir, "video.mkv"), shifted, opus); err == nil || !strings.Contains(err.Error(), "the video changed") {
		t.Errorf("video shifted by the Opus delay: %v, want it refused", err)
	}
}
