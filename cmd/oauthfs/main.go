// Command oauthfs gives every program in a user's session a valid OAuth
// 2.0 access token as a plain file. See README.md and docs/design.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/oauthfs/oauthfs/internal/printable"
)

func main() {
	// Not dumpable: no core file, no ptrace and no /proc/PID/mem for other
	// processes of the same user, so a compromised program of the user
	// cannot read the tokens in this process's memory.
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0)
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == dockerHelperName {
		// Docker runs its credential helpers by this name.
		args = append([]string{dockerCredentialCommand.name}, args...)
	}
	os.Exit(run(args, os.Stdout, os.Stderr))
}

// dockerHelperName is the name docker runs the credential helper
// "oauthfs" by: a link to this program.
const dockerHelperName = "docker-credential-oauthfs"

// command is one subcommand. Its flags are declared on a flag set before
// anything runs, so that help and completion know them without running
// the command.
type command struct {
	name    string
	args    string // the usage line after the name
	summary string // one line, for the list of commands
	help    string // what the command does, for its --help
	// flags declares the command's flags on fs and returns what runs
	// the command once fs has parsed the command line.
	flags func(fs *flag.FlagSet) runFunc
}

// runFunc runs a command whose flag set has parsed its command line.
type runFunc func(stdout, stderr io.Writer) error

// commands are the subcommands, in the order the usage lists them.
var commands []*command

func init() {
	// In init: completion's commands refer to this list.
	commands = []*command{mountCommand, tokenCommand, listCommand, brokerCommand, loginCommand, logoutCommand,
		settingsCommand, gitCredentialCommand, execCredentialCommand, dockerCredentialCommand, storeCommand, devCommand,
		completionCommand, versionCommand}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "oauthfs gives every program a valid OAuth 2.0 access token as a file.\n\nUsage:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  oauthfs %-17s %s\n", c.name, c.args)
	}
	fmt.Fprintf(w, "\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-17s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'oauthfs COMMAND --help' for a command's options. Exit codes:\n%s", exitCodeHelp)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return exitOK
	case "-v", "--version":
		args[0] = "version"
	}
	if args[0] == "__complete" { // for the completion scripts; not listed
		return report(stderr, runComplete(args[1:], stdout, stderr))
	}
	c := lookupCommand(args[0])
	if c == nil {
		return report(stderr, usageErrorf("unknown command %q (commands: %s)", args[0], commandNames()))
	}
	fs := newFlags(c, stderr)
	run := c.flags(fs)
	if err := parse(fs, args[1:]); err != nil {
		return report(stderr, err)
	}
	return report(stderr, run(stdout, stderr))
}

// lookupCommand returns the command called name, or nil.
func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func commandNames() string {
	var n []string
	for _, c := range commands {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

// report prints err the one way oauthfs prints errors and returns the exit
// code for it.
func report(stderr io.Writer, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	err = explain(err, "")
	msg, hint := err.Error(), ""
	var he *hintError
	if errors.As(err, &he) {
		msg, hint = he.err.Error(), he.hint
	}
	// Messages may quote a provider or a callback: never let them reach
	// the terminal with control characters.
	fmt.Fprintf(stderr, "oauthfs: error: %s\n", printable.String(msg, 0))
	if hint != "" {
		fmt.Fprintf(stderr, "hint: %s\n", printable.String(hint, 0))
	}
	return exitCode(err)
}

// hintError adds a hint line to an error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + " (" + e.hint + ")" }
func (e *hintError) Unwrap() error { return e.err }

func withHint(err error, format string, args ...any) error {
	return &hintError{err: err, hint: fmt.Sprintf(format, args...)}
}

// usageError marks a command line that could not be understood.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return withHint(&usageError{fmt.Sprintf(format, args...)}, "run 'oauthfs --help'")
}

// newFlags returns c's flag set, without its flags, which reports errors
// instead of exiting.
func newFlags(c *command, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: oauthfs %s %s\n\n%s\n", c.name, c.args, c.help)
		if hasFlags(fs) {
			fmt.Fprintf(stderr, "\nOptions:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses args, turning flag errors into usage errors. Flags may come
// before or after the positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return withHint(&usageError{err.Error()}, "run 'oauthfs %s --help'", fs.Name())
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// oneArg returns the single positional argument.
func oneArg(fs *flag.FlagSet, what string) (string, error) {
	if fs.NArg() != 1 {
		return "", withHint(&usageError{fmt.Sprintf("%s takes exactly one %s, got %d arguments", fs.Name(), what, fs.NArg())}, "run 'oauthfs %s --help'", fs.Name())
	}
	return fs.Arg(0), nil
}
