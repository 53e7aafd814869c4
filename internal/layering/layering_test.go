package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const (
	module = "github.com/oauthfs/oauthfs/"
	oauth2 = "golang.org/x/oauth2"
	gofuse = "github.com/hanwen/go-fuse/v2"
)

// pkg is what go list says of one package.
type pkg struct {
	ImportPath string
	Imports    []string // direct
	Deps       []string // transitive
}

// packages lists the module's packages, tests aside.
func packages(t *testing.T) map[string]pkg {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "../../...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	all := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		all[strings.TrimPrefix(p.ImportPath, module)] = p
	}
	return all
}

// matches reports whether import path ip is rule r: one of ours named
// without the module ("broker", "internal/" for every internal package),
// or a whole path for others (a module and its packages).
func matches(ip, r string) bool {
	if !strings.Contains(r, ".") {
		r = module + r
	}
	return ip == r || strings.HasPrefix(ip, strings.TrimSuffix(r, "/")+"/")
}

func anyMatch(ip string, rules []string) bool {
	return slices.ContainsFunc(rules, func(r string) bool { return matches(ip, r) })
}

// TestImportRules: every "never imports" rule of the package docs, and
// the layering of the session API (api, client, session, unixsock).
func TestImportRules(t *testing.T) {
	all := packages(t)
	sessionAPI := []string{"session", "client", "api"}
	rules := []struct {
		pkg string
		// never is what the package may not depend on, even indirectly.
		never []string
		// neverDirect is what it may not import itself.
		neverDirect []string
		// onlyOurs, when set, is all of oauthfs it may import itself.
		onlyOurs []string
	}{
		{pkg: "config", onlyOurs: []string{}},
		{pkg: "credential", never: []string{oauth2, gofuse}, onlyOurs: []string{"internal/"}},
		{pkg: "api", never: []string{oauth2, gofuse}, onlyOurs: []string{"credential"}},
		{pkg: "client", never: []string{"broker", "signin", "store", "provider", "session", "audit", "config", "metrics", "host", "fusefs", oauth2, gofuse},
			onlyOurs: []string{"api", "credential", "internal/"}},
		{pkg: "internal/unixsock", never: []string{"api", "client", "session", "broker", "credential"}, onlyOurs: []string{}},
		{pkg: "session", never: []string{gofuse, "fusefs", "client"}, neverDirect: []string{oauth2}},
		{pkg: "fusefs", never: []string{oauth2, "broker", "provider", "store", "signin", "session", "client", "api"}},
		{pkg: "broker", never: append([]string{gofuse, "fusefs", "signin"}, sessionAPI...)},
		{pkg: "provider", never: append([]string{gofuse, "fusefs", "broker", "signin", "store"}, sessionAPI...)},
		{pkg: "signin", never: append([]string{gofuse, "fusefs", "broker", "store"}, sessionAPI...)},
		{pkg: "store", never: append([]string{gofuse, "fusefs", "broker", "signin", "provider", oauth2}, sessionAPI...)},
		{pkg: "metrics", never: append([]string{gofuse, "fusefs", "broker", "signin", "store"}, sessionAPI...)},
		{pkg: "audit", never: append([]string{gofuse, "fusefs", "broker", "signin", "store", "provider", "credential"}, sessionAPI...)},
		{pkg: "host", never: []string{gofuse, "fusefs", "client"}},
		// The commands reach the broker through host, and talk to a
		// running one through client.
		{pkg: "cmd/oauthfs", neverDirect: []string{"broker", "session", "provider", oauth2}},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			p, ok := all[r.pkg]
			if !ok {
				t.Fatalf("go list does not know %s", r.pkg)
			}
			for _, d := range p.Deps {
				if anyMatch(d, r.never) {
					t.Errorf("%s depends on %s", r.pkg, d)
				}
			}
			for _, d := range p.Imports {
				if anyMatch(d, r.neverDirect) {
					t.Errorf("%s imports %s", r.pkg, d)
				}
				if r.onlyOurs != nil && strings.HasPrefix(d, module) && !anyMatch(d, r.onlyOurs) {
					t.Errorf("%s imports %s; it may import only %v of oauthfs", r.pkg, d, r.onlyOurs)
				}
			}
		})
	}
	// Who may speak OAuth and FUSE themselves.
	for lib, allowed := range map[string][]string{
		oauth2: {"provider", "config"},
		gofuse: {"fusefs", "internal/fusetest", "cmd/oauthfs"},
	} {
		for name, p := range all {
			if slices.ContainsFunc(p.Imports, func(ip string) bool { return matches(ip, lib) }) && !anyMatch(module+name, allowed) {
				t.Errorf("%s imports %s; only %v may", name, lib, allowed)
			}
		}
	}
}

// TestRulesCatchAViolation: the check itself finds a dependency the
// rules forbid.
func TestRulesCatchAViolation(t *testing.T) {
	for _, tc := range []struct {
		ip, rule string
		want     bool
	}{
		{module + "broker", "broker", true},
		{module + "brokerage", "broker", false},
		{module + "internal/secmem", "internal/", true},
		{gofuse + "/fs", gofuse, true},
		{"golang.org/x/oauth2/internal", oauth2, true},
		{"golang.org/x/oauth2x", oauth2, false},
	} {
		if got := matches(tc.ip, tc.rule); got != tc.want {
			t.Errorf("matches(%q, %q) = %v; want %v", tc.ip, tc.rule, got, tc.want)
		}
	}
}
