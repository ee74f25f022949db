package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/framefarm/framefarm/internal/ffmpeg"
)

// checkAudio refuses, before any work, an --audio file that is missing or
// has no sound track, and returns its absolute path (what the job's
// settings keep: a coordinator started again from another folder resumes
// the same job). No --audio gives "".
func checkAudio(ctx context.Context, r ffmpeg.Runner, path, finalExt string) (string, error) {
	if path == "" {
		return "", nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("--audio %s does not exist: give the path of the sound track to add (a WAV, M4A, MP3, Opus or FLAC file), or leave --audio out", path)
	case err != nil:
		return "", fmt.Errorf("--audio %s cannot be read (%w): fix its permissions or give another file", path, err)
	case fi.IsDir():
		return "", fmt.Errorf("--audio %s is a folder: give the audio file itself", path)
	}
	p, err := r.ProbeAudio(ctx, abs)
	switch {
	case errors.Is(err, ffmpeg.ErrNoAudio):
		return "", fmt.Errorf("--audio %s has no audio stream: give a file with a sound track (WAV, M4A, MP3, Opus, FLAC), or leave --audio out", path)
	case err != nil:
		return "", fmt.Errorf("--audio %s is not an audio file ffprobe can read (%w): give a WAV, M4A, MP3, Opus or FLAC file, or leave --audio out", path, err)
	}
	if _, err := ffmpeg.ChooseAudio(finalExt, p.Codec); err != nil {
		return "", fmt.Errorf("--audio %s: %w", path, err)
	}
	return abs, nil
}

// addAudio muxes the job's audio into video, the joined and verified
// final, in place: the video's packets are copied as they are, and the
// audio is copied when the final's container takes its codec, otherwise
// encoded (AAC in MP4/MOV, Opus in Matroska/WebM), and cut to the video's
// length. The result's video must have the joined file's every timestamp,
// and its audio the codec chosen, before it replaces video. It returns the
// new file's size and SHA-256, and how the audio went in.
func (c *Coordinator) addAudio(ctx context.Context, jr *jobRun, video string, frames int64) (size int64, sum, how string, err error) {
	st := jr.rec.Settings
	src, err := c.cfg.FFmpeg.ProbeAudio(ctx, st.Audio)
	if err != nil {
		return 0, "", "", fmt.Errorf("reading the audio %s: %w", st.Audio, err)
	}
	codec, err := ffmpeg.ChooseAudio(st.FinalExt, src.Codec)
	if err != nil {
		return 0, "", "", err
	}
	rate := st.rate()
	length := float64(frames) * float64(rate.Den) / float64(rate.Num)
	if src.Duration > 0 && src.Duration < length {
		c.log.Warn("the audio is shorter than the video: the video's end is silent", "job", jr.rec.ID,
			"audio", st.Audio, "audio_seconds", src.Duration, "video_seconds", length)
	}
	muxed := filepath.Join(jr.dir, ".tmp-audio-final."+st.FinalExt)
	defer os.Remove(muxed)
	args := ffmpeg.MuxAudioArgs(video, muxed, ffmpeg.MuxAudio{Audio: st.Audio, Codec: codec,
		Duration: rate.Seconds(frames), FastStart: !st.NoFastStart})
	if err := c.cfg.FFmpeg.Run(ctx, args, nil); err != nil {
		return 0, "", "", fmt.Errorf("adding the audio %s: %w", st.Audio, err)
	}
	if err := c.checkMuxed(ctx, video, muxed, codec); err != nil {
		return 0, "", "", fmt.Errorf("adding the audio %s: %w", st.Audio, err)
	}
	if err := os.Rename(muxed, video); err != nil {
		return 0, "", "", err
	}
	if err := syncFile(video); err != nil {
		return 0, "", "", err
	}
	size, sum, err = hashFile(video)
	return size, sum, fmt.Sprintf("with the audio of %s (%s)", filepath.Base(st.Audio), codec), err
}

// checkMuxed holds the video of muxed against that of video, the checked
// join: the same frames at the same timestamps in the same time base; and
// muxed must have an audio stream of the codec chosen.
func (c *Coordinator) checkMuxed(ctx context.Context, video, muxed string, codec ffmpeg.AudioCodec) error {
	// Both read the same way, so that their timestamps compare exactly:
	// Matroska in Go where it can, else both with ffprobe.
	var want, got ffmpeg.Probe
	err := ffmpeg.ErrMatroskaLayout
	if ext := strings.ToLower(filepath.Ext(video)); ext == ".mkv" || ext == ".webm" {
		want, got, err = readBoth(video, muxed, ffmpeg.ReadMatroskaTiming)
	}
	if errors.Is(err, ffmpeg.ErrMatroskaLayout) {
		want, got, err = readBoth(video, muxed, func(path string) (ffmpeg.Probe, error) {
			return c.cfg.FFmpeg.ProbeVideo(ctx, path, true)
		})
	}
	if err != nil {
		return err
	}
	if got.Packets != want.Packets || got.TimeBase != want.TimeBase || !slices.Equal(got.PTS, want.PTS) ||
		(got.StreamDuration != 0 && want.StreamDuration != 0 && got.StreamDuration != want.StreamDuration) {
		return fmt.Errorf("the video changed when the audio was added: %d frames in time base %s (%.6fs), was %d in %s (%.6fs)",
			got.Packets, got.TimeBase, got.StreamDuration, want.Packets, want.TimeBase, want.StreamDuration)
	}
	a, err := c.cfg.FFmpeg.ProbeAudio(ctx, muxed)
	if err != nil {
		return fmt.Errorf("reading the audio added: %w", err)
	}
	if a.Codec != codec.Codec {
		return fmt.Errorf("the audio added is %s, expected %s", a.Codec, codec.Codec)
	}
	return nil
}

// readBoth reads the video timing of the file without audio and that with.
func readBoth(video, muxed string, read func(string) (ffmpeg.Probe, error)) (want, got ffmpeg.Probe, err error) {
	if want, err = read(video); err != nil {
		return want, got, fmt.Errorf("reading the video without audio: %w", err)
	}
	if got, err = read(muxed); err != nil {
		return want, got, fmt.Errorf("reading the video with audio: %w", err)
	}
	return want, got, nil
}
