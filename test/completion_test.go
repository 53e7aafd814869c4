package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBashCompletionQuotesNames: integration names are the
// administrator's, and may hold spaces, glob characters or $(...): bash
// completion offers each exactly once, quoted for the command line, never
// expands one into the files of the current directory, and runs nothing.
func TestBashCompletionQuotesNames(t *testing.T) {
	d := newDaemonEnv(t)
	d.writeConfig(t, "a*", "two words", "$(touch pwned)")
	d.startBroker(t)
	script, err := exec.Command(binary, "completion", "bash").Output()
	if err != nil {
		t.Fatal(err)
	}
	cwd := t.TempDir()
	for _, f := range []string{"abc", "apple"} {
		os.WriteFile(filepath.Join(cwd, f), nil, 0o600)
	}
	for _, tc := range []struct{ word, want string }{
		{"a", `a\*`},
		{"t", `two\ words`},
		{"$", `\$\(touch\ pwned\)`},
		{"", `\$\(touch\ pwned\)|a\*|two\ words`},
	} {
		t.Run(tc.word, func(t *testing.T) {
			sh := exec.Command("bash", "-c", string(script)+`COMP_WORDS=(oauthfs login "$1"); COMP_CWORD=2; _oauthfs; IFS='|'; printf '%s\n' "${COMPREPLY[*]}"`, "bash", tc.word)
			sh.Dir = cwd
			sh.Env = []string{"OAUTHFS_BROKER=" + d.socket, "PATH=" + filepath.Dir(binary) + ":/usr/bin:/bin"}
			got, err := sh.CombinedOutput()
			if err != nil || strings.TrimSpace(string(got)) != tc.want {
				t.Errorf("completing %q = %q, %v; want %q", tc.word, got, err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(cwd, "pwned")); err == nil {
		t.Error("completion ran a command from an integration's name")
	}
}
