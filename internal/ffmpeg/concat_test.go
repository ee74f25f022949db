package ffmpeg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// parseConcat reads a concat script the way ffmpeg's concat demuxer does
// (libavformat/concatdec.c with av_get_token from libavutil/avstring.c):
//
//   - lines end at \n, \r (\r\n counts once) or NUL;
//   - a line is a keyword, then its arguments, separated by " \t\r\n";
//   - a file name is one av_get_token: outside quotes a backslash escapes
//     the next character and unquoted trailing whitespace is dropped; inside
//     single quotes every character is literal up to the next single quote
//     (a quote inside a name is written: close quote, backslash quote, open quote);
//   - an empty file name is refused ("string required"), as is anything
//     left on the line after it.
//
// It returns the file names and the duration arguments, in order.
func parseConcat(script string) (files, durations []string, err error) {
	lines := splitConcatLines(script)
	for n, line := range lines {
		kw, rest := concatKeyword(line)
		switch {
		case kw == "" || strings.HasPrefix(kw, "#"):
			continue
		case kw == "ffconcat":
			v, rest := concatKeyword(rest)
			num, rest := concatKeyword(rest)
			if v != "version" || num != "1.0" || rest != "" {
				return nil, nil, fmt.Errorf("line %d: bad header %q", n+1, line)
			}
		case kw == "file":
			name, rest := avGetToken(rest)
			if name == "" {
				return nil, nil, fmt.Errorf("line %d: string required", n+1)
			}
			if strings.TrimLeft(rest, concatSpace) != "" {
				return nil, nil, fmt.Errorf("line %d: garbage at end of line: %q", n+1, rest)
			}
			files = append(files, name)
		case kw == "duration":
			d, rest := concatKeyword(rest)
			if d == "" || rest != "" {
				return nil, nil, fmt.Errorf("line %d: bad duration %q", n+1, line)
			}
			if len(durations) != len(files)-1 {
				return nil, nil, fmt.Errorf("line %d: duration without its file", n+1)
			}
			durations = append(durations, d)
		default:
			return nil, nil, fmt.Errorf("line %d: unknown keyword %q", n+1, kw)
		}
	}
	return files, durations, nil
}

const concatSpace = " \t\r\n"

func splitConcatLines(s string) []string {
	var lines []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n', '\x00':
			lines = append(lines, s[start:i])
			start = i + 1
		case '\r':
			lines = append(lines, s[start:i])
			if i+1 < len(s) && s[i+1] == '\n' {
				i++
			}
			start = i + 1
		}
	}
	if start < len(s) {
		lines = append(lines, s[start:])
	}
	return lines
}

// concatKeyword is concatdec.c's get_keyword.
func concatKeyword(s string) (kw, rest string) {
	s = strings.TrimLeft(s, concatSpace)
	end := strings.IndexAny(s, concatSpace)
	if end < 0 {
		return s, ""
	}
	return s[:end], strings.TrimLeft(s[end+1:], concatSpace)
}

// avGetToken is av_get_token(&s, " \t\r\n").
func avGetToken(s string) (tok, rest string) {
	p := strings.TrimLeft(s, " \n\t\r")
	var out []byte
	end := 0
	i := 0
	for i < len(p) && strings.IndexByte(concatSpace, p[i]) < 0 {
		c := p[i]
		i++
		switch {
		case c == '\\' && i < len(p):
			out = append(out, p[i])
			i++
			end = len(out)
		case c == '\'':
			for i < len(p) && p[i] != '\'' {
				out = append(out, p[i])
				i++
			}
			if i < len(p) {
				i++
				end = len(out)
			}
		default:
			out = append(out, c)
		}
	}
	for len(out) > end && strings.IndexByte(" \n\t\r", out[len(out)-1]) >= 0 {
		out = out[:len(out)-1]
	}
	return string(out), p[i:]
}

