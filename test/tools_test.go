package test

// Tokens where tools already look: token.json, id_token, token
// variants, and the helpers for kubectl, docker and git, each driven by
// the real tool where one can run here.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// graphResource is the resource of the "graph" token variant.
const graphResource = "https://graph.example.test"

// toolsEnv is an embedded broker and mount with an integration "Cloud"
// that asks for openid, has two token variants (graph: another resource;
// narrow: fewer scopes) and serves two container registries.
type toolsEnv struct {
	*cliEnv
	proc *proc
}

func newToolsEnv(t *testing.T, lifetime time.Duration) *toolsEnv {
	t.Helper()
	fusetest.Require(t)
	p := localprovider.New()
	t.Cleanup(p.Close)
	p.SetLifetime(lifetime)
	p.SetResources(graphResource)
	e := &toolsEnv{cliEnv: &cliEnv{p: p, dir: t.TempDir()}}
	e.mnt = filepath.Join(e.dir, "oauth")
	os.Mkdir(e.mnt, 0o700)
	e.socket = filepath.Join(e.dir, "run", "broker.sock")
	e.cfg = filepath.Join(e.dir, "config.toml")
	cfg := fmt.Sprintf(`
[broker]
socket = %q
listen = %q
state_dir = %q
request_timeout = "5s"

[[integration]]
name = "Cloud"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "%s/authorize"
token_url = "%s/token"
scopes = ["openid", "read", "write"]
docker_registries = ["registry.example.test:5000", "ghcr.io"]
docker_username = "oauth2accesstoken"

[[integration.token]]
name = "graph"
resource = %q

[[integration.token]]
name = "narrow"
scopes = ["read"]

[[integration]]
name = "Other"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "%s/authorize"
token_url = "%s/token"
`, e.socket, freeAddr(t), filepath.Join(e.dir, "state"), p.URL, p.URL, graphResource, p.URL, p.URL)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.proc = e.startMount(t)
	return e
}

