package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var includeRE = regexp.MustCompile(`(?s)<!-- include: (\S+) -->\n(.*?)<!-- end include -->`)

// TestDocsIncludeExamples checks that docs/languages.md shows the example
// files exactly as they are. OAUTHFS_UPDATE_DOCS=1 rewrites the doc.
func TestDocsIncludeExamples(t *testing.T) {
	doc := filepath.Join("..", "docs", "languages.md")
	raw, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	lang := map[string]string{".sh": "bash", ".py": "python", ".R": "r"}
	n := 0
	updated := includeRE.ReplaceAllStringFunc(string(raw), func(block string) string {
		m := includeRE.FindStringSubmatch(block)
		src, err := os.ReadFile(filepath.Join("..", m[1]))
		if err != nil {
			t.Errorf("%s includes %s: %v", doc, m[1], err)
			return block
		}
		n++
		want := "```" + lang[filepath.Ext(m[1])] + "\n" + string(src) + "```\n"
		if m[2] != want {
			if os.Getenv("OAUTHFS_UPDATE_DOCS") != "1" {
				t.Errorf("%s shows an old copy of %s; run OAUTHFS_UPDATE_DOCS=1 go test -run TestDocsIncludeExamples ./test/", doc, m[1])
			}
		}
		return "<!-- include: " + m[1] + " -->\n" + want + "<!-- end include -->"
	})
	if n < 5 {
		t.Errorf("%s includes %d examples; want at least 5", doc, n)
	}
	if os.Getenv("OAUTHFS_UPDATE_DOCS") == "1" && updated != string(raw) {
		os.WriteFile(doc, []byte(updated), 0o644)
	}
	if !strings.Contains(updated, "oauthfs git-credential") {
		t.Errorf("%s lacks the git helper", doc)
	}
}

// TestNoTokenInArgv checks that no document, example or printed guide
// shows a command that puts a token in a program's arguments: every user
// on the host can read any process's arguments in /proc/PID/cmdline (a
// hostile review read a token there from our own curl example). A token
// belongs in a file, a pipe or a file descriptor: printf and $(<file) are
// bash builtins, so `curl -H @<(printf 'Authorization: Bearer %s\n'
// "$(<FILE)")` keeps it off every argv.
func TestNoTokenInArgv(t *testing.T) {
	// bad matches what puts a token in an argument; each pattern says why.
	bad := []struct {
		re  *regexp.Regexp
		why string
	}{
		{regexp.MustCompile(`Bearer \$`), "a token expanded into an argument (use -H @<(printf 'Authorization: Bearer %s\\n' \"$(<FILE)\"))"},
		{regexp.MustCompile(`--oauth2-bearer[ =]+["']?\$`), "a token expanded into curl's --oauth2-bearer (put it in a config file read with -K)"},
		{regexp.MustCompile(`(?:-d|--data[a-z-]*)[ =]+'?\{[^\n]*"(?:access_token|refresh_token|id_token)"`), "token JSON in curl's arguments (use --data-binary @- with a here-document)"},
		{regexp.MustCompile(`(?:-u|--user)[ =]+["']?[^ ]*:\$`), "a token expanded into a user:password argument"},
	}
	// subst matches a token file read into a word; it is fine only as an
	// assignment or as an argument of the printf builtin.
	subst := regexp.MustCompile(`\$\((?:cat |<)[^)]*(?:access_token|id_token|token\.json)[^)]*\)`)
	assign := regexp.MustCompile(`(?:^|[\s;&|(])[A-Za-z_]\w*="?$`)
	var files []string
	for _, pat := range []string{"../README.md", "../docs/*.md", "../python/README.md", "../r/oauthfs/README.md", "../cmd/oauthfs/*.go", "../deploy/*/*", "../deploy/*"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	filepath.WalkDir("../examples", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			continue // a directory matched by a glob
		}
		n++
		for i, line := range strings.Split(string(raw), "\n") {
			for _, b := range bad {
				if b.re.MatchString(line) {
					t.Errorf("%s:%d: %s:\n\t%s", f, i+1, b.why, strings.TrimSpace(line))
				}
			}
			for _, loc := range subst.FindAllStringIndex(line, -1) {
				before := line[:loc[0]]
				if !assign.MatchString(before) && !strings.Contains(before, "printf ") {
					t.Errorf("%s:%d: a token file read into a program's arguments (assign it, or pass it through printf to a file descriptor):\n\t%s", f, i+1, strings.TrimSpace(line))
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("checked %d files; want the README, docs, examples and commands", n)
	}
}