func TestParseConcatModel(t *testing.T) {
	// The parser itself, on what ffmpeg documents.
	for in, want := range map[string]string{
		`'a b'`:          "a b",
		`a\ b`:           "a b",
		`'it'\''s'`:      "it's",
		`'x'y'z'`:        "xyz",
		`"q"`:            `"q"`,
		`'a\b'`:          `a\b`,
		`a  `:            "a",
		`'a  '`:          "a  ",
		`'unterminated `: "unterminated", // no closing quote: the spaces are not protected
	} {
		if got, _ := avGetToken(in); got != want {
			t.Errorf("avGetToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteConcatList(t *testing.T) {
	rate := Rate{Num: 24000, Den: 1001}
	parts := []ConcatPart{
		{Path: "/data/jobs/x/parts/set-00000.mp4", Frames: 10},
		{Path: `/my "frames" ü 'x'/set 1.mp4`, Frames: 7},
		{Path: `/a\b/'/''/#1 ?$(rm -rf ~)` + "\t /z ", Frames: 1},
		{Path: "-i /etc/passwd", Frames: 3},
	}
	var b bytes.Buffer
	if err := WriteConcatList(&b, rate, parts); err != nil {
		t.Fatal(err)
	}
	files, durations, err := parseConcat(b.String())
	if err != nil {
		t.Fatalf("%v in:\n%s", err, b.String())
	}
	if len(files) != len(parts) || len(durations) != len(parts) {
		t.Fatalf("parsed %d files and %d durations, want %d of each:\n%s", len(files), len(durations), len(parts), b.String())
	}
	for i, p := range parts {
		if files[i] != p.Path {
			t.Errorf("part %d: path %q came back as %q", i, p.Path, files[i])
		}
		if want := rate.Seconds(p.Frames); durations[i] != want {
			t.Errorf("part %d: duration %q, want %q", i, durations[i], want)
		}
	}
	if durations[0] != "0.417083" {
		t.Errorf("10 frames at 24000/1001: duration %s, want 0.417083", durations[0])
	}

	for _, bad := range []string{"", "a\nfile /etc/passwd", "a\rb", "a\x00b"} {
		err := WriteConcatList(&bytes.Buffer{}, rate, []ConcatPart{{Path: "/ok", Frames: 1}, {Path: bad, Frames: 1}})
		if err == nil {
			t.Errorf("WriteConcatList accepted the path %q, which a concat list cannot hold", bad)
		}
	}
}

func FuzzWriteConcatList(f *testing.F) {
	for _, s := range []string{
		"/data/jobs/abc/parts/set-00000.mp4", "", "'", "''", `'\''`, `\`, `\'`, " lead", "trail ", "\t",
		`my "frames" ü 'x'`, "a\nfile b", "a\rb", "a\x00b", "#comment", "file", "x'\\''y", "\xff\xfe",
	} {
		f.Add(s, "/second/part.mkv", int64(24))
	}
	f.Fuzz(func(t *testing.T, p1, p2 string, frames int64) {
		if frames < 0 {
			frames = -frames
		}
		frames %= 1 << 40
		parts := []ConcatPart{{Path: p1, Frames: frames}, {Path: p2, Frames: 1}}
		var b bytes.Buffer
		err := WriteConcatList(&b, Rate{Num: 24, Den: 1}, parts)
		writable := func(p string) bool { return p != "" && !strings.ContainsAny(p, "\x00\r\n") }
		if err != nil {
			if writable(p1) && writable(p2) {
				t.Fatalf("WriteConcatList refused %q and %q: %v", p1, p2, err)
			}
			return
		}
		if !writable(p1) || !writable(p2) {
			t.Fatalf("WriteConcatList accepted %q and %q, which ffmpeg would not read back:\n%q", p1, p2, b.String())
		}
		files, durations, err := parseConcat(b.String())
		if err != nil {
			t.Fatalf("%v in %q", err, b.String())
		}
		if len(files) != 2 || files[0] != p1 || files[1] != p2 {
			t.Fatalf("paths %q, %q came back as %q from:\n%q", p1, p2, files, b.String())
		}
		if len(durations) != 2 || durations[0] != (Rate{Num: 24, Den: 1}).Seconds(frames) {
			t.Fatalf("durations %q for %d and 1 frames", durations, frames)
		}
	})
}

// TestConcatListWithFFmpeg holds the quoting against ffmpeg itself: parts in
// folders whose names hold quotes, backslashes, spaces at both ends, shell
// and URL characters and non-ASCII letters are joined, every frame intact.
func TestConcatListWithFFmpeg(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed (run scripts/install-deps.sh)")
	}
	t.Parallel()
	root := t.TempDir()
	dirs := []string{
		`plain`,
		`my "frames" ü 'x'`,
		` lead and trail `,
		`back\slash \' and '\''`,
		`#hash ?query &amp $(x) ;semi: colon`,
		"tab\there",
		`file 'x.nut'`,
	}
	var parts []ConcatPart
	for i, d := range dirs {
		dir := filepath.Join(root, d)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("part %d 'q'.nut", i))
		out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=32x32:r=24",
			"-frames:v", "2", "-c:v", "ffv1", p).CombinedOutput()
		if err != nil {
			t.Fatalf("making %q: %v\n%s", p, err, out)
		}
		parts = append(parts, ConcatPart{Path: p, Frames: 2})
	}
	list := filepath.Join(root, `list 'ü'.txt`)
	var b bytes.Buffer
	if err := WriteConcatList(&b, Rate{Num: 24, Den: 1}, parts); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(list, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "joined 'ü'.nut")
	if err := (Runner{}).Run(context.Background(), ConcatArgs(list, out), nil); err != nil {
		t.Fatalf("ffmpeg refused the list: %v\n%s", err, b.String())
	}
	p, err := (Runner{}).ProbeVideo(context.Background(), out, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2 * len(parts)); p.Packets != want {
		t.Fatalf("joined video has %d frames, want %d", p.Packets, want)
	}
}

