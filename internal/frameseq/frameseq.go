// Package frameseq scans a folder of numbered images into one ordered frame
// sequence.
//
// Scan reads the folder once, keeps the image files whose names end in a frame
// number (shot_0001.png, shot.1001.exr, 0042.jpg), checks that they form one
// naming pattern with each frame number once and no gaps, reads the image
// header of every frame whose format Go can describe (PNG, JPEG, BMP, TIFF,
// WebP) to check that all frames have one size, and returns the frames sorted
// by frame number. Anything that would not make a correct video is refused
// with an error that names the folder, the files and the frame numbers, says
// what is wrong and what to do, and wraps one of the sentinel errors below so
// that callers can tell the cases apart with errors.Is.
package frameseq

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors wrapped by the errors of Scan.
var (
	// ErrNoFrames: the folder holds no numbered image (or none matches Options.Pattern).
	ErrNoFrames = errors.New("no numbered images")
	// ErrMixedPatterns: the numbered images follow more than one naming pattern.
	ErrMixedPatterns = errors.New("more than one naming pattern")
	// ErrGaps: frame numbers are missing between the first and the last frame.
	ErrGaps = errors.New("gaps in the frame numbering")
	// ErrDuplicate: two files carry the same frame number (f_01.png and f_001.png).
	ErrDuplicate = errors.New("duplicate frame numbers")
	// ErrMixedDimensions: the frames do not all have the same width and height.
	ErrMixedDimensions = errors.New("frames of different sizes")
	// ErrMixedPixelFormats: the frames decode to different pixel formats.
	ErrMixedPixelFormats = errors.New("frames of different pixel formats")
	// ErrUnreadable: a frame cannot be read (empty file, bad or cut-short header, broken link).
	ErrUnreadable = errors.New("unreadable images")
	// ErrOutsideDir: a frame is a symbolic link to a file outside the folder.
	ErrOutsideDir = errors.New("links point outside the frames folder")
)

// supportedList is the list of supported image extensions, for messages.
const supportedList = "png, jpg, jpeg, tif, tiff, exr, bmp, webp, dpx, tga"

// supportedExt reports whether ext (lowercase, no dot) is a supported image extension.
func supportedExt(ext string) bool {
	switch ext {
	case "png", "jpg", "jpeg", "tif", "tiff", "exr", "bmp", "webp", "dpx", "tga":
		return true
	}
	return false
}

// headerChecked reports whether frames with extension ext get their image
// header read (width and height known). EXR, DPX and TGA are left to ffprobe.
func headerChecked(ext string) bool {
	switch ext {
	case "png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp":
		return true
	}
	return false
}

// Frame is one image of the sequence.
type Frame struct {
	Number  int64  // the frame number from the file name
	Name    string // base file name
	Size    int64  // bytes (of the link target for a symbolic link)
	ModTime time.Time
	// Dev and Ino identify the file (the link target for a symbolic link),
	// so that a file swapped in later under the same name with the same
	// size and time is told apart.
	Dev, Ino uint64
	// ETag is a bucket object's ETag from its listing (ScanObjects), so
	// that an object overwritten later is told apart; "" for files.
	ETag string
}

// Pattern is a naming pattern: prefix, frame number, extension.
type Pattern struct {
	Prefix string
	Digits int    // width of the zero-padded number; 0 when numbers are not zero-padded to a fixed width
	Ext    string // lowercase, no dot
}

// String returns the pattern with one # per digit when the numbers are
// zero-padded ("shot_####.png") and a single # otherwise ("shot_#.png").
func (p Pattern) String() string {
	n := p.Digits
	if n < 1 {
		n = 1
	}
	return p.Prefix + strings.Repeat("#", n) + "." + p.Ext
}

// Sequence is the ordered frames of one naming pattern in one folder.
type Sequence struct {
	Dir     string // absolute path of the folder; for ScanObjects, the redacted folder URL
	Pattern Pattern
	Frames  []Frame // sorted by Number ascending, each Number once
	// Width and Height come from the image headers when the format's header
	// could be read for every frame (PNG, JPEG, BMP, TIFF, WebP), else 0.
	Width, Height int
}

// First returns the first frame number (0 for an empty sequence).
func (s *Sequence) First() int64 {
	if len(s.Frames) == 0 {
		return 0
	}
	return s.Frames[0].Number
}

// Last returns the last frame number (0 for an empty sequence).
func (s *Sequence) Last() int64 {
	if len(s.Frames) == 0 {
		return 0
	}
	return s.Frames[len(s.Frames)-1].Number
}

// Gaps returns the missing frame numbers between the first and the last
// frame as inclusive ranges {from, to}, in ascending order; nil when there
// are none. (Scan refuses gaps unless Options.AllowGaps is set.)
func (s *Sequence) Gaps() [][2]int64 {
	return gaps(s.Frames)
}

// gaps returns the missing ranges of frames sorted by number.
func gaps(frames []Frame) [][2]int64 {
	var out [][2]int64
	for i := 1; i < len(frames); i++ {
		prev, next := frames[i-1].Number, frames[i].Number
		if next-prev > 1 {
			out = append(out, [2]int64{prev + 1, next - 1})
		}
	}
	return out
}

// ParseName splits a file name into prefix, frame number, number of digits
// and extension. The number is the LAST run of ASCII digits immediately
// before the extension ("shot_v2_0012.png" -> prefix "shot_v2_", 12, 4
// digits, "png"); digits is the length of that run, leading zeros included.
// The extension is returned in lowercase and must be ASCII letters and digits.
//
// ok is false for hidden names (starting with "."), names with a "/", names
// without an extension or without digits right before it, and numbers that
// do not fit in an int64. ParseName does not check that the extension is a
// supported image format.
//
// When ok, name == prefix + fmt.Sprintf("%0*d", digits, number) + "." + ext,
// up to the case of the extension.
func ParseName(name string) (prefix string, number int64, digits int, ext string, ok bool) {
	if name == "" || name[0] == '.' || strings.IndexByte(name, '/') >= 0 {
		return "", 0, 0, "", false
	}
	dot := strings.LastIndexByte(name, '.')
	if dot <= 0 || dot == len(name)-1 {
		return "", 0, 0, "", false
	}
	rawExt := name[dot+1:]
	for i := 0; i < len(rawExt); i++ {
		if !isASCIIAlnum(rawExt[i]) {
			return "", 0, 0, "", false
		}
	}
	stem := name[:dot]
	start := len(stem)
	for start > 0 && isDigit(stem[start-1]) {
		start--
	}
	if start == len(stem) {
		return "", 0, 0, "", false
	}
	n, err := strconv.ParseInt(stem[start:], 10, 64)
	if err != nil {
		return "", 0, 0, "", false
	}
	return stem[:start], n, len(stem) - start, strings.ToLower(rawExt), true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isASCIIAlnum(c byte) bool {
	return isDigit(c) || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// Options tune Scan.
type Options struct {
	// Pattern, when not empty, picks one pattern when the folder holds several.
	// It is matched against Pattern.String() ("shot_####.png"; a printf form
	// such as "shot_%04d.png" works too, extension case ignored) or against
	// the prefix alone ("shot_").
	Pattern string
	// AllowGaps lets Scan return a sequence with missing frame numbers
	// (see Sequence.Gaps) instead of refusing it with ErrGaps.
	AllowGaps bool
	// AllowMixedDimensions accepts frames of different sizes and pixel
	// formats (the caller converts them to one); Sequence.Width and Height
	// are then 0.
	AllowMixedDimensions bool
}
