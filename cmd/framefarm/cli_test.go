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
		{[]string{"--coordinator", "h:1", "-5"}, []string{"-5"}, false, "h:1"},
		{[]string{"--coordinator", "-5", "J1"}, []string{"J1"}, false, "-5"},
		{[]string{"-", "--all"}, []string{"-"}, true, ""},
		{[]string{"--all=false", "J1", "-coordinator", "--"}, []string{"J1"}, false, "--"},
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
	f.String("coordinator", "", "")
	for _, args := range [][]string{
		{"J1", "--all", "J2"},   // two jobs where one is wanted
		{"J1", "--coordinator"}, // a flag without its value
		{"J1", "--nope"},        // an unknown flag
		{"J1", "--all=maybe"},   // a boolean that is not one
		{"J1", "-"},             // "-" is an argument too: two
	} {
		if pos, err := f.parseArgs(&env{}, args, 1); err == nil {
			t.Errorf("%q was taken (arguments %q), want a usage error", args, pos)
		}
	}
}
