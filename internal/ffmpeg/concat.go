package ffmpeg

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// ConcatPart is one entry of a concat demuxer script.
type ConcatPart struct {
	Path   string
	Frames int64
}

// WriteConcatList writes the concat demuxer script that joins parts in
// order. Each part gets an exact duration line: without it the demuxer
// offsets each part by its container duration, which MP4 and Matroska round,
// and the timing drifts at every join.
func WriteConcatList(w io.Writer, rate Rate, parts []ConcatPart) error {
	var b strings.Builder
	b.WriteString("ffconcat version 1.0\n")
	for _, p := range parts {
		// The demuxer reads a script line by line (a line ends at \n, \r
		// or NUL, whatever the quoting) and refuses an empty file name.
		if p.Path == "" || strings.ContainsAny(p.Path, "\x00\n\r") {
			return fmt.Errorf("part path %q cannot be written to a concat list (empty, or holds a line break or NUL)", p.Path)
		}
		fmt.Fprintf(&b, "file %s\nduration %s\n", quoteConcat(p.Path), rate.Seconds(p.Frames))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// quoteConcat quotes a path for the concat script: inside single quotes
// everything is literal, and a single quote is written as '\”.
func quoteConcat(p string) string {
	return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
}

func slicesSortFloat(f []float64) { sort.Float64s(f) }