// seedOpenID stores a grant from the provider, with an ID token, for
// Cloud, as a sign-in that asked for openid would.
func (e *toolsEnv) seedOpenID(t *testing.T, expiresIn int) (access, refresh, id string) {
	t.Helper()
	a, r, id, _ := e.p.GrantOpenID()
	code, body := e.api(t, "PUT", "/v1/integrations/Cloud/credentials",
		fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"id_token":%q,"expires_in":%d,"scope":"openid read write"}`, a, r, id, expiresIn))
	if code != 200 {
		t.Fatalf("seed: HTTP %d %s", code, body)
	}
	return a, r, id
}

// file reads a file of Cloud's directory in the mount.
func (e *toolsEnv) file(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Cloud", name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

// TestToolsTokenFiles: id_token, token.json and the variants' files
// through the kernel, each from the provider, and the errnos of what
// cannot be had.
func TestToolsTokenFiles(t *testing.T) {
	e := newToolsEnv(t, time.Hour)
	access, _, id := e.seedOpenID(t, 3600)
	if got := e.file(t, "id_token"); got != id {
		t.Errorf("id_token = %q; want the sign-in's ID token", got)
	}
	var doc struct {
		AccessToken string   `json:"access_token"`
		TokenType   string   `json:"token_type"`
		Expiry      string   `json:"expiry"`
		Scopes      []string `json:"scopes"`
		IDToken     string   `json:"id_token"`
	}
	raw := e.file(t, "token.json")
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		t.Fatalf("token.json: %v\n%s", err, raw)
	}
	if doc.AccessToken != access || doc.IDToken != id || doc.TokenType != "Bearer" || doc.Expiry != e.file(t, "expiry") ||
		strings.Join(doc.Scopes, " ") != "openid read write" {
		t.Errorf("token.json = %+v; want the access token, its ID token, Bearer, its expiry and scopes", doc)
	}
	// python3, as a script would read it.
	out, err := exec.Command("/usr/bin/python3", "-c", `import json,sys; d=json.load(open(sys.argv[1])); print(d["access_token"] == open(sys.argv[2]).read())`,
		filepath.Join(e.mnt, "by-name", "Cloud", "token.json"), filepath.Join(e.mnt, "by-name", "Cloud", "access_token")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "True" {
		t.Errorf("python3 reading token.json: %s %v", out, err)
	}

	graph := e.file(t, "tokens/graph/access_token")
	if !e.p.Issued(graph) || e.p.Audience(graph) != graphResource || graph == access {
		t.Errorf("tokens/graph/access_token = %q (audience %q); want a token for %s", graph, e.p.Audience(graph), graphResource)
	}
	narrow := e.file(t, "tokens/narrow/access_token")
	if e.p.ScopeOf(narrow) != "read" {
		t.Errorf("tokens/narrow/access_token has scope %q; want read", e.p.ScopeOf(narrow))
	}
	if again := e.file(t, "tokens/graph/access_token"); again != graph {
		t.Errorf("a second read of the variant got another token: it is kept until its refresh time")
	}
	var vdoc map[string]any
	json.Unmarshal([]byte(e.file(t, "tokens/graph/token.json")), &vdoc)
	if vdoc["access_token"] != graph {
		t.Errorf("tokens/graph/token.json = %v; want the variant's token", vdoc)
	}
	if got := strings.Fields(mustLs(t, filepath.Join(e.mnt, "by-name", "Cloud", "tokens"))); strings.Join(got, " ") != "graph narrow" {
		t.Errorf("ls tokens = %q", got)
	}

	for _, tc := range []struct {
		path string
		want syscall.Errno
	}{
		{"by-name/Cloud/tokens/nope/access_token", syscall.ENOENT},
		{"by-name/Other/id_token", syscall.ENOKEY},
		{"by-name/Other/tokens/graph", syscall.ENOENT},
	} {
		if _, err := os.ReadFile(filepath.Join(e.mnt, tc.path)); !errors.Is(err, tc.want) {
			t.Errorf("read %s = %v; want %v", tc.path, err, tc.want)
		}
	}
	// A sign-in without openid: no ID token, ENODATA, and token.json
	// without one.
	a, r, _ := e.p.Grant()
	code, body := e.api(t, "PUT", "/v1/integrations/Other/credentials", fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"expires_in":3600}`, a, r))
	if code != 200 {
		t.Fatalf("seed Other: %d %s", code, body)
	}
	if _, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Other", "id_token")); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("id_token without one = %v; want ENODATA", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.mnt, "by-name", "Other", "token.json")); strings.Contains(string(b), "id_token") || !strings.Contains(string(b), a) {
		t.Errorf("token.json without an ID token = %s", b)
	}
}

