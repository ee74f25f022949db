package main

// --audio (issue 13): the final gets the sound track, cut to the video's
// length, and its video stays packet for packet what the farm writes
// without audio.

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// copiedPackets lists a stream's packets as stored (stream copy, no
// decoding): "dts,pts,duration,size,md5" each.
func copiedPackets(t *testing.T, path, stream string) []string {
	t.Helper()
	return md5Lines(t, 1, "-i", path, "-map", "0:"+stream, "-c", "copy")
}

// framemd5Copyts is framemd5 of the video at its times in the file.
func framemd5Copyts(t *testing.T, path string) []string {
	t.Helper()
	return md5Lines(t, 2, "-copyts", "-i", path, "-map", "0:v")
}

// probeStart is the file's start time (its earliest stream's), in seconds.
func probeStart(t *testing.T, path string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.TrimSpace(runCmd(t, "ffprobe", "-v", "error", "-show_entries", "format=start_time", "-of", "csv=p=0", path)), 64)
	if err != nil {
		t.Fatalf("start time of %s: %v", path, err)
	}
	return v
}

// audioStream is what ffprobe says of a file's first audio stream: its
// codec, where its last packet ends and its longest packet (one audio
// frame), in seconds.
func audioStream(t *testing.T, path string) (codec string, end, frame float64) {
	t.Helper()
	codec = strings.TrimSpace(runCmd(t, "ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0", path))
	for _, l := range strings.Fields(runCmd(t, "ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", path)) {
		f := strings.Split(strings.Trim(l, ","), ",")
		if len(f) != 2 {
			t.Fatalf("audio packet %q", l)
		}
		pts, err1 := strconv.ParseFloat(f[0], 64)
		d, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("audio packet %q", l)
		}
		end, frame = max(end, pts+d), max(frame, d)
	}
	if codec == "" || frame == 0 {
		t.Fatalf("%s has no audio stream", path)
	}
	return codec, end, frame
}

