package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// env is what a subcommand may touch of the process, so that tests can run
// one without a real terminal.
type env struct {
	stdout, stderr io.Writer
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands is a function rather than a variable so that nothing at package
// level can be changed.
func commands() []command {
	return []command{
		{"coordinator", "run the farm: take jobs, hand their sets out, join the parts", runCoordinator},
		{"ambassador", "sidecar on a render machine: the node's way to the coordinator", runAmbassador},
		{"node", "render sets with ffmpeg, through the ambassador beside it", runNode},
		{"submit", "add a job to the farm's queue", runSubmit},
		{"jobs", "list the farm's jobs", runJobs},
		{"cancel", "stop a job", runCancel},
		{"reset", "put a failed or cancelled job back in the queue", runReset},
		{"priority", "move a job in the queue", runPriority},
		{"delete", "remove a finished job and its files", runDelete},
		{"nodes", "list the farm's nodes, their failures and problems", runNodes},
		{"forgive", "forget a node's failures, so that it is excluded no more", runForgive},
		{"status", "show a job's progress per set and node", runStatus},
		{"fetch", "download the finished video", runFetch},
		{"version", "print the version", runVersion},
	}
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		printUsage(e.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			printUsage(e.stdout)
			return exitOK
		}
		// "help <cmd>" is the same as "<cmd> --help".
		name, rest = rest[0], []string{"--help"}
	case "-version", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			return finish(ctx, e, name, c.run(ctx, e, rest))
		}
	}
	fmt.Fprintf(e.stderr, "framefarm: unknown command %q\n\n", name)
	printUsage(e.stderr)
	return exitUsage
}

// finish turns a subcommand's result into its exit code and message.
func finish(ctx context.Context, e *env, name string, err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "framefarm %s: %v\n\n", name, ue.err)
		ue.flags.printUsage(e.stderr)
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// Stopped by a signal: that is how servers end.
		return exitOK
	default:
		fmt.Fprintf(e.stderr, "framefarm %s: %v\n", name, err)
		return exitError
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `framefarm turns a folder of numbered images into one frame-exact video,
encoded in parts on many machines.

Usage: framefarm <command> [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `  help         show this help, or "help <command>" for a command's flags

Run "framefarm <command> --help" for the flags of a command.
`)
}

// errHelpShown means the user asked for help and got it: exit 0.
var errHelpShown = errors.New("help shown")

// usageError is a mistake in the command line: exit 2 with the usage.
type usageError struct {
	flags *cmdFlags
	err   error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// cmdFlags is a subcommand's flag set with the text of its help. The flag
// package's own output is silenced so that help goes to stdout (it was
// asked for) and errors go to stderr, each printed once, by us.
type cmdFlags struct {
	*flag.FlagSet
	synopsis string
	about    string
}

func newFlags(name, synopsis, about string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, synopsis: synopsis, about: about}
}

func (f *cmdFlags) parse(e *env, args []string) error {
	_, err := f.parseArgs(e, args, 0)
	return err
}

// parseArgs parses the flags and returns the n arguments that are not
// flags (job ids, a priority that may be negative, "-"), which may stand
// before, between or after the flags (reset --all JOB --coordinator ADDR).
// After "--" everything is an argument.
func (f *cmdFlags) parseArgs(e *env, args []string, n int) ([]string, error) {
	var pos, flags []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case a == "-" || !strings.HasPrefix(a, "-") || isNumber(a):
			pos = append(pos, a)
		default:
			flags = append(flags, a)
			if f.takesValue(a) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	err := f.Parse(flags)
	if errors.Is(err, flag.ErrHelp) {
		f.printUsage(e.stdout)
		return nil, errHelpShown
	}
	if err != nil {
		return nil, f.usageErr("%v", err)
	}
	switch {
	case len(pos) > 0 && n == 0:
		return nil, f.usageErr("unexpected argument %q: every input is given with a flag", pos[0])
	case len(pos) != n:
		return nil, f.usageErr("usage: framefarm %s %s", f.Name(), f.synopsis)
	}
	return pos, nil
}

func isNumber(s string) bool { _, err := strconv.Atoi(s); return err == nil }

// takesValue reports whether the flag written as a (-name or --name) takes
// the next argument as its value: a flag of the set that is not a boolean
// and has no "=value" of its own. An unknown one is left to Parse to
// report.
func (f *cmdFlags) takesValue(a string) bool {
	name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if strings.Contains(name, "=") {
		return false
	}
	fl := f.Lookup(name)
	if fl == nil {
		return false
	}
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

func (f *cmdFlags) usageErr(format string, a ...any) error {
	return &usageError{flags: f, err: fmt.Errorf(format, a...)}
}

// require reports the first of the named string flags left empty.
func (f *cmdFlags) require(names ...string) error {
	for _, n := range names {
		if fl := f.Lookup(n); fl != nil && fl.Value.String() == "" {
			return f.usageErr("%s is required", dashes(n))
		}
	}
	return nil
}

// printUsage writes the help with GNU-style dashes, as the docs spell the
// flags, instead of the flag package's single dash.
func (f *cmdFlags) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: framefarm %s %s\n\n%s\n\nFlags:\n", f.Name(), f.synopsis, f.about)
	f.VisitAll(func(fl *flag.Flag) {
		arg, usage := flag.UnquoteUsage(fl)
		line := "  " + dashes(fl.Name)
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n        %s", line, strings.ReplaceAll(usage, "\n", "\n        "))
		if def := fl.DefValue; def != "" && def != "false" && def != "0" {
			if g, ok := fl.Value.(flag.Getter); ok {
				if _, isString := g.Get().(string); isString {
					def = fmt.Sprintf("%q", def)
				}
			}
			fmt.Fprintf(w, " (default %s)", def)
		}
		fmt.Fprintln(w)
	})
}

func dashes(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// levelFlag is --log-level. It accepts only the four names, which is all a
// user needs, and prints them in the lower case they are typed in.
type levelFlag struct{ level *slog.Level }

func (f levelFlag) String() string {
	if f.level == nil {
		return "info"
	}
	return strings.ToLower(f.level.String())
}

func (f levelFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return f.level.UnmarshalText([]byte(s))
	}
	return fmt.Errorf("want debug, info, warn or error, not %q", s)
}

// logLevel adds --log-level to a server role.
func (f *cmdFlags) logLevel() *slog.Level {
	l := new(slog.Level)
	f.Var(levelFlag{l}, "log-level", "log `LEVEL`: debug, info, warn or error")
	return l
}

func newLogger(w io.Writer, level *slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// isTerminal reports whether w is a terminal, where redrawing in place
// makes sense; a pipe or file gets an append-only stream instead.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