// TestToolsVariantsShareOneRefreshToken: with strict rotation (a refresh
// token works once), the main token and both variants read at the same
// time by many readers, over several expiries, never race on the refresh
// token: no reuse at the provider, no failed read, and one request per
// token per expiry.
func TestToolsVariantsShareOneRefreshToken(t *testing.T) {
	e := newToolsEnv(t, 4*time.Second)
	e.p.SetRotate(true)
	e.seedOpenID(t, 4)
	before := e.p.Refreshes()
	files := []string{"access_token", "tokens/graph/access_token", "tokens/narrow/access_token"}
	deadline := time.Now().Add(9 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]map[string]bool{}
	failures := 0
	for i := range 12 {
		wg.Go(func() {
			f := files[i%len(files)]
			for time.Now().Before(deadline) {
				b, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Cloud", f))
				mu.Lock()
				if err != nil {
					failures++
				} else {
					if seen[f] == nil {
						seen[f] = map[string]bool{}
					}
					seen[f][string(b)] = true
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	requests := e.p.Refreshes() - before
	t.Logf("9 s of 12 readers on 3 tokens of 4 s: %d token requests; tokens seen: main %d, graph %d, narrow %d; %d failed reads; %d reuses",
		requests, len(seen[files[0]]), len(seen[files[1]]), len(seen[files[2]]), failures, e.p.Reuses())
	if e.p.Reuses() != 0 || failures != 0 {
		t.Errorf("%d refresh tokens used twice, %d failed reads; want none", e.p.Reuses(), failures)
	}
	tokens := 0
	for _, f := range files {
		tokens += len(seen[f])
	}
	// Every token seen but the seeded main one came from one request;
	// a refresh ahead of the main token may end unseen as the readers
	// stop.
	if requests < tokens-1 || requests > tokens {
		t.Errorf("%d token requests for %d new tokens; want one each", requests, tokens-1)
	}
	for _, f := range files {
		if len(seen[f]) < 2 {
			t.Errorf("%s: %d tokens in 9 s of a 4 s lifetime; want it refreshed", f, len(seen[f]))
		}
	}
}

// TestToolsTokenCommand: oauthfs token's choices of token and validity.
func TestToolsTokenCommand(t *testing.T) {
	e := newToolsEnv(t, time.Hour)
	access, _, id := e.seedOpenID(t, 600) // ten minutes left of an hour's lifetime
	for _, tc := range []struct {
		name  string
		args  []string
		check func(out string) bool
	}{
		{"main", []string{"token", "Cloud"}, func(out string) bool { return out == access }},
		{"id token", []string{"token", "--id-token", "Cloud"}, func(out string) bool { return out == id }},
		{"json", []string{"token", "--json", "Cloud"}, func(out string) bool {
			return strings.Contains(out, `"access_token":"`+access+`"`) && strings.Contains(out, `"id_token":"`+id+`"`)
		}},
		{"variant", []string{"token", "--variant", "graph", "Cloud"}, func(out string) bool { return e.p.Audience(out) == graphResource }},
		{"ad hoc resource", []string{"token", "--resource", graphResource, "Cloud"}, func(out string) bool {
			return e.p.Audience(out) == graphResource && out != e.file(t, "tokens/graph/access_token")
		}},
		{"ad hoc scope", []string{"token", "--scope", "read", "Cloud"}, func(out string) bool { return e.p.ScopeOf(out) == "read" }},
		{"min-valid within the token's time", []string{"token", "--min-valid", "5m", "Cloud"}, func(out string) bool { return out == access }},
		{"min-valid beyond it refreshes", []string{"token", "--min-valid", "30m", "Cloud"}, func(out string) bool {
			return out != access && e.p.Accepts(out)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := e.oauthfs(t, tc.args...)
			if code != 0 || !tc.check(out) {
				t.Errorf("oauthfs %s: exit %d, %q, %s", strings.Join(tc.args, " "), code, out, errOut)
			}
		})
	}
	before, _, _ := e.oauthfs(t, "token", "Cloud")
	forced, _, code := e.oauthfs(t, "token", "--force-refresh", "Cloud")
	if code != 0 || forced == before || !e.p.Accepts(forced) {
		t.Errorf("--force-refresh gave %q (before %q); want a new token", forced, before)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"token", "--min-valid", "2h", "Cloud"}, 1, "less than the 2h0m0s asked for"},
		{[]string{"token", "--variant", "nope", "Cloud"}, 3, `Cloud has no token variant "nope" (its variants: graph, narrow)`},
		{[]string{"token", "--resource", "https://elsewhere.example.test", "Cloud"}, 6, "invalid_target"},
		{[]string{"token", "--variant", "graph", "--scope", "read", "Cloud"}, 2, "--variant cannot be used with --resource or --scope"},
		{[]string{"token", "--id-token", "Other"}, 4, "not signed in"},
	} {
		out, errOut, code := e.oauthfs(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("oauthfs %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.want)
		}
		if strings.Contains(errOut, "CANARY") || strings.Contains(errOut, "tok-rt-") || strings.Contains(errOut, "tok-at-") {
			t.Errorf("a token in an error: %s", errOut)
		}
	}
	// The refusal of a resource lost nothing.
	if got := e.file(t, "access_token"); !e.p.Accepts(got) {
		t.Errorf("after the refusals the main token is %q; want a valid one", got)
	}
}

// mustLs lists a directory through the kernel.
func mustLs(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("ls", dir).Output()
	if err != nil {
		t.Fatalf("ls %s: %v", dir, err)
	}
	return string(out)
}
