package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestComplete: what the completion scripts get for each kind of word.
func TestComplete(t *testing.T) {
	t.Setenv("OAUTHFS_BROKER", t.TempDir()+"/none.sock") // no broker: no names
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lo"}, "login\nlogout\n"},
		{[]string{""}, ""}, // every command: checked below
		{[]string{"login", "--n"}, "--no-browser\n"},
		{[]string{"settings", "--"}, "--broker\n--config\n--no-browser\n--sign-out-everywhere\n"},
		{[]string{"completion", ""}, "bash\nfish\nzsh\n"},
		{[]string{"store", ""}, "migrate\n"},
		{[]string{"store", "migrate", "--to", "p"}, "postgres\n"},
		{[]string{"store", "migrate", "--"}, "--config\n--from\n--to\n"},
		{[]string{"token", ""}, ""},
	} {
		var out bytes.Buffer
		runComplete(tc.args, &out, nil)
		if tc.args[0] == "" {
			if n := strings.Count(out.String(), "\n"); n != len(commands) {
				t.Errorf("completions of nothing: %d; want the %d commands", n, len(commands))
			}
			continue
		}
		if out.String() != tc.want {
			t.Errorf("complete %q = %q; want %q", tc.args, out.String(), tc.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"completion", "tcsh"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "bash, zsh or fish") {
		t.Errorf("completion tcsh: exit %d, %q", code, errb.String())
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out.Reset()
		if code := run([]string{"completion", sh}, &out, &errb); code != 0 || !strings.Contains(out.String(), "oauthfs __complete") {
			t.Errorf("completion %s: exit %d, %q", sh, code, out.String())
		}
	}
}

// TestEveryCommandHelps: each command's --help, made from the flags it
// declares up front, names every flag completion offers, and runs
// nothing.
func TestEveryCommandHelps(t *testing.T) {
	t.Setenv("OAUTHFS_BROKER", t.TempDir()+"/none.sock")
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{c.name, "--help"}, &out, &errb); code != exitOK || out.Len() != 0 {
				t.Fatalf("%s --help: exit %d, stdout %q", c.name, code, out.String())
			}
			if !strings.HasPrefix(errb.String(), "Usage: oauthfs "+c.name+" ") || !strings.Contains(errb.String(), c.help) {
				t.Errorf("%s --help = %q; want its usage and help", c.name, errb.String())
			}
			flags := flagsOf([]string{c.name})
			if c.name == "token" && len(flags) == 0 {
				t.Errorf("token declares no flags; want --broker and --config")
			}
			for _, f := range flags {
				if !strings.Contains(errb.String(), "  -"+strings.TrimPrefix(f, "--")) {
					t.Errorf("%s --help does not list %s:\n%s", c.name, f, errb.String())
				}
			}
		})
	}
}
