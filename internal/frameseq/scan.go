package frameseq

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Limits of the lists in error messages.
const (
	maxListed       = 10 // files, frames or ranges named in one message
	maxPatterns     = 10 // patterns named in one message
	maxIgnoredNames = 3  // example names per kind of ignored file
)

// candidate is a directory entry whose name is a numbered image.
type candidate struct {
	name   string
	prefix string
	number int64
	digits int
	ext    string
	entry  fs.DirEntry
	// For symbolic links: the resolved target and its info, or the reason it
	// cannot be used.
	link    bool
	target  string
	info    fs.FileInfo
	outside bool
	linkErr error
}

// group is the candidates of one (prefix, extension).
type group struct {
	pat   Pattern
	cands []*candidate
}

// ignored counts the entries that are not numbered images, for messages.
type ignored struct {
	hidden     int
	dirs       int
	special    int
	noNumber   int            // images without a frame number
	noNumberEx []string       // example names of those
	otherExts  map[string]int // other extension ("" for none) -> count
	otherEx    []string       // example names with other extensions
}

// Scan reads dir once and returns its numbered images as one sequence sorted
// by frame number. Files that are not images with a supported extension
// (png, jpg, jpeg, tif, tiff, exr, bmp, webp, dpx, tga, any case), hidden
// files and subfolders are ignored. Symbolic links are followed only when
// their target stays inside dir.
//
// Scan refuses, with an error naming the folder, files and frame numbers:
// a missing or unreadable folder; a folder without numbered images
// (ErrNoFrames); several naming patterns (ErrMixedPatterns, unless
// opts.Pattern picks one); one frame number in several files (ErrDuplicate);
// links leaving the folder (ErrOutsideDir); missing frame numbers (ErrGaps,
// unless opts.AllowGaps); empty files, broken links and image headers that
// cannot be read (ErrUnreadable); frames of different sizes
// (ErrMixedDimensions).
func Scan(dir string, opts Options) (*Sequence, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("frames folder %q: cannot make the path absolute: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("frames folder %q does not exist; check the --frames path: %w", dir, err)
	case err != nil:
		return nil, fmt.Errorf("frames folder %q cannot be read; check its permissions: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("frames folder %q is a file, not a folder; pass the folder that holds the numbered images: %w",
			dir, &fs.PathError{Op: "scan", Path: dir, Err: syscall.ENOTDIR})
	}
	entries, err := readDir(abs)
	if err != nil {
		return nil, fmt.Errorf("frames folder %q cannot be listed; check its permissions: %w", dir, err)
	}

	cands, ign, err := classify(abs, entries)
	if err != nil {
		return nil, fmt.Errorf("frames folder %q: %w", dir, err)
	}
	return check(dir, abs, len(entries), cands, ign, opts, func(cands []*candidate, header bool) []probeResult {
		return probeAll(abs, cands, header)
	})
}

// check turns the candidates of a listing into the sequence, refusing what
// would not make a correct video; dir names the listing in messages, seqDir
// becomes Sequence.Dir. probe reads the picked candidates' information and
// (when header is set) image headers.
func check(dir, seqDir string, entries int, cands []*candidate, ign *ignored, opts Options,
	probe func(cands []*candidate, header bool) []probeResult) (*Sequence, error) {
	if len(cands) == 0 {
		return nil, noFramesError(dir, entries, ign)
	}

	g, err := pick(dir, groupCandidates(cands), opts.Pattern)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(g.cands, func(a, b *candidate) int {
		return cmp.Or(cmp.Compare(a.number, b.number), strings.Compare(a.name, b.name))
	})
	if err := checkLinks(dir, g.cands); err != nil {
		return nil, err
	}
	if err := checkDuplicates(dir, g); err != nil {
		return nil, err
	}

	seq := &Sequence{Dir: seqDir, Pattern: g.pat, Frames: make([]Frame, len(g.cands))}
	for i, c := range g.cands {
		seq.Frames[i] = Frame{Number: c.number, Name: c.name}
	}
	if !opts.AllowGaps {
		if err := checkGaps(dir, g.pat, seq.Frames); err != nil {
			return nil, err
		}
	}

	results := probe(g.cands, headerChecked(g.pat.Ext))
	for i, r := range results {
		seq.Frames[i].Size = r.size
		seq.Frames[i].ModTime = r.modTime
		seq.Frames[i].Dev, seq.Frames[i].Ino = r.dev, r.ino
		seq.Frames[i].ETag = r.etag
	}
	if err := checkUnreadable(dir, seq.Frames, results); err != nil {
		return nil, err
	}
	if opts.AllowMixedDimensions {
		return seq, nil
	}
	w, h, err := checkDimensions(dir, seq.Frames, results)
	if err != nil {
		return nil, err
	}
	if err := checkPixelFormats(dir, seq.Frames, results); err != nil {
		return nil, err
	}
	seq.Width, seq.Height = w, h
	return seq, nil
}

