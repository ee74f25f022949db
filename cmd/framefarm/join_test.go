package main

// The final video against one plain ffmpeg run's *file*: packet timing,
// time scale, colour elements and tags, and the index before the media.

import (
	be "encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// plainRun encodes the frames f_%04d.png from startNumber with one ffmpeg
// run, with the settings the farm gives its encoder.
func plainRun(t *testing.T, frames string, startNumber int, fps, codec, out string, extra ...string) {
	t.Helper()
	_, colour := plainColour(t, filepath.Join(frames, fmt.Sprintf("f_%04d.png", startNumber)), codec, "yuv420p", strings.TrimPrefix(filepath.Ext(out), "."))
	args := append([]string{"-v", "error", "-framerate", fps, "-start_number", fmt.Sprint(startNumber), "-i", filepath.Join(frames, "f_%04d.png"), "-c:v", codec, "-pix_fmt", "yuv420p"}, colour...)
	switch codec {
	case "libx264":
		args = append(args, "-x264-params", "stitchable=1")
	case "libvpx-vp9":
		args = append(args, "-row-mt", "1")
	case "ffv1":
		args = append(args, "-level", "3")
	}
	if ext := filepath.Ext(out); ext == ".mp4" || ext == ".mov" {
		args = append(args, "-movflags", "+faststart")
	}
	runCmd(t, "ffmpeg", append(append(args, extra...), out)...)
}

// packetTimes lists the video packets' pts, dts and duration in decoding
// order, in the stream's time base.
func packetTimes(t *testing.T, path string) []string {
	t.Helper()
	return strings.Fields(runCmd(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts,dts,duration", "-of", "csv=p=0", path))
}

// streamInfo is what ffprobe says of the file and its video stream, less
// what differs between any two encodes (bit rates, sizes).
func streamInfo(t *testing.T, path string) map[string]any {
	t.Helper()
	out := runCmd(t, "ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json", "-show_entries",
		"stream=codec_name,profile,width,height,pix_fmt,time_base,r_frame_rate,avg_frame_rate,duration_ts,nb_frames,color_range,color_space,color_transfer,color_primaries,field_order:stream_tags:stream_disposition:format_tags", path)
	var v struct {
		Streams []map[string]any `json:"streams"`
		Format  map[string]any   `json:"format"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Streams) != 1 {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	v.Streams[0]["format"] = v.Format
	return v.Streams[0]
}

// mkvTracks lists the elements of a Matroska file's Tracks, depth first, as
// "path=value" (masters by ID path, values in hex), less the track UIDs,
// which are random, and the CRC-32 elements that cover them. It shows what ffprobe hides: ffprobe reports a chroma
// siting or a colour range that the file does not state when the decoder
// assumes one.
func mkvTracks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vint := func(b []byte, keepMarker bool) (uint64, int) {
		if len(b) == 0 || b[0] == 0 {
			return 0, 0
		}
		n := 1
		for b[0]&(0x80>>(n-1)) == 0 {
			n++
		}
		if n > len(b) {
			return 0, 0
		}
		v := uint64(b[0])
		if !keepMarker {
			v &= uint64(0xff >> n)
		}
		for _, c := range b[1:n] {
			v = v<<8 | uint64(c)
		}
		return v, n
	}
	masters := map[uint64]bool{0x18538067: true, 0x1654AE6B: true, 0xAE: true, 0xE0: true, 0x55B0: true}
	var out []string
	var walk func(b []byte, path string, inTracks bool)
	walk = func(b []byte, path string, inTracks bool) {
		for len(b) > 0 {
			id, n := vint(b, true)
			size, m := vint(b[n:], false)
			if n == 0 || m == 0 || uint64(len(b)-n-m) < size {
				return
			}
			body := b[n+m : n+m+int(size)]
			b = b[n+m+int(size):]
			p := fmt.Sprintf("%s/%X", path, id)
			switch {
			case masters[id]:
				walk(body, p, inTracks || id == 0x1654AE6B)
			case inTracks && id != 0x73C5 && id != 0xBF: // TrackUID, and the CRC-32 that covers it
				out = append(out, fmt.Sprintf("%s=%x", p, body))
			}
		}
	}
	walk(b, "", false)
	if len(out) == 0 {
		t.Fatalf("%s: no Tracks element found", path)
	}
	return out
}

// topBoxes lists the top-level boxes of an MP4/MOV file in file order.
func topBoxes(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var boxes []string
	for off := uint64(0); off+8 <= uint64(len(b)); {
		size := uint64(be.BigEndian.Uint32(b[off:]))
		if size == 1 {
			size = be.BigEndian.Uint64(b[off+8:])
		}
		boxes = append(boxes, string(b[off+4:off+8]))
		if size < 8 {
			break
		}
		off += size
	}
	return boxes
}

// TestJoinMatchesPlainFile: many sets at NTSC rates into Matroska, WebM and
// MOV, where the concat demuxer's microsecond sums drifted a tick after
// about 50 parts and failed the job; and one frame per set. Each final is
// held against one plain ffmpeg run with the same settings: every packet's
// timing, the stream as ffprobe sees it (time base, colour, tags,
// disposition), Matroska's track elements (colour range, chroma siting),
// MOV's index before the media, and FFV1's decoded frames.
func TestJoinMatchesPlainFile(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 240, 1, "64x48")
	one := filepath.Join(t.TempDir(), "frames")
	genFrames(t, one, 90, 1, "64x48")
	for _, tc := range []struct {
		codec, ext, fps string
		frames          string
		n, sets         int
		extra           []string
	}{
		{"libx264", "mkv", "30000/1001", frames, 240, 60, nil},
		{"libx264", "mov", "30000/1001", frames, 240, 60, nil},
		{"libvpx-vp9", "webm", "30000/1001", frames, 240, 60, []string{"-deadline", "realtime", "-crf", "32", "-b:v", "0"}},
		{"ffv1", "mkv", "24000/1001", frames, 240, 60, nil},
		{"ffv1", "mkv", "24000/1001", one, 90, 90, nil}, // one frame per set
		{"ffv1", "mov", "30000/1001", one, 90, 90, nil},
	} {
		name := fmt.Sprintf("%s-%s-%s-%dsets", tc.codec, tc.ext, strings.ReplaceAll(tc.fps, "/", "_"), tc.sets)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			out := filepath.Join(tmp, "farm."+tc.ext)
			args := []string{"--codec", tc.codec, "--fps", tc.fps, "--sets", fmt.Sprint(tc.sets), "--out", out}
			if tc.codec == "libvpx-vp9" {
				args = append(args, "--preset", "realtime", "--crf", "32")
			}
			f := startFarm(t, tc.frames, 2, args...)
			f.fetch(t, filepath.Join(tmp, "fetched."+tc.ext))
			plain := filepath.Join(tmp, "plain."+tc.ext)
			plainRun(t, tc.frames, 1, tc.fps, tc.codec, plain, tc.extra...)

			got, want := packetTimes(t, out), packetTimes(t, plain)
			if len(got) != tc.n || len(want) != tc.n {
				t.Fatalf("packets: farm %d, plain %d, want %d", len(got), len(want), tc.n)
			}
			if tc.codec == "libx264" {
				// Each part is a closed group of pictures of its own, so
				// x264 orders B-frames otherwise at the joins: compare
				// every packet's presentation time and duration, not the
				// decoding order.
				got, want = ptsAndDuration(got), ptsAndDuration(want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("packet %d: farm %s, plain %s (pts,dts,duration)", i, got[i], want[i])
				}
			}
			gi, wi := streamInfo(t, out), streamInfo(t, plain)
			if a, b := fmt.Sprint(gi), fmt.Sprint(wi); a != b {
				t.Fatalf("the stream differs from the plain run's:\nfarm  %s\nplain %s", a, b)
			}
			switch tc.ext {
			case "mkv", "webm":
				if a, b := mkvTracks(t, out), mkvTracks(t, plain); !slices.Equal(a, b) {
					t.Fatalf("Matroska track elements differ:\nfarm  %v\nplain %v", a, b)
				}
			case "mov":
				if b := topBoxes(t, out); slices.Index(b, "moov") > slices.Index(b, "mdat") {
					t.Fatalf("top-level boxes %v: the index is not before the media", b)
				}
			}
			if tc.codec == "ffv1" {
				equalFrames(t, framemd5(t, out), framemd5(t, plain))
			}
		})
	}
}

// equalFrames fails unless two framemd5 listings are equal.
func equalFrames(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) || len(want) == 0 {
		t.Fatalf("decoded frames differ (%d and %d frames); first difference at %d", len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// ptsAndDuration keeps each packet's pts and duration, sorted by pts.
func ptsAndDuration(packets []string) []string {
	out := make([]string, len(packets))
	for i, p := range packets {
		f := strings.Split(p, ",")
		out[i] = f[0] + "," + f[len(f)-1]
	}
	slices.SortFunc(out, func(a, b string) int {
		var x, y int
		fmt.Sscan(strings.Split(a, ",")[0], &x)
		fmt.Sscan(strings.Split(b, ",")[0], &y)
		return x - y
	})
	return out
}

// TestFinalTimescale: an MP4 final is timed in the track time scale one
// plain ffmpeg run picks for the rate (a browser seeks in it as in that
// file), has its index first, and plays from a source that serves byte
// ranges, as a web server does.
func TestFinalTimescale(t *testing.T) {
	needFFmpeg(t)
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 12, 1, "64x48")
	for _, fps := range []string{"24", "25", "30", "60", "24000/1001", "30000/1001", "60000/1001"} {
		t.Run(strings.ReplaceAll(fps, "/", "_"), func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			out := filepath.Join(tmp, "farm.mp4")
			f := startFarm(t, frames, 1, "--codec", "libx264", "--fps", fps, "--sets", "3", "--out", out)
			f.fetch(t, filepath.Join(tmp, "fetched.mp4"))
			plain := filepath.Join(tmp, "plain.mp4")
			plainRun(t, frames, 1, fps, "libx264", plain)
			g, w := streamInfo(t, out), streamInfo(t, plain)
			if g["time_base"] != w["time_base"] || g["duration_ts"] != w["duration_ts"] {
				t.Fatalf("time base %v, %v ticks; the plain run's %v, %v", g["time_base"], g["duration_ts"], w["time_base"], w["duration_ts"])
			}
			if b := topBoxes(t, out); slices.Index(b, "moov") > slices.Index(b, "mdat") {
				t.Fatalf("top-level boxes %v: the index is not before the media", b)
			}
			if fps != "24" {
				return
			}
			// Served with byte ranges: ffmpeg reads it over HTTP as a
			// browser does, and decodes every frame as from the disk.
			var mu sync.Mutex
			var ranges []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				ranges = append(ranges, r.Header.Get("Range"))
				mu.Unlock()
				fh, err := os.Open(out)
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				defer fh.Close()
				http.ServeContent(w, r, "farm.mp4", time.Time{}, fh)
			}))
			defer srv.Close()
			equalFrames(t, framemd5(t, srv.URL+"/farm.mp4"), framemd5(t, out))
			mu.Lock()
			defer mu.Unlock()
			t.Logf("byte ranges asked for: %q", ranges)
			if len(ranges) != 1 {
				t.Fatalf("ffmpeg asked for %d ranges (%q): with the index first, one read from the start suffices", len(ranges), ranges)
			}
		})
	}
}