// TestLosslessPartsJoinFrameExact encodes FFV1 parts the way nodes do
// (EncodeArgs, the codec table's part container), joins them the way the
// coordinator does, and holds every decoded frame and its timestamp
// against one ffmpeg run over all the frames.
func TestLosslessPartsJoinFrameExact(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg not installed (run scripts/install-deps.sh)")
	}
	t.Parallel()
	root := t.TempDir()
	all := filepath.Join(root, "all")
	if err := os.Mkdir(all, 0o755); err != nil {
		t.Fatal(err)
	}
	const total = 21
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=24,format=rgb24",
		"-frames:v", strconv.Itoa(total), "-start_number", "0", SequencePattern(all, "png")).CombinedOutput(); err != nil {
		t.Fatalf("making frames: %v\n%s", err, out)
	}
	for _, rate := range []Rate{{24, 1}, {24000, 1001}} {
		t.Run(strings.ReplaceAll(rate.String(), "/", "_"), func(t *testing.T) {
			s := Settings{Codec: "ffv1", Rate: rate, CRF: -1}
			codec, err := LookupCodec(s.Codec)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			var parts []ConcatPart
			first := 0
			for i, n := range []int{7, 10, 4} { // uneven, as sets of a job can be
				frames := filepath.Join(dir, fmt.Sprintf("frames-%d", i))
				if err := os.Mkdir(frames, 0o755); err != nil {
					t.Fatal(err)
				}
				for k := range n {
					b, err := os.ReadFile(filepath.Join(all, SequenceName(first+k, "png")))
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(frames, SequenceName(k, "png")), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				part := filepath.Join(dir, fmt.Sprintf("set-%05d.%s", i, codec.PartExt))
				args, err := EncodeArgs(SequencePattern(frames, "png"), s, part)
				if err != nil {
					t.Fatal(err)
				}
				if err := (Runner{}).Run(context.Background(), args, nil); err != nil {
					t.Fatal(err)
				}
				parts = append(parts, ConcatPart{Path: part, Frames: int64(n)})
				first += n
			}
			var list bytes.Buffer
			if err := WriteConcatList(&list, rate, parts); err != nil {
				t.Fatal(err)
			}
			listPath := filepath.Join(dir, "list.txt")
			if err := os.WriteFile(listPath, list.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			joined := filepath.Join(dir, "joined.mkv")
			if err := (Runner{}).Run(context.Background(), ConcatArgs(listPath, joined), nil); err != nil {
				t.Fatal(err)
			}
			ref := filepath.Join(dir, "ref.mkv")
			if out, err := exec.Command("ffmpeg", "-v", "error", "-framerate", rate.String(), "-start_number", "0", "-i", SequencePattern(all, "png"),
				"-c:v", "ffv1", "-level", "3", "-pix_fmt", "yuv420p", ref).CombinedOutput(); err != nil {
				t.Fatalf("reference: %v\n%s", err, out)
			}
			got, want := frameMD5(t, joined), frameMD5(t, ref)
			if len(got) != total || len(want) != total {
				t.Fatalf("frames: joined %d, one run %d, want %d", len(got), len(want), total)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("frame %d: joined %q, one run %q", i, got[i], want[i])
				}
			}
		})
	}
}

// frameMD5 returns ffmpeg's framemd5 lines of path's video (timestamps,
// durations, sizes and the decoded frame's MD5), without the comments.
func frameMD5(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", path, "-map", "0:v", "-f", "framemd5", "-").Output()
	if err != nil {
		t.Fatalf("framemd5 %s: %v", path, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}
