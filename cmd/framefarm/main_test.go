package main

import (
	"bytes"
	"context"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

func TestRunCommandLine(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		stdout   []string // substrings
		stderr   []string
		noStdout bool
	}{
		{args: nil, code: exitUsage, stderr: []string{"Usage: framefarm <command>", "coordinator", "fetch"}, noStdout: true},
		{args: []string{"help"}, code: exitOK, stdout: []string{"Usage: framefarm <command>", "ambassador", "status"}},
		{args: []string{"--help"}, code: exitOK, stdout: []string{"Usage: framefarm <command>"}},
		{args: []string{"frobnicate"}, code: exitUsage, stderr: []string{`unknown command "frobnicate"`, "Usage: framefarm <command>"}, noStdout: true},
		{args: []string{"help", "status"}, code: exitOK, stdout: []string{"Usage: framefarm status", "--watch", "--json", `(default "127.0.0.1:5555")`}},
		{args: []string{"coordinator", "--help"}, code: exitOK, stdout: []string{
			"--frames DIR", `(default "127.0.0.1:5555")`, `(default "./framefarm-data")`, "(default 8)", "(default 10m0s)",
			"(default 30s)", `(default "24")`, `(default "libx264")`, "(default -1)", "yuv422p10le for prores_ks",
			"--keep-parts", "(default 20s)", "--log-level LEVEL", "(default info)"}},
		{args: []string{"ambassador", "-h"}, code: exitOK, stdout: []string{"--coordinator ADDR", `(default "127.0.0.1:5556")`}},
		{args: []string{"node", "--help"}, code: exitOK, stdout: []string{`(default "127.0.0.1:5556")`, "--name NAME", "--work DIR", "--once"}},
		{args: []string{"fetch", "--help"}, code: exitOK, stdout: []string{"-o FILE", "--wait", "--job ID"}},
		{args: []string{"submit"}, code: exitUsage, stderr: []string{"framefarm submit: --frames is required", "Usage: framefarm submit"}, noStdout: true},
		{args: []string{"cancel"}, code: exitUsage, stderr: []string{"framefarm cancel: usage: framefarm cancel JOB"}, noStdout: true},
		{args: []string{"priority", "abc"}, code: exitUsage, stderr: []string{"framefarm priority: usage: framefarm priority JOB N"}, noStdout: true},
		{args: []string{"jobs", "--help"}, code: exitOK, stdout: []string{"Usage: framefarm jobs", "--json", `(default "127.0.0.1:5555")`}},
		{args: []string{"ambassador"}, code: exitUsage, stderr: []string{"framefarm ambassador: --coordinator is required"}, noStdout: true},
		{args: []string{"fetch"}, code: exitUsage, stderr: []string{"framefarm fetch: -o is required"}, noStdout: true},
		{args: []string{"node", "--log-level", "loud"}, code: exitUsage, stderr: []string{"want debug, info, warn or error"}, noStdout: true},
		{args: []string{"status", "--bogus"}, code: exitUsage, stderr: []string{"flag provided but not defined: -bogus"}, noStdout: true},
		{args: []string{"status", "extra"}, code: exitUsage, stderr: []string{`unexpected argument "extra"`}, noStdout: true},
		{args: []string{"coordinator", "--frames", "/nonexistent/framefarm-test", "--data", "DATA"}, code: exitError,
			stderr: []string{"framefarm coordinator: "}, noStdout: true},
		{args: []string{"version"}, code: exitOK, stdout: []string{"framefarm "}},
		{args: []string{"--version"}, code: exitOK, stdout: []string{"framefarm "}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string(nil), tt.args...)
			for i, a := range args {
				if a == "DATA" {
					args[i] = t.TempDir()
				}
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, &env{stdout: &stdout, stderr: &stderr})
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, &stdout, &stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, &stderr)
				}
			}
			if tt.noStdout && stdout.Len() > 0 {
				t.Errorf("stdout should be empty, got:\n%s", &stdout)
			}
		})
	}
}

func TestServeGCYieldsToGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "100")
	tuneServeGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC=100 set, the coordinator's GC percent is %d, want the environment's 100", got)
	}
	os.Unsetenv("GOGC") // t.Setenv puts it back
	tuneServeGC()
	if got := debug.SetGCPercent(100); got != serveGCPercent {
		t.Errorf("without GOGC, the coordinator's GC percent is %d, want %d", got, serveGCPercent)
	}
}
