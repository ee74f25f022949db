package ffmpeg

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestChooseAudio(t *testing.T) {
	for _, tc := range []struct {
		ext, source string
		want        AudioCodec
	}{
		// Copied where the container takes the codec.
		{"mp4", "aac", AudioCodec{Copy: true, Encoder: "copy", Codec: "aac"}},
		{"mp4", "mp3", AudioCodec{Copy: true, Encoder: "copy", Codec: "mp3"}},
		{"mp4", "opus", AudioCodec{Copy: true, Encoder: "copy", Codec: "opus"}},
		{"MP4", "alac", AudioCodec{Copy: true, Encoder: "copy", Codec: "alac"}},
		{"mov", "aac", AudioCodec{Copy: true, Encoder: "copy", Codec: "aac"}},
		{"mov", "pcm_s16le", AudioCodec{Copy: true, Encoder: "pcm_s16le", Codec: "pcm_s16le"}},
		{"mov", "pcm_s24le", AudioCodec{Copy: true, Encoder: "pcm_s24le", Codec: "pcm_s24le"}},
		{"mkv", "pcm_s16le", AudioCodec{Copy: true, Encoder: "pcm_s16le", Codec: "pcm_s16le"}},
		{"mkv", "flac", AudioCodec{Copy: true, Encoder: "copy", Codec: "flac"}},
		{"mkv", "aac", AudioCodec{Copy: true, Encoder: "copy", Codec: "aac"}},
		{"mkv", "opus", AudioCodec{Copy: true, Encoder: "copy", Codec: "opus"}},
		{"webm", "opus", AudioCodec{Copy: true, Encoder: "copy", Codec: "opus"}},
		{"webm", "vorbis", AudioCodec{Copy: true, Encoder: "copy", Codec: "vorbis"}},
		// Encoded to AAC in MP4 and MOV.
		{"mp4", "pcm_s16le", AudioCodec{Encoder: "aac", Codec: "aac"}},
		{"mp4", "flac", AudioCodec{Encoder: "aac", Codec: "aac"}},
		{"mp4", "vorbis", AudioCodec{Encoder: "aac", Codec: "aac"}},
		{"mov", "opus", AudioCodec{Encoder: "aac", Codec: "aac"}},
		{"mov", "flac", AudioCodec{Encoder: "aac", Codec: "aac"}},
		// Encoded to Opus in Matroska and WebM.
		{"webm", "aac", AudioCodec{Encoder: "libopus", Codec: "opus"}},
		{"webm", "pcm_s16le", AudioCodec{Encoder: "libopus", Codec: "opus"}},
		{"webm", "mp3", AudioCodec{Encoder: "libopus", Codec: "opus"}},
		{"mkv", "wmav2", AudioCodec{Encoder: "libopus", Codec: "opus"}},
		{"mkv", "pcm_mulaw", AudioCodec{Encoder: "libopus", Codec: "opus"}},
	} {
		got, err := ChooseAudio(tc.ext, tc.source)
		if err != nil || got != tc.want {
			t.Errorf("ChooseAudio(%q, %q) = %+v, %v; want %+v", tc.ext, tc.source, got, err, tc.want)
		}
	}
	if _, err := ChooseAudio("avi", "aac"); err == nil || !strings.Contains(err.Error(), ".avi") {
		t.Errorf("ChooseAudio(avi): %v, want an error naming .avi", err)
	}
}

func TestMuxAudioArgs(t *testing.T) {
	args := MuxAudioArgs("/j/.tmp-final.mp4", "/j/.tmp-audio.mp4", MuxAudio{Audio: "/a/song.wav",
		Codec: AudioCodec{Encoder: "aac", Codec: "aac"}, Duration: "4.170833", FastStart: true})
	line := " " + strings.Join(args, " ") + " "
	for _, want := range []string{
		// The video first, the cut on the audio input only.
		" -i /j/.tmp-final.mp4 -t 4.170833 -i /a/song.wav ",
		" -map 0:v -map 1:a:0 ", " -c:v copy ", " -c:a aac ", " -map_chapters -1 ", " -movflags +faststart ",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("args lack %q:\n%s", want, line)
		}
	}
	if !strings.HasSuffix(line, " /j/.tmp-audio.mp4 -y ") || strings.Count(line, " -t ") != 1 || strings.Contains(line, "shortest") {
		t.Errorf("args: %s", line)
	}
	args = MuxAudioArgs("/j/v.mkv", "/j/o.mkv", MuxAudio{Audio: "/a/s.wav", Codec: AudioCodec{Copy: true, Encoder: "pcm_s16le", Codec: "pcm_s16le"}, FastStart: true})
	if slices.Contains(args, "-movflags") || slices.Contains(args, "-t") || !slices.Contains(args, "copy") ||
		!strings.Contains(strings.Join(args, " "), "-avoid_negative_ts disabled") {
		t.Errorf("mkv args: %v", args)
	}
	args = MuxAudioArgs("/j/v.mp4", "/j/o.mp4", MuxAudio{Audio: "/a/s.m4a", Codec: AudioCodec{Copy: true, Encoder: "copy", Codec: "aac"}})
	if slices.Contains(args, "-movflags") || slices.Contains(args, "-avoid_negative_ts") {
		t.Errorf("mp4 args without faststart: %v", args)
	}
}

func TestProbeAudio(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed (run scripts/install-deps.sh)")
	}
	t.Parallel()
	dir := t.TempDir()
	wav, video := filepath.Join(dir, "a.wav"), filepath.Join(dir, "v.mkv")
	for _, args := range [][]string{
		{"-f", "lavfi", "-i", "sine=f=440:d=1.5:r=48000", "-ac", "2", wav},
		{"-f", "lavfi", "-i", "testsrc2=s=32x32:r=24", "-frames:v", "3", "-c:v", "ffv1", video},
	} {
		if out, err := exec.Command("ffmpeg", append([]string{"-v", "error"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
		}
	}
	var r Runner
	p, err := r.ProbeAudio(context.Background(), wav)
	if err != nil || p.Codec != "pcm_s16le" || p.SampleRate != 48000 || p.Channels != 2 || p.Duration != 1.5 {
		t.Errorf("ProbeAudio(wav) = %+v, %v", p, err)
	}
	if _, err := r.ProbeAudio(context.Background(), video); !errors.Is(err, ErrNoAudio) {
		t.Errorf("ProbeAudio(video only): %v, want ErrNoAudio", err)
	}
	var fe *Error
	if _, err := r.ProbeAudio(context.Background(), filepath.Join(dir, "missing.wav")); !errors.As(err, &fe) {
		t.Errorf("ProbeAudio(missing): %v, want an ffprobe error", err)
	}
}
