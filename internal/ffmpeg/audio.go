package ffmpeg

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	ffmpeggo "github.com/u2takey/ffmpeg-go"
)

// AudioProbe is what ffprobe says of a file's first audio stream.
type AudioProbe struct {
	Codec      string
	SampleRate int
	Channels   int
	// Duration in seconds: the stream's where the container keeps one,
	// else the container's; 0 when neither is known.
	Duration float64
}

// ErrNoAudio means a file has no audio stream.
var ErrNoAudio = errors.New("no audio stream")

// ProbeAudio reads the first audio stream of path.
func (r Runner) ProbeAudio(ctx context.Context, path string) (AudioProbe, error) {
	var doc struct {
		Streams []struct {
			CodecName  string `json:"codec_name"`
			SampleRate string `json:"sample_rate"`
			Channels   int    `json:"channels"`
			Duration   string `json:"duration"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := r.probeJSON(ctx, path, []string{"-v", "error", "-select_streams", "a:0",
		"-show_entries", "stream=codec_name,sample_rate,channels,duration:format=duration", "-of", "json"}, &doc); err != nil {
		return AudioProbe{}, err
	}
	if len(doc.Streams) == 0 {
		return AudioProbe{}, fmt.Errorf("ffprobe %s: %w", path, ErrNoAudio)
	}
	s := doc.Streams[0]
	p := AudioProbe{Codec: s.CodecName, Channels: s.Channels}
	p.SampleRate, _ = strconv.Atoi(s.SampleRate)
	if p.Duration, _ = strconv.ParseFloat(s.Duration, 64); p.Duration == 0 {
		p.Duration, _ = strconv.ParseFloat(doc.Format.Duration, 64)
	}
	return p, nil
}

// audioCodecs lists, per final container, the audio codecs (as ffprobe
// names them) that go in by stream copy: those the container's
// specifications and common players take, not every one ffmpeg's muxer
// would write (it puts Vorbis in MP4, which nothing plays). ffmpeg 5.1
// refuses FLAC in MP4 and Opus in MOV.
var audioCodecs = map[string][]string{
	"mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus"},
	"mov": {"aac", "mp3", "alac", "ac3", "eac3",
		"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be", "pcm_u8"},
	"mkv": {"aac", "mp3", "opus", "vorbis", "flac", "alac", "ac3", "eac3", "dts", "truehd",
		"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f64le", "pcm_u8"},
	"webm": {"opus", "vorbis"},
}

// AudioCodec is how an audio stream goes into a final container.
type AudioCodec struct {
	// Copy: the stream is copied as it is (PCM: sample for sample);
	// otherwise it is encoded.
	Copy bool
	// Encoder is ffmpeg's -c:a: "copy", the source's PCM codec, "aac" or
	// "libopus".
	Encoder string
	// Codec is the codec in the final, as ffprobe names it.
	Codec string
}

func (a AudioCodec) String() string {
	if a.Copy {
		return a.Codec + ", copied"
	}
	return "encoded to " + a.Codec
}

// ChooseAudio picks how audio of codec source (ffprobe's name) goes into a
// final of container finalExt (without the dot): stream copy when the
// container takes that codec, otherwise encoded to AAC (.mp4, .mov) or
// Opus (.mkv, .webm).
func ChooseAudio(finalExt, source string) (AudioCodec, error) {
	ext := strings.ToLower(finalExt)
	takes, ok := audioCodecs[ext]
	if !ok {
		return AudioCodec{}, fmt.Errorf("no audio can be added to a .%s file: use .mp4, .mov, .mkv or .webm", finalExt)
	}
	if slices.Contains(takes, source) {
		if strings.HasPrefix(source, "pcm_") {
			// PCM samples are rewritten as they are, by the encoder of
			// the same name, so that the cut falls on the video's end
			// exactly rather than at the end of a packet.
			return AudioCodec{Copy: true, Encoder: source, Codec: source}, nil
		}
		return AudioCodec{Copy: true, Encoder: "copy", Codec: source}, nil
	}
	if ext == "mp4" || ext == "mov" {
		return AudioCodec{Encoder: "aac", Codec: "aac"}, nil
	}
	return AudioCodec{Encoder: "libopus", Codec: "opus"}, nil
}

// MuxAudio is what MuxAudioArgs adds to a video.
type MuxAudio struct {
	// Audio is the audio file; its first audio stream is used.
	Audio string
	Codec AudioCodec
	// Duration cuts the audio to this many seconds (the video's length,
	// from Rate.Seconds): exactly when it is encoded, at the first packet
	// that starts after it when copied.
	Duration string
	// FastStart puts an MP4/MOV file's index before its media data.
	FastStart bool
}

// MuxAudioArgs is the command line that writes out with the video of
// video, copied packet for packet (its timestamps, time base and tags as
// they are), and m's audio. The cut is an input option on the audio
// alone, so that it can never drop a video packet. In Matroska an audio
// stream with an encoder delay then starts a few milliseconds before 0
// (the file's start time is negative; ffmpeg's command line, unless given
// -copyts, shifts what it reads by that much), where one plain ffmpeg run
// would have moved the video that much later instead.
func MuxAudioArgs(video, out string, m MuxAudio) []string {
	v := ffmpeggo.Input(video)
	in := ffmpeggo.KwArgs{}
	setIf(in, "t", m.Duration)
	a := ffmpeggo.Input(m.Audio, in)
	kw := ffmpeggo.KwArgs{"c:v": "copy", "c:a": m.Codec.Encoder,
		// An audio file's chapters (an audiobook's) are not the video's.
		"map_chapters": "-1"}
	switch ext := strings.ToLower(filepath.Ext(out)); ext {
	case ".mp4", ".mov":
		if m.FastStart {
			kw["movflags"] = "+faststart"
		}
	case ".mkv", ".webm":
		// Encoded audio starts before 0 by its encoder's delay (AAC's
		// priming, Opus's pre-skip). MP4 hides that in an edit list;
		// Matroska keeps it as negative times, and by default ffmpeg
		// would rather shift every stream, the video too, by that much.
		kw["avoid_negative_ts"] = "disabled"
	}
	st := ffmpeggo.Output([]*ffmpeggo.Stream{v.Get("v"), a.Get("a:0")}, out, kw).OverWriteOutput()
	return append(baseArgs(), st.GetArgs()...)
}
