package test

// Tokens where tools already look: token.json, id_token, token
// variants, and the helpers for kubectl, docker and git, each driven by
// the real tool where one can run here.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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
resources = ["https://refused.example.test"]

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
	// No token, ID token or refresh token in meta.json, the index, or
	// the broker's log at debug level.
	meta := e.file(t, "meta.json")
	index, _ := os.ReadFile(filepath.Join(e.mnt, "integrations.json"))
	logs := e.proc.stderr.String()
	for _, secret := range []string{access, id, graph, narrow, a, r, id[strings.LastIndex(id, ".")+1:]} {
		for what, text := range map[string]string{"meta.json": meta, "integrations.json": string(index), "the log": logs} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds a secret (%.12s...)", what, secret)
			}
		}
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
		{[]string{"token", "--resource", "https://refused.example.test", "Cloud"}, 6, "invalid_target"},
		{[]string{"token", "--resource", "https://unlisted.example.test", "Cloud"}, 1, "may not ask for tokens for https://unlisted.example.test"},
		{[]string{"token", "--scope", "admin", "Cloud"}, 1, `scope "admin" was not granted`},
		{[]string{"token", "--variant", "graph", "--scope", "read", "Cloud"}, 2, "--variant cannot be used with --resource or --scope"},
		{[]string{"token", "--id-token", "Other"}, 4, "not signed in"},
	} {
		out, errOut, code := e.oauthfs(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("oauthfs %s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.want)
		}
		if slices.Contains(tc.args, "nope") && (strings.Contains(errOut, "no such integration") || !strings.Contains(errOut, "oauthfs list --json")) {
			t.Errorf("an unknown variant: %q; want it said as a variant, with the hint to list them", errOut)
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

// TestToolsKubectl: Debian's kubectl (or whichever is installed) runs
// oauthfs exec-credential for a cluster whose API server accepts only the
// provider's newest token; after a refresh the next kubectl gets the new
// one.
func TestToolsKubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	requireE2E(t, err == nil, "kubectl (Debian's kubernetes-client)")
	e := newToolsEnv(t, time.Hour)
	e.seedOpenID(t, 3600)
	var mu sync.Mutex
	var seen []string
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen = append(seen, tok)
		mu.Unlock()
		if tok == "" || tok != e.p.LastAccess() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(api.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	// kubectl before 1.22 speaks only v1beta1 of the exec protocol.
	version, mode := "client.authentication.k8s.io/v1", "\n      interactiveMode: Never"
	if out, err := exec.Command(kubectl, "version", "--client", "-o", "json").Output(); err == nil {
		var v struct {
			ClientVersion struct{ Minor string } `json:"clientVersion"`
		}
		if json.Unmarshal(out, &v) == nil && len(v.ClientVersion.Minor) > 0 {
			if n, _ := strconv.Atoi(strings.TrimRight(v.ClientVersion.Minor, "+")); n < 22 {
				version, mode = "client.authentication.k8s.io/v1beta1", ""
			}
		}
	}
	kubeconfig := filepath.Join(e.dir, "kubeconfig")
	os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: me
  user:
    exec:
      apiVersion: %s
      command: %s
      args: [exec-credential, Cloud]
      env:
      - name: OAUTHFS_BROKER
        value: %s%s
contexts:
- name: test
  context: {cluster: test, user: me}
current-context: test
`, api.URL, base64.StdEncoding.EncodeToString(ca), version, binary, e.socket, mode), 0o600)
	run := func() string {
		t.Helper()
		cmd := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "--raw", "/healthz")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + e.dir}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl get --raw /healthz: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := run(); out != "ok" {
		t.Errorf("kubectl = %q; want ok", out)
	}
	first := e.p.LastAccess()
	if _, errOut, code := e.oauthfs(t, "token", "--force-refresh", "Cloud"); code != 0 {
		t.Fatalf("force a refresh: %s", errOut)
	}
	if e.p.LastAccess() == first {
		t.Fatal("the refresh did not make a new token")
	}
	if out := run(); out != "ok" {
		t.Errorf("kubectl after a refresh = %q; want ok", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 || seen[0] != first || seen[len(seen)-1] != e.p.LastAccess() {
		t.Errorf("the API server saw %d requests; want the first token, then the refreshed one", len(seen))
	}
	// The plugin's answer, as kubectl reads it.
	cmd := exec.Command(binary, "exec-credential", "Cloud")
	cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+e.socket, `KUBERNETES_EXEC_INFO={"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":false}}`)
	out, err := cmd.Output()
	var cred struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Status     struct {
			Token               string    `json:"token"`
			ExpirationTimestamp time.Time `json:"expirationTimestamp"`
		} `json:"status"`
	}
	if err != nil || json.Unmarshal(out, &cred) != nil || cred.APIVersion != "client.authentication.k8s.io/v1beta1" || cred.Kind != "ExecCredential" ||
		cred.Status.Token != e.p.LastAccess() || time.Until(cred.Status.ExpirationTimestamp) < 30*time.Minute || time.Until(cred.Status.ExpirationTimestamp) > time.Hour {
		t.Errorf("exec-credential = %s, %v; want a v1beta1 ExecCredential with the token and its refresh time", out, err)
	}
	_, errOut, code := e.oauthfs(t, "exec-credential", "--api-version", "client.authentication.k8s.io/v2", "Cloud")
	if code != 1 || !strings.Contains(errOut, "is not one this plugin speaks") {
		t.Errorf("an unknown apiVersion: exit %d, %s", code, errOut)
	}
}

// TestToolsDockerCredentialHelper: the docker credential-helper protocol,
// through a link named docker-credential-oauthfs, with the JSON exchanges
// docker's documentation gives.
func TestToolsDockerCredentialHelper(t *testing.T) {
	e := newToolsEnv(t, time.Hour)
	access, _, _ := e.seedOpenID(t, 3600)
	helper := filepath.Join(e.dir, "bin", "docker-credential-oauthfs")
	os.MkdirAll(filepath.Dir(helper), 0o755)
	if err := os.Symlink(binary, helper); err != nil {
		t.Fatal(err)
	}
	call := func(action, stdin string) (string, string, int) {
		cmd := exec.Command(helper, action)
		cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+e.socket)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	for _, server := range []string{"ghcr.io", "https://ghcr.io/v2/", "registry.example.test:5000"} {
		out, errOut, code := call("get", server+"\n")
		var got struct{ ServerURL, Username, Secret string }
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.ServerURL != server || got.Username != "oauth2accesstoken" || got.Secret != access {
			t.Errorf("get %s: exit %d, %q, %s; want the Cloud token", server, code, out, errOut)
		}
	}
	out, _, code := call("get", "docker.io\n")
	if code != 1 || strings.TrimSpace(out) != "credentials not found in native keychain" {
		t.Errorf("get of a registry no integration names: exit %d, %q; want docker's not-found answer", code, out)
	}
	out, _, code = call("list", "")
	if code != 0 || strings.TrimSpace(out) != `{"ghcr.io":"oauth2accesstoken","registry.example.test:5000":"oauth2accesstoken"}` {
		t.Errorf("list: exit %d, %q", code, out)
	}
	for _, action := range []string{"store", "erase"} {
		out, errOut, code := call(action, `{"ServerURL":"ghcr.io","Username":"u","Secret":"CANARY-docker-secret"}`)
		if code == 0 || !strings.Contains(errOut, action+" refused") || strings.Contains(out+errOut, "CANARY") {
			t.Errorf("%s: exit %d, %q, %q; want a clear refusal", action, code, out, errOut)
		}
	}
	if got := e.file(t, "access_token"); got != access {
		t.Errorf("after store and erase the token is %q; want it kept", got)
	}
	// Signed out: a clear error, not a secret of someone else.
	e.oauthfs(t, "logout", "Cloud")
	out, errOut, code := call("get", "ghcr.io\n")
	if code != 4 || out != "" || !strings.Contains(errOut, "not signed in") {
		t.Errorf("get after a sign-out: exit %d, %q, %q", code, out, errOut)
	}
}

// stsAddr is where the STS stand-in listens: a loopback address of its
// own, port 443, which boto3 reaches as sts.amazonaws.com through a hosts
// file bind-mounted for it alone.
const stsAddr = "127.7.0.1:443"

// stsStandIn answers AssumeRoleWithWebIdentity as AWS STS does, after
// checking the web identity token as STS would: an RS256 JWT signed by a
// key of the provider's JWKS, issued by the provider for its client, not
// expired. The access key id it answers names the token (its "n" claim).
type stsStandIn struct {
	p    *localprovider.Provider
	mu   sync.Mutex
	seen []int // the "n" claims of the tokens it accepted
}

func (s *stsStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	fail := func(code, msg string) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>x</RequestId></ErrorResponse>`, code, msg)
	}
	if r.Form.Get("Action") != "AssumeRoleWithWebIdentity" {
		fail("InvalidAction", "only AssumeRoleWithWebIdentity")
		return
	}
	n, err := s.verify(r.Form.Get("WebIdentityToken"))
	if err != nil {
		fail("InvalidIdentityToken", err.Error())
		return
	}
	s.mu.Lock()
	s.seen = append(s.seen, n)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult>
<Credentials><AccessKeyId>ASIAIDTOKEN%06d</AccessKeyId><SecretAccessKey>stand-in-secret</SecretAccessKey><SessionToken>stand-in-session</SessionToken><Expiration>%s</Expiration></Credentials>
<SubjectFromWebIdentityToken>dev-user</SubjectFromWebIdentityToken>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/test/%s</Arn><AssumedRoleId>AROATEST:%s</AssumedRoleId></AssumedRoleUser>
<Audience>test-client</Audience><Provider>%s</Provider>
</AssumeRoleWithWebIdentityResult>
<ResponseMetadata><RequestId>stand-in</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`, n, time.Now().Add(time.Hour).UTC().Format(time.RFC3339), r.Form.Get("RoleSessionName"), r.Form.Get("RoleSessionName"), s.p.URL)
}

// verify checks a JWT as STS checks a web identity token and returns its
// "n" claim.
func (s *stsStandIn) verify(jwt string) (int, error) {
	var claims struct {
		Iss string
		Aud string
		Exp int64
		N   int
	}
	if err := verifyJWT(s.p.URL+"/jwks", jwt, &claims); err != nil {
		return 0, err
	}
	switch {
	case claims.Iss != s.p.URL || claims.Aud != s.p.ClientID:
		return 0, errors.New("wrong issuer or audience")
	case time.Now().Unix() >= claims.Exp:
		return 0, errors.New("the token has expired")
	}
	return claims.N, nil
}

// verifyJWT checks that jwt is signed (RS256) by a key of the JWKS at
// jwksURL, and decodes its claims into claims.
func verifyJWT(jwksURL, jwt string, claims any) error {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	var head struct{ Alg, Kid string }
	for i, v := range []any{&head, claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, v) != nil {
			return errors.New("malformed JWT")
		}
	}
	resp, err := http.Get(jwksURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kid, Kty, N, E string }
	}
	json.NewDecoder(resp.Body).Decode(&set)
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	for _, k := range set.Keys {
		if k.Kty != "RSA" || k.Kid != head.Kid || head.Alg != "RS256" {
			continue
		}
		nb, _ := base64.RawURLEncoding.DecodeString(k.N)
		eb, _ := base64.RawURLEncoding.DecodeString(k.E)
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) == nil {
			return nil
		}
	}
	return errors.New("the signature does not verify with the issuer's keys")
}

// TestToolsBoto3WebIdentity: Debian's boto3, with AWS_WEB_IDENTITY_TOKEN_FILE
// pointing at the mount's id_token, gets AWS credentials from an STS
// stand-in that verifies the ID token against the provider's keys; and
// again, with the new ID token, after a refresh.
//
// Debian's botocore (1.29) predates AWS_ENDPOINT_URL_STS, so boto3 is
// sent to the stand-in the way a real network would: the STS host names
// resolve to it through a hosts file bind-mounted in a mount namespace of
// the python process alone, and AWS_CA_BUNDLE trusts its certificate.
func TestToolsBoto3WebIdentity(t *testing.T) {
	requireE2E(t, os.Geteuid() == 0, "root (a mount namespace with its own /etc/hosts)")
	_, err := exec.LookPath("unshare")
	requireE2E(t, err == nil, "unshare (util-linux)")
	requireE2E(t, exec.Command("/usr/bin/python3", "-c", "import boto3").Run() == nil, "python3-boto3")
	e := newToolsEnv(t, 8*time.Second)
	e.seedOpenID(t, 8)

	// The stand-in's certificate, for both names boto3 may use.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "oauthfs test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sts.amazonaws.com"},
		DNSNames: []string{"sts.amazonaws.com", "sts.us-east-1.amazonaws.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &key.PublicKey, caKey)
	caFile := filepath.Join(e.dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	l, err := net.Listen("tcp", stsAddr)
	if err != nil {
		t.Fatalf("the STS stand-in cannot listen on %s: %v", stsAddr, err)
	}
	sts := &stsStandIn{p: e.p}
	srv := &http.Server{Handler: sts, TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	hosts := filepath.Join(e.dir, "hosts")
	host, _, _ := net.SplitHostPort(stsAddr)
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"+host+" sts.amazonaws.com sts.us-east-1.amazonaws.com\n"), 0o644)

	idFile := filepath.Join(e.mnt, "by-name", "Cloud", "id_token")
	assume := func() string {
		t.Helper()
		script := `import boto3; c = boto3.Session().get_credentials().get_frozen_credentials(); print(c.access_key)`
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$1" /etc/hosts && exec /usr/bin/python3 -c "$2"`, "sh", hosts, script)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + e.dir, "AWS_WEB_IDENTITY_TOKEN_FILE=" + idFile,
			"AWS_ROLE_ARN=arn:aws:iam::123456789012:role/test", "AWS_ROLE_SESSION_NAME=oauthfs-test", "AWS_REGION=us-east-1",
			"AWS_CA_BUNDLE=" + caFile, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("boto3: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	first := assume()
	old := e.file(t, "id_token")
	waitFor(t, func() bool { b, err := os.ReadFile(idFile); return err == nil && string(b) != old })
	second := assume()
	sts.mu.Lock()
	seen := append([]int(nil), sts.seen...)
	sts.mu.Unlock()
	t.Logf("boto3's access keys: %s, then %s after the ID token's refresh; ID tokens the stand-in verified: %v", first, second, seen)
	if len(seen) != 2 || seen[1] <= seen[0] || first != fmt.Sprintf("ASIAIDTOKEN%06d", seen[0]) || second != fmt.Sprintf("ASIAIDTOKEN%06d", seen[1]) {
		t.Errorf("boto3 got %q then %q; the stand-in verified ID tokens %v; want two, the second newer", first, second, seen)
	}
}