// readDir lists dir in one pass, unsorted (Scan sorts by frame number).
func readDir(dir string) ([]fs.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// classify keeps the entries that are numbered images with a supported
// extension and counts the others. Symbolic links are resolved here: a link
// to a folder or to a special file is ignored like one; a link leaving the
// folder or a broken link is kept and refused later, if its pattern is used.
func classify(dir string, entries []fs.DirEntry) ([]*candidate, *ignored, error) {
	ign := &ignored{otherExts: map[string]int{}}
	var cands []*candidate
	root := "" // dir with its symbolic links resolved, computed at the first link
	for _, e := range entries {
		name := e.Name()
		t := e.Type()
		switch {
		case strings.HasPrefix(name, "."):
			ign.hidden++
			continue
		case t.IsDir():
			ign.dirs++
			continue
		}
		prefix, number, digits, ext, ok := ParseName(name)
		if !ok || !supportedExt(ext) {
			if x := lowerExt(name); supportedExt(x) {
				ign.noNumber++
				if len(ign.noNumberEx) < maxIgnoredNames {
					ign.noNumberEx = append(ign.noNumberEx, name)
				}
			} else {
				ign.otherExts[x]++
				if len(ign.otherEx) < maxIgnoredNames {
					ign.otherEx = append(ign.otherEx, name)
				}
			}
			continue
		}
		c := &candidate{name: name, prefix: prefix, number: number, digits: digits, ext: ext, entry: e}
		switch {
		case t&fs.ModeSymlink != 0:
			if root == "" {
				r, err := filepath.EvalSymlinks(dir)
				if err != nil {
					return nil, nil, fmt.Errorf("cannot resolve the folder's path: %w", err)
				}
				root = r
			}
			c.link = true
			skip := resolveLink(root, filepath.Join(dir, name), c)
			if skip != "" {
				if skip == "dir" {
					ign.dirs++
				} else {
					ign.special++
				}
				continue
			}
		case !t.IsRegular():
			ign.special++
			continue
		}
		cands = append(cands, c)
	}
	return cands, ign, nil
}

// resolveLink resolves the symbolic link at path into c. It returns "dir" or
// "special" when the link is to be ignored (its target is a folder or not a
// regular file), else "".
func resolveLink(root, path string, c *candidate) (skip string) {
	if dest, err := os.Readlink(path); err == nil {
		c.target = dest
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		// A broken link that points out of the folder is refused as such.
		if c.target != "" {
			dest := c.target
			if !filepath.IsAbs(dest) {
				dest = filepath.Join(filepath.Dir(path), dest)
			}
			if !within(filepath.Dir(path), dest) && !within(root, dest) {
				c.outside = true
				return ""
			}
		}
		c.linkErr = err
		return ""
	}
	if !within(root, resolved) {
		c.outside = true
		c.target = resolved
		return ""
	}
	info, err := os.Stat(resolved)
	switch {
	case err != nil:
		c.linkErr = err
	case info.IsDir():
		return "dir"
	case !info.Mode().IsRegular():
		return "special"
	default:
		c.info = info
	}
	return ""
}

// within reports whether path is dir or lies under it (lexically; both absolute).
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && !filepath.IsAbs(rel) && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// lowerExt returns the lowercase extension of name, without the dot ("" if none).
func lowerExt(name string) string {
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 {
		return ""
	}
	return strings.ToLower(name[dot+1:])
}

// groupCandidates groups the candidates by prefix and extension, and works
// out each group's zero-padding. Groups come out with the most frames first.
func groupCandidates(cands []*candidate) []*group {
	type key struct{ prefix, ext string }
	byKey := map[key]*group{}
	var groups []*group
	for _, c := range cands {
		k := key{c.prefix, c.ext}
		g := byKey[k]
		if g == nil {
			g = &group{pat: Pattern{Prefix: c.prefix, Ext: c.ext}}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.cands = append(g.cands, c)
	}
	for _, g := range groups {
		g.pat.Digits = padding(g.cands)
	}
	slices.SortFunc(groups, func(a, b *group) int {
		return cmp.Or(cmp.Compare(len(b.cands), len(a.cands)), strings.Compare(a.pat.String(), b.pat.String()))
	})
	return groups
}

// padding returns the fixed width the numbers are zero-padded to, or 0.
//
// A number with a leading zero ("0012") shows padding to its width. The
// numbers are padded to W when every leading-zero number has W digits and
// every other number has at least W digits (printf's %0Wd gives "12345" for
// a number too wide). Without any leading zero, numbers that all have the
// same length L > 1 (1001..1999) count as padded to L; otherwise (f_1 ..
// f_10, f_999 and f_1000) they are not padded: 0.
func padding(cands []*candidate) int {
	width := 0   // the width of the leading-zero numbers, -1 if they differ
	minLen := -1 // shortest number without leading zero
	maxLen := 0
	for _, c := range cands {
		zeroLed := c.digits > 1 && c.number < pow10(c.digits-1)
		if zeroLed {
			switch width {
			case 0:
				width = c.digits
			case c.digits:
			default:
				width = -1
			}
			continue
		}
		if minLen < 0 || c.digits < minLen {
			minLen = c.digits
		}
		maxLen = max(maxLen, c.digits)
	}
	switch {
	case width < 0:
		return 0
	case width > 0:
		if minLen >= 0 && minLen < width {
			return 0
		}
		return width
	case minLen == maxLen && minLen > 1:
		return minLen
	}
	return 0
}

// pow10 returns 10**n, saturating at the int64 maximum.
func pow10(n int) int64 {
	p := int64(1)
	for range n {
		if p > (1<<63-1)/10 {
			return 1<<63 - 1
		}
		p *= 10
	}
	return p
}

// pick selects the group to use: the only one, or the one that opt names.
func pick(dir string, groups []*group, opt string) (*group, error) {
	if opt != "" {
		var matched []*group
		for _, g := range groups {
			if matchPattern(g.pat, opt) {
				matched = append(matched, g)
			}
		}
		if len(matched) == 0 {
			return nil, fmt.Errorf("frames folder %q: %w: --pattern %q matches none of its naming patterns: %s; pass one of these to --pattern",
				dir, ErrNoFrames, opt, describeGroups(groups))
		}
		groups = matched
	}
	if len(groups) > 1 {
		example := groups[0].pat.String()
		return nil, fmt.Errorf("frames folder %q: %w: its numbered images follow %d naming patterns: %s; use --pattern to pick one (for example --pattern %q), or move the other files out of the folder",
			dir, ErrMixedPatterns, len(groups), describeGroups(groups), example)
	}
	return groups[0], nil
}

// matchPattern reports whether the user's --pattern opt names p.
func matchPattern(p Pattern, opt string) bool {
	if opt == p.Prefix {
		return true
	}
	want := hashPattern(opt)
	s := p.String()
	// The extension's case does not matter; the prefix's does.
	if len(want) == len(s) && strings.HasPrefix(want, p.Prefix) && strings.EqualFold(want, s) {
		return true
	}
	return false
}

// hashPattern turns a printf pattern ("f_%04d.png", "f_%d.png") into the
// #-form of Pattern.String ("f_####.png", "f_#.png"); other text is unchanged.
func hashPattern(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	j := i + 1
	for j < len(s) && isDigit(s[j]) {
		j++
	}
	if j >= len(s) || s[j] != 'd' {
		return s
	}
	width := 1
	if w := s[i+1 : j]; w != "" {
		n := 0
		for k := 0; k < len(w) && n < 1000; k++ {
			n = n*10 + int(w[k]-'0')
		}
		width = max(n, 1)
	}
	return s[:i] + strings.Repeat("#", width) + s[j+1:]
}

// describeGroups lists the groups for a message: pattern, frame count, first
// and last file.
func describeGroups(groups []*group) string {
	var b strings.Builder
	for i, g := range groups {
		if i == maxPatterns {
			fmt.Fprintf(&b, "; ... and %d more patterns", len(groups)-maxPatterns)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		first, last := g.cands[0], g.cands[0]
		for _, c := range g.cands[1:] {
			if c.number < first.number || (c.number == first.number && c.name < first.name) {
				first = c
			}
			if c.number > last.number || (c.number == last.number && c.name > last.name) {
				last = c
			}
		}
		if len(g.cands) == 1 {
			fmt.Fprintf(&b, "%q (1 frame: %s)", g.pat.String(), first.name)
		} else {
			fmt.Fprintf(&b, "%q (%d frames: %s to %s)", g.pat.String(), len(g.cands), first.name, last.name)
		}
	}
	return b.String()
}

// checkLinks refuses links that leave the folder, then broken links.
func checkLinks(dir string, cands []*candidate) error {
	var outside, broken []string
	for _, c := range cands {
		switch {
		case c.outside:
			outside = append(outside, fmt.Sprintf("%s (frame %d) -> %s", c.name, c.number, c.target))
		case c.linkErr != nil:
			broken = append(broken, fmt.Sprintf("%s (frame %d) -> %s: %v", c.name, c.number, c.target, c.linkErr))
		}
	}
	if len(outside) > 0 {
		return fmt.Errorf("frames folder %q: %w: %s; copy those files into the folder (or link to files inside it)",
			dir, ErrOutsideDir, capList(outside, "; "))
	}
	if len(broken) > 0 {
		return fmt.Errorf("frames folder %q: %w: broken symbolic links: %s; fix or remove those links",
			dir, ErrUnreadable, capList(broken, "; "))
	}
	return nil
}

// checkDuplicates refuses frame numbers carried by more than one file. The
// candidates are sorted by number, then name.
func checkDuplicates(dir string, g *group) error {
	var dups []string
	paddings := false // the files of one number differ in zero-padding
	frames := 0
	cands := g.cands
	for i := 0; i < len(cands); {
		j := i + 1
		for j < len(cands) && cands[j].number == cands[i].number {
			if cands[j].digits != cands[i].digits {
				paddings = true
			}
			j++
		}
		if j-i > 1 {
			frames++
			if len(dups) < maxListed {
				names := make([]string, 0, j-i)
				for _, c := range cands[i:j] {
					names = append(names, c.name)
				}
				dups = append(dups, fmt.Sprintf("frame %d is in %d files: %s", cands[i].number, j-i, joinAnd(names)))
			}
		}
		i = j
	}
	if frames == 0 {
		return nil
	}
	more := ""
	if frames > len(dups) {
		more = fmt.Sprintf("; ... and %d more frames", frames-len(dups))
	}
	hint := "each frame number must be in one file only: remove or rename the extra files"
	if paddings {
		hint += " (their numbers differ in zero-padding, so the folder may hold two renders of the same frames)"
	}
	return fmt.Errorf("frames folder %q: %w in %q: %s%s; %s",
		dir, ErrDuplicate, g.pat.String(), strings.Join(dups, "; "), more, hint)
}

// checkGaps refuses missing frame numbers, listed as ranges.
func checkGaps(dir string, pat Pattern, frames []Frame) error {
	ranges := gaps(frames)
	if len(ranges) == 0 {
		return nil
	}
	var missing int64
	for _, r := range ranges {
		missing += r[1] - r[0] + 1
	}
	first, last := frames[0], frames[len(frames)-1]
	return fmt.Errorf("frames folder %q: %w: %s missing from %q between frame %d (%s) and frame %d (%s): %s; render the missing frames, or pass --gaps hold (show the previous frame in their place) or --gaps skip (close the gaps up)",
		dir, ErrGaps, plural(missing, "frame", "frames"), pat.String(), first.Number, first.Name, last.Number, last.Name, formatRanges(ranges, maxListed))
}

// formatRanges writes ranges as "1005-1009, 1200", at most max of them,
// then "... and N more".
func formatRanges(ranges [][2]int64, max int) string {
	parts := make([]string, 0, min(len(ranges), max))
	for _, r := range ranges {
		if len(parts) == max {
			break
		}
		if r[0] == r[1] {
			parts = append(parts, fmt.Sprint(r[0]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r[0], r[1]))
		}
	}
	s := strings.Join(parts, ", ")
	if n := len(ranges) - len(parts); n > 0 {
		s += fmt.Sprintf(" ... and %d more", n)
	}
	return s
}

// checkUnreadable refuses frames whose file or header cannot be read.
func checkUnreadable(dir string, frames []Frame, results []probeResult) error {
	var bad []string
	n := 0
	for i, r := range results {
		if r.err == nil {
			continue
		}
		n++
		if len(bad) < maxListed {
			bad = append(bad, fmt.Sprintf("%s (frame %d): %v", frames[i].Name, frames[i].Number, r.err))
		}
	}
	if n == 0 {
		return nil
	}
	more := ""
	if n > len(bad) {
		more = fmt.Sprintf("; ... and %d more", n-len(bad))
	}
	return fmt.Errorf("frames folder %q: %w: %d of %d frames cannot be read: %s%s; re-render these frames, or remove them (and pass --gaps hold or --gaps skip)",
		dir, ErrUnreadable, n, len(frames), strings.Join(bad, "; "), more)
}

// checkDimensions refuses frames of different sizes. It returns the common
// size when every frame's header gave one, else 0, 0.
func checkDimensions(dir string, frames []Frame, results []probeResult) (w, h int, err error) {
	type size struct{ w, h int }
	counts := map[size]int{}
	var order []size // sizes in order of first appearance, for ties
	known := 0
	for _, r := range results {
		if !r.known {
			continue
		}
		known++
		s := size{r.width, r.height}
		if counts[s] == 0 {
			order = append(order, s)
		}
		counts[s]++
	}
	if known == 0 {
		return 0, 0, nil
	}
	major := order[0]
	for _, s := range order[1:] {
		if counts[s] > counts[major] {
			major = s
		}
	}
	if counts[major] == known {
		if known < len(frames) {
			return 0, 0, nil
		}
		return major.w, major.h, nil
	}
	var odd []string
	for i, r := range results {
		if r.known && (size{r.width, r.height}) != major {
			odd = append(odd, fmt.Sprintf("%s (frame %d) is %dx%d", frames[i].Name, frames[i].Number, r.width, r.height))
		}
	}
	wh := fmt.Sprintf("%dx%d", major.w, major.h)
	return 0, 0, fmt.Errorf("frames folder %q: %w: %d of %d frames are %s, the others are not: %s; re-render the odd frames at %s, or pass --scale %s to scale every frame to one size",
		dir, ErrMixedDimensions, counts[major], known, wh, capList(odd, "; "), wh, wh)
}

// noFramesError explains why no entry of the folder is a numbered image.
func noFramesError(dir string, entries int, ign *ignored) error {
	if entries == 0 {
		return fmt.Errorf("frames folder %q: %w: the folder is empty; put the frames in it (named like shot_0001.png, shot_0002.png, ...; supported extensions: %s), or check the --frames path",
			dir, ErrNoFrames, supportedList)
	}
	var what []string
	other := 0
	var exts []string
	for x, n := range ign.otherExts {
		other += n
		if x == "" {
			x = "no extension"
		} else {
			x = "." + x
		}
		exts = append(exts, x)
	}
	slices.Sort(exts)
	if other > 0 {
		what = append(what, fmt.Sprintf("%s with other extensions (%s; for example %s)",
			plural(other, "file", "files"), capList(exts, ", "), strings.Join(ign.otherEx, ", ")))
	}
	if ign.noNumber > 0 {
		what = append(what, fmt.Sprintf("%s without a frame number at the end of the name (for example %s)",
			plural(ign.noNumber, "image", "images"), strings.Join(ign.noNumberEx, ", ")))
	}
	if ign.hidden > 0 {
		what = append(what, plural(ign.hidden, "hidden file", "hidden files"))
	}
	if ign.dirs > 0 {
		what = append(what, plural(ign.dirs, "subfolder", "subfolders"))
	}
	if ign.special > 0 {
		what = append(what, plural(ign.special, "special file", "special files")+" (not regular files)")
	}
	return fmt.Errorf("frames folder %q: %w: none of its %d entries is an image named with a frame number before the extension, like shot_0001.png (supported extensions: %s); ignored %s",
		dir, ErrNoFrames, entries, supportedList, strings.Join(what, ", "))
}

// capList joins items with sep, at most maxListed of them, then "... and N more".
func capList(items []string, sep string) string {
	if len(items) <= maxListed {
		return strings.Join(items, sep)
	}
	return strings.Join(items[:maxListed], sep) + fmt.Sprintf("%s... and %d more", sep, len(items)-maxListed)
}

// plural writes n and the noun in singular or plural.
func plural[N int | int64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// joinAnd joins names as "a and b" or "a, b and c".
func joinAnd(names []string) string {
	if len(names) <= 1 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// checkPixelFormats refuses frames that decode to different pixel formats
// (RGB and RGBA PNGs, 8 and 16 bits, gray and colour): ffmpeg rebuilds its
// filters when the format changes mid-stream, and then its output depends
// on where the change falls, so the farm could not match one ffmpeg run.
func checkPixelFormats(dir string, frames []Frame, results []probeResult) error {
	counts := map[string]int{}
	major := ""
	for _, r := range results {
		if r.known {
			counts[r.model]++
			if major == "" || counts[r.model] > counts[major] {
				major = r.model
			}
		}
	}
	if len(counts) <= 1 {
		return nil
	}
	var odd []string
	for i, r := range results {
		if r.known && r.model != major {
			odd = append(odd, fmt.Sprintf("%s (frame %d) is %s", frames[i].Name, frames[i].Number, r.model))
		}
	}
	return fmt.Errorf("frames folder %q: %w: %d frames are %s, the others are not: %s; re-render or convert the odd frames, or pass --scale WxH to convert every frame to one size and format",
		dir, ErrMixedPixelFormats, counts[major], major, capList(odd, "; "))
}
