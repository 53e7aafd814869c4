package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/oauthfs/oauthfs/client"
)

var completionCommand = &command{
	name: "completion", args: "bash|zsh|fish",
	summary: "print shell completion (commands, flags, integration names)",
	help: "Print shell completion for oauthfs: commands, their flags, and the names\n" +
		"of integrations (asked of the broker, when one answers). Load it with\n" +
		"  bash: source <(oauthfs completion bash)   (or put it in /etc/bash_completion.d)\n" +
		"  zsh:  source <(oauthfs completion zsh)\n" +
		"  fish: oauthfs completion fish | source",
	flags: completionFlags,
}

// completionFlags declares the flags of oauthfs completion.
func completionFlags(fs *flag.FlagSet) runFunc {
	return func(stdout, _ io.Writer) error {
		script, ok := completionScripts[fs.Arg(0)]
		if fs.NArg() != 1 || !ok {
			return usageErrorf("completion takes one shell: bash, zsh or fish")
		}
		_, err := io.WriteString(stdout, script)
		return err
	}
}

// completionScripts ask 'oauthfs __complete WORDS... CURRENT' for the
// candidates, one a line.
var completionScripts = map[string]string{
	// bash: each candidate is read whole (no word splitting, no
	// pathname expansion: an integration named "a*" is not the files
	// matching a*) and quoted for the command line.
	"bash": `# bash completion for oauthfs
_oauthfs() {
	local c
	COMPREPLY=()
	while IFS= read -r c; do
		COMPREPLY+=("$(printf '%q' "$c")")
	done < <(oauthfs __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
}
complete -o default -F _oauthfs oauthfs
`,
	"zsh": `#compdef oauthfs
# zsh completion for oauthfs
_oauthfs() {
	local -a c
	c=("${(@f)$(oauthfs __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	compadd -a c
}
compdef _oauthfs oauthfs
`,
	"fish": `# fish completion for oauthfs
complete -c oauthfs -f -a '(oauthfs __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)'
`,
}

// runComplete prints the completions of the last of args, the word being
// typed, after the words before it. It is what the completion scripts
// call; it prints nothing rather than an error.
func runComplete(args []string, stdout, _ io.Writer) error {
	if len(args) == 0 {
		args = []string{""}
	}
	cur, before := args[len(args)-1], args[:len(args)-1]
	var cands []string
	switch {
	case len(before) == 0:
		for _, c := range commands {
			cands = append(cands, c.name)
		}
	case strings.HasPrefix(cur, "-"):
		cands = flagsOf(before)
	default:
		cands = argsOf(before)
	}
	sort.Strings(cands)
	for _, c := range cands {
		if strings.HasPrefix(c, cur) {
			fmt.Fprintln(stdout, c)
		}
	}
	return nil
}

// flagsOf returns the flags of the command that words start, as it
// declares them.
func flagsOf(words []string) []string {
	c := lookupCommand(words[0])
	if c == nil {
		return nil
	}
	fs := newFlags(c, io.Discard)
	c.flags(fs)
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, "--"+f.Name) })
	return out
}

// argsOf returns what may follow words: a subcommand, a shell, or the
// name of an integration.
func argsOf(words []string) []string {
	switch words[0] {
	case "completion":
		return []string{"bash", "fish", "zsh"}
	case "store":
		if len(words) == 1 {
			return []string{"migrate"}
		}
		if prev := words[len(words)-1]; prev == "--from" || prev == "--to" {
			return []string{"file", "postgres"}
		}
	case "docker-credential":
		return []string{"erase", "get", "list", "store"}
	case "login", "logout", "token", "git-credential", "exec-credential":
		return integrationNames(words)
	}
	return nil
}

// integrationNames asks the broker that the words' --broker (or the
// usual search) leads to for the names of the integrations, within a
// second; none when no broker answers.
func integrationNames(words []string) []string {
	sock := ""
	for i, w := range words {
		if w == "--broker" && i+1 < len(words) {
			sock = words[i+1]
		} else if s, ok := strings.CutPrefix(w, "--broker="); ok {
			sock = s
		}
	}
	path, err := resolveSocket(sock, "")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	list, err := client.NewClient(path, time.Second).Integrations(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, in := range list {
		out = append(out, in.Name)
	}
	return out
}
