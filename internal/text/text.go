// Package text holds the few string helpers every role needs the same way:
// bounding a text from elsewhere before it is kept or sent, and sizes for
// people.
package text

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Truncate bounds s to about n bytes for protobuf strings and logs, which
// must be valid UTF-8: invalid bytes are replaced and the cut falls between
// runes, marked with an ellipsis.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return s[:n] + "…"
	}
	return s
}

// Size writes a byte count in binary units, as ls -h and du -h do.
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