// TestAudio: FFV1 in Matroska with a WAV (PCM copied) and an M4A (AAC
// copied), FFV1 in MOV with a WAV (PCM copied), x264 in MP4 with a
// WAV (encoded to AAC) and with an M4A (AAC copied), VP9 in WebM with a
// WAV (encoded to Opus). The audio, longer than the video, ends within one
// audio frame of the video's end; the video is, packet for packet, the
// farm's video without audio (x264, against the same job without --audio)
// and one plain ffmpeg run's frames (FFV1) or timing (x264, VP9).
func TestAudio(t *testing.T) {
	needFFmpeg(t)
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	const n = 60
	genFrames(t, frames, n, 1, "160x120")
	// Names with a space, quotes and non-ASCII, as users' files have.
	wav, m4a := filepath.Join(tmp, "tone 'ü' #1.wav"), filepath.Join(tmp, "tone, \"2\".m4a")
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=5", wav)
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=5", "-c:a", "aac", m4a)

	// The x264 job without audio, to hold the others' video against.
	var silent string
	t.Run("x264-mp4-silent", func(t *testing.T) {
		silent = filepath.Join(tmp, "silent.mp4")
		f := startFarm(t, frames, 1, "--codec", "libx264", "--fps", "24000/1001", "--sets", "3", "--out", silent)
		f.fetch(t, filepath.Join(t.TempDir(), "fetched.mp4"))
	})
	if silent == "" || t.Failed() {
		t.FailNow()
	}

	for _, tc := range []struct {
		name, codec, ext, fps, audio string
		wantCodec                    string
		copied                       bool
		// early: the audio starts before 0, by its encoder's delay, as
		// Matroska keeps it (see ffmpeg.MuxAudioArgs).
		early bool
		extra []string
	}{
		{"ffv1-mkv-wav", "ffv1", "mkv", "24", wav, "pcm_s16le", true, false, nil},
		{"ffv1-mkv-m4a", "ffv1", "mkv", "24", m4a, "aac", true, true, nil},
		{"ffv1-mov-wav", "ffv1", "mov", "30000/1001", wav, "pcm_s16le", true, false, nil},
		{"x264-mp4-wav", "libx264", "mp4", "24000/1001", wav, "aac", false, false, nil},
		{"x264-mp4-m4a", "libx264", "mp4", "24000/1001", m4a, "aac", true, false, nil},
		{"vp9-webm-wav", "libvpx-vp9", "webm", "24", wav, "opus", false, true, []string{"--preset", "realtime", "--crf", "32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			out := filepath.Join(dir, "farm."+tc.ext)
			args := append([]string{"--codec", tc.codec, "--fps", tc.fps, "--sets", "3", "--out", out, "--audio", tc.audio}, tc.extra...)
			f := startFarm(t, frames, 1, args...)
			fetched := filepath.Join(dir, "fetched."+tc.ext)
			f.fetch(t, fetched)
			if a, b := sha(t, out), sha(t, fetched); a != b {
				t.Fatalf("fetched sha256 %s differs from --out %s", b, a)
			}

			// The audio: the codec, copied or encoded, and its length.
			codec, end, frame := audioStream(t, out)
			if codec != tc.wantCodec {
				t.Fatalf("audio codec %s, want %s", codec, tc.wantCodec)
			}
			src := copiedPackets(t, tc.audio, "a")
			got := copiedPackets(t, out, "a")
			md5s := func(p []string) []string {
				out := make([]string, len(p))
				for i, l := range p {
					out[i] = strings.Split(l, ",")[4] // after it, side data (skip samples) may follow
				}
				return out
			}
			copied := len(got) > 0 && len(got) < len(src) && slices.Equal(md5s(got), md5s(src[:len(got)]))
			if strings.HasPrefix(codec, "pcm_") {
				// PCM is written again sample for sample, to be cut
				// exactly: the samples, not the packets, are the source's.
				pcm := func(path string) string {
					return runCmd(t, "ffmpeg", "-v", "error", "-i", path, "-map", "0:a", "-af", "atrim=end_sample=44100", "-f", "md5", "-")
				}
				copied = pcm(out) == pcm(tc.audio)
			}
			if copied != tc.copied {
				t.Fatalf("audio copied: %v, want %v (%d packets; the source's %d)", copied, tc.copied, len(got), len(src))
			}
			var num, den float64 = 24, 1
			fmt.Sscanf(tc.fps, "%g/%g", &num, &den)
			video := n * den / num
			t.Logf("%s: audio %s ends at %.6fs, video %.6fs, audio frame %.6fs", tc.name, codec, end, video, frame)
			if math.Abs(end-video) > frame+1e-6 {
				t.Fatalf("the audio ends at %.6fs, the video at %.6fs: more than one audio frame (%.6fs) apart", end, video, frame)
			}

			start := probeStart(t, out)
			if tc.early != (start < 0) || start > 0 || start < -frame {
				t.Fatalf("the file starts at %.6fs; want 0, or less than one audio frame (%.6fs) before when the audio has an encoder delay: %v", start, frame, tc.early)
			}
			// ffmpeg shifts what it reads by a negative start unless
			// given -copyts: the video's frames are then where they are
			// in the file.
			md5 := func(path string) []string {
				if tc.early {
					return framemd5Copyts(t, path)
				}
				return framemd5(t, path)
			}

			// The video.
			plain := filepath.Join(dir, "plain."+tc.ext)
			var plainExtra []string
			if tc.codec == "libvpx-vp9" {
				plainExtra = []string{"-deadline", "realtime", "-crf", "32", "-b:v", "0"}
			}
			plainRun(t, frames, 1, tc.fps, tc.codec, plain, plainExtra...)
			gotT, wantT := packetTimes(t, out), packetTimes(t, plain)
			if len(gotT) != n || len(wantT) != n {
				t.Fatalf("video packets: farm %d, plain %d, want %d", len(gotT), len(wantT), n)
			}
			if tc.codec == "libx264" {
				gotT, wantT = ptsAndDuration(gotT), ptsAndDuration(wantT)
			}
			if !slices.Equal(gotT, wantT) {
				t.Fatalf("video packet timing (pts,dts,duration) differs from the plain run's at %d: %s, %s", firstDiff(gotT, wantT), gotT, wantT)
			}
			switch tc.codec {
			case "ffv1":
				equalFrames(t, md5(out), framemd5(t, plain))
			case "libx264":
				if a, b := copiedPackets(t, out, "v"), copiedPackets(t, silent, "v"); !slices.Equal(a, b) {
					t.Fatalf("video packets differ from the job's without audio at %d", firstDiff(a, b))
				}
				equalFrames(t, md5(out), framemd5(t, silent))
				if a, b := fmt.Sprint(streamInfo(t, out)), fmt.Sprint(streamInfo(t, silent)); a != b {
					t.Fatalf("the video stream differs from the job's without audio:\naudio  %s\nsilent %s", a, b)
				}
			}
			if tc.ext == "mp4" || tc.ext == "mov" {
				if b := topBoxes(t, out); slices.Index(b, "moov") > slices.Index(b, "mdat") {
					t.Fatalf("top-level boxes %v: the index is not before the media", b)
				}
			}
		})
	}
}

// TestBadAudioIsRefused: a missing file, a file that is not audio and a
// video without sound stop the coordinator at start, exit 1, with a message
// that names the file and says what to do.
func TestBadAudioIsRefused(t *testing.T) {
	needFFmpeg(t)
	t.Parallel()
	tmp := t.TempDir()
	frames := filepath.Join(tmp, "frames")
	genFrames(t, frames, 4, 1, "64x48")
	notes, mute := filepath.Join(tmp, "notes.wav"), filepath.Join(tmp, "mute.mkv")
	writeFile(t, notes, "this is not a sound\n")
	runCmd(t, "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=24", "-frames:v", "2", "-c:v", "ffv1", mute)
	for _, tc := range []struct {
		file  string
		words []string
	}{
		{filepath.Join(tmp, "missing.wav"), []string{"missing.wav", "does not exist", "leave --audio out"}},
		{notes, []string{"notes.wav", "not an audio file", "WAV"}},
		{mute, []string{"mute.mkv", "no audio stream", "sound track"}},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			code, stdout, stderr := runBinary(t, nil, "coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0", "--audio", tc.file)
			if code != 1 {
				t.Fatalf("exit code %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			for _, w := range append(tc.words, "--audio") {
				if !strings.Contains(stderr, w) {
					t.Errorf("message lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stdout, "listening") {
				t.Errorf("the coordinator started serving: %s", stdout)
			}
			if _, err := os.Stat(data); err == nil {
				t.Errorf("the refused job created its data folder %s", data)
			}
		})
	}
}
