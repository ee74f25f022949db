package node

import (
	"testing"

	farmpb "github.com/framefarm/framefarm/proto"
)

func TestOriginalNames(t *testing.T) {
	a := &farmpb.Assignment{Settings: &farmpb.EncodeSettings{FrameExt: "png"},
		Frames: []*farmpb.FrameInfo{{Number: 1001, Name: "shot_1001.png"}, {Number: 1002, Name: "shot_1002.png"}}}
	for _, tc := range []struct{ in, want string }{
		{"[png @ 0x1] /w/j-set1/000001.png: Invalid PNG signature", "[png @ 0x1] shot_1002.png (frame 1002): Invalid PNG signature"},
		{"error in 000000.png", "error in shot_1001.png (frame 1001)"},
		{"000007.png is beyond the set", "000007.png is beyond the set"},
		{"no names here", "no names here"},
	} {
		if got := originalNames(tc.in, "/w/j-set1", a); got != tc.want {
			t.Errorf("originalNames(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
