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
