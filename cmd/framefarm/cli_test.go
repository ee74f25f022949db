package main

import (
	"slices"
	"testing"
)

// TestParseArgsAnywhere: a command's arguments may stand before, between or
// after its flags, and after "--" everything is an argument.
func TestParseArgsAnywhere(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		all  bool
		addr string
	}{
		{[]string{"J1", "--all", "--coordinator", "h:1"}, []string{"J1"}, true, "h:1"},
		{[]string{"--all", "J1", "--coordinator", "h:1"}, []string{"J1"}, true, "h:1"},
		{[]string{"--coordinator", "h:1", "--all", "J1"}, []string{"J1"}, true, "h:1"},
		{[]string{"--coordinator=h:1", "J1"}, []string{"J1"}, false, "h:1"},
		{[]string{"-5", "--coordinator", "h:1"}, []string{"-5"}, false, "h:1"},
		{[]string{"--all", "--", "-J1"}, []string{"-J1"}, true, ""},
		{[]string{"--", "--all"}, []string{"--all"}, false, ""},
	} {
		f := newFlags("reset", "JOB [flags]", "")
		all := f.Bool("all", false, "")
		addr := f.String("coordinator", "", "")
		pos, err := f.parseArgs(&env{}, tc.args, 1)
		if err != nil || !slices.Equal(pos, tc.pos) || *all != tc.all || *addr != tc.addr {
			t.Errorf("%q: args %q, --all %v, --coordinator %q, err %v; want %q, %v, %q", tc.args, pos, *all, *addr, err, tc.pos, tc.all, tc.addr)
		}
	}
	f := newFlags("reset", "JOB [flags]", "")
	f.Bool("all", false, "")
	if _, err := f.parseArgs(&env{}, []string{"J1", "--all", "J2"}, 1); err == nil {
		t.Error("two jobs where one is wanted were taken")
	}
}
