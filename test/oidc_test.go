package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

const oidcSecret = "CANARY-oidc-client-secret-5e1d"

// oidcServer is oidc-provider running from test/oidc.
type oidcServer struct {
	url string
}

// startOIDC starts oidc-provider with the callback redirect and extra
// environment (see server.mjs).
func startOIDC(t *testing.T, redirect string, env ...string) *oidcServer {
	t.Helper()
	_, err := exec.LookPath("node")
	requireE2E(t, err == nil, "node")
	_, err = os.Stat("oidc/node_modules/oidc-provider")
	requireE2E(t, err == nil, "test/oidc/node_modules (npm ci)")
	addr := freeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	cmd := exec.Command("node", "server.mjs")
	cmd.Dir = "oidc"
	cmd.Env = append(os.Environ(), "PORT="+port, "REDIRECT_URI="+redirect, "CLIENT_SECRET="+oidcSecret, "ACCESS_TTL=10")
	cmd.Env = append(cmd.Env, env...)
	out, _ := cmd.StdoutPipe()
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("oidc-provider exited:\n%s", stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("oidc-provider not ready after 30s:\n%s", stderr)
	}
	return &oidcServer{url: "http://" + addr}
}

type oidcStats struct {
	Refreshes           int     `json:"refreshes"`
	ActiveRefreshTokens int     `json:"active_refresh_tokens"`
	DevicePolls         []int64 `json:"device_polls"` // ms since the epoch
}

func (o *oidcServer) stats(t *testing.T) oidcStats {
	t.Helper()
	resp, err := http.Get(o.url + "/test/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s oidcStats
	json.NewDecoder(resp.Body).Decode(&s)
	return s
}

// userinfo asks the provider whether it accepts token; it returns the sub.
func (o *oidcServer) userinfo(t *testing.T, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", o.url+"/me", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var claims struct{ Sub string }
	json.NewDecoder(resp.Body).Decode(&claims)
	return resp.StatusCode, claims.Sub
}

// oidcEnv starts oidc-provider with the extra environment env and writes
// a config for it with two integrations, Demo (which can also sign in
// with the device grant) and Other; it returns the env.
func oidcEnv(t *testing.T, env ...string) (*cliEnv, *oidcServer) {
	t.Helper()
	fusetest.Require(t)
	dir := t.TempDir()
	e := &cliEnv{dir: dir, mnt: filepath.Join(dir, "oauth"), cfg: filepath.Join(dir, "config.toml"), socket: filepath.Join(dir, "run", "broker.sock")}
	os.Mkdir(e.mnt, 0o700)
	web := freeAddr(t)
	o := startOIDC(t, "http://"+web+"/callback", env...)
	cfg := fmt.Sprintf(`
[broker]
socket = %q
listen = %q
callback_url = "http://%s/callback"
state_dir = %q
request_timeout = "5s"

# Demo names only its issuer: its endpoints come from oidc-provider's
# metadata, and its sign-ins check the iss of each authorization
# response (RFC 9207), which oidc-provider sends.
[[integration]]
name = "Demo"
client_id = "oauthfs"
client_secret = %q
issuer = "%s"
scopes = ["openid", "offline_access", "api:read"]
auth_params = { prompt = "consent", resource = "https://api.example.test" }

# A token for the resource server the sign-in named (RFC 8707).
[[integration.token]]
name = "api"
resource = "https://api.example.test"

[[integration]]
name = "Other"
display_name = "Other API"
client_id = "oauthfs"
client_secret = %q
auth_url = "%s/auth"
token_url = "%s/token"
revocation_url = "%s/token/revocation"
scopes = ["openid", "offline_access"]
auth_params = { prompt = "consent" }
`, e.socket, web, web, filepath.Join(dir, "state"), oidcSecret, o.url, oidcSecret, o.url, o.url, o.url)
	os.WriteFile(e.cfg, []byte(cfg), 0o600)
	return e, o
}

var (
	actionRE = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)"`)
)

// signInWithForms completes oidc-provider's login and consent forms for
// the sign-in link u, as a browser would, and returns the last response:
// the callback page, or, when stopAtCallback, the redirect to it.
func signInWithForms(t *testing.T, u string, stopAtCallback bool) (*http.Client, *http.Response) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	if stopAtCallback {
		c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if req.URL.Path == "/callback" {
				return http.ErrUseLastResponse
			}
			return nil
		}
	}
	resp := openSignIn(t, c, u)
	resp = submitForm(t, c, resp, url.Values{"prompt": {"login"}, "login": {"alice"}, "password": {"wonderland"}})
	resp = submitForm(t, c, resp, url.Values{"prompt": {"consent"}})
	if !stopAtCallback {
		resp = confirmSignIn(t, c, resp)
	}
	return c, resp
}

// login runs 'oauthfs login --no-browser' and completes the sign-in with
// HTTP forms; it returns login's stdout.
func login(t *testing.T, e *cliEnv) string {
	t.Helper()
	cmd := exec.Command(binary, "login", "--no-browser", "--broker", e.socket, "Demo")
	out, _ := cmd.StdoutPipe()
	errb := &testutil.SyncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		cmd.Wait()
		t.Fatalf("login printed no URL; stderr:\n%s", errb)
	}
	link := sc.Text()
	if !strings.HasPrefix(link, "http://") {
		t.Fatalf("login's first line = %q; want the sign-in URL", link)
	}
	_, resp := signInWithForms(t, link, false)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Signed in to Demo") {
		t.Fatalf("callback page = %d:\n%s", resp.StatusCode, page)
	}
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("login: %v\nstdout: %s\nstderr: %s", err, rest.String(), errb)
	}
	return rest.String()
}

func readToken(e *cliEnv) (string, error) {
	b, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Demo", "access_token"))
	return string(b), err
}

func metaStatus(t *testing.T, e *cliEnv) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Demo", "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

// TestConformanceOIDCProvider runs the whole sign-in, refresh, restart,
// sign-out and revocation sequence against oidc-provider.
func TestConformanceOIDCProvider(t *testing.T) {
	e, o := oidcEnv(t)
	m := e.startMount(t)

	if out := login(t, e); out != "signed in to Demo as alice\n" {
		t.Fatalf("login output = %q", out)
	}
	first, err := readToken(e)
	if err != nil {
		t.Fatal(err)
	}
	if code, sub := o.userinfo(t, first); code != 200 || sub != "alice" {
		t.Fatalf("userinfo with the mounted token = %d %q; want 200 alice", code, sub)
	}
	if meta := metaStatus(t, e); meta["status"] != "signed_in" || !strings.Contains(fmt.Sprint(meta["granted_scopes"]), "offline_access") {
		t.Errorf("meta = %v", meta)
	}
	// Demo was configured from its issuer alone: the sign-in above used
	// the endpoints of oidc-provider's metadata, and checked the iss of
	// its authorization response (RFC 9207), which oidc-provider says it
	// sends.
	if meta := metaStatus(t, e); meta["issuer"] != o.url || meta["auth_url"] != o.url+"/auth" || meta["token_url"] != o.url+"/token" {
		t.Errorf("meta of an integration configured by its issuer = %v", meta)
	}
	var md map[string]any
	if resp, err := http.Get(o.url + "/.well-known/openid-configuration"); err == nil {
		json.NewDecoder(resp.Body).Decode(&md)
		resp.Body.Close()
	}
	if md["authorization_response_iss_parameter_supported"] != true {
		t.Errorf("oidc-provider does not say it sends iss: the RFC 9207 check was not exercised (%v)", md["authorization_response_iss_parameter_supported"])
	}

	jwks := fmt.Sprint(md["jwks_uri"])
	t.Run("ID token and a resource's token", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Demo", "id_token"))
		var id struct{ Iss, Aud, Sub string }
		if err != nil || verifyJWT(jwks, string(raw), &id) != nil || id.Iss != o.url || id.Aud != "oauthfs" || id.Sub != "alice" {
			t.Errorf("id_token: %v, %+v; want oidc-provider's ID token for alice", err, id)
		}
		raw, err = os.ReadFile(filepath.Join(e.mnt, "by-name", "Demo", "tokens", "api", "access_token"))
		var at struct {
			Aud   string
			Scope string
		}
		if err != nil || verifyJWT(jwks, string(raw), &at) != nil || at.Aud != "https://api.example.test" || at.Scope != "api:read" {
			t.Errorf("tokens/api/access_token: %v, %+v; want a JWT for https://api.example.test with api:read", err, at)
		}
		if code, _ := o.userinfo(t, first); code != 200 {
			t.Errorf("the main token after the variant's refresh: userinfo %d; want it still good", code)
		}
		// Refused before it is sent: oidc-provider spends the refresh
		// token (rotation) before it refuses a resource.
		before := o.stats(t).Refreshes
		out, errOut, code := e.oauthfs(t, "token", "--resource", "https://other.example.test", "Demo")
		if code != 1 || out != "" || !strings.Contains(errOut, "may not ask for tokens for https://other.example.test") || o.stats(t).Refreshes != before {
			t.Errorf("a resource the configuration does not list: exit %d, %q, %s; want refused before any request", code, out, errOut)
		}
		if _, err := readToken(e); err != nil {
			t.Errorf("after the refusal: %v", err)
		}
	})

	t.Run("refresh after expiry", func(t *testing.T) {
		before := o.stats(t).Refreshes
		var next string
		waitFor(t, func() bool {
			next, err = readToken(e)
			return err == nil && next != first
		})
		if code, sub := o.userinfo(t, next); code != 200 || sub != "alice" {
			t.Errorf("userinfo with the refreshed token = %d %q", code, sub)
		}
		if n := o.stats(t).Refreshes - before; n != 1 {
			t.Errorf("provider saw %d refreshes; want 1", n)
		}
		first = next
		// The refresh brought a new ID token, which id_token shows.
		raw, _ := os.ReadFile(filepath.Join(e.mnt, "by-name", "Demo", "id_token"))
		var id struct{ Iat int64 }
		if verifyJWT(jwks, string(raw), &id) != nil || time.Since(time.Unix(id.Iat, 0)) > 15*time.Second {
			t.Errorf("id_token after the refresh was issued at %v; want the refresh's", time.Unix(id.Iat, 0))
		}
	})

	// Restart the mount process (at this level, so that the new mount
	// lives until the test ends).
	m.cmd.Process.Signal(syscall.SIGTERM)
	<-m.done
	m = e.startMount(t)
	t.Run("survives a restart", func(t *testing.T) {
		got, err := readToken(e)
		if err != nil {
			t.Fatalf("after restart: %v", err)
		}
		if code, _ := o.userinfo(t, got); code != 200 {
			t.Errorf("userinfo after restart = %d", code)
		}
		// And the persisted (rotated) refresh token still works.
		before := o.stats(t).Refreshes
		waitFor(t, func() bool { next, err := readToken(e); return err == nil && next != got })
		if n := o.stats(t).Refreshes - before; n != 1 {
			t.Errorf("provider saw %d refreshes after restart; want 1", n)
		}
	})

	t.Run("forged, replayed and foreign callbacks", func(t *testing.T) {
		web := strings.TrimSuffix(strings.TrimPrefix(mustRead(t, e.cfg, `callback_url = "`), "http://"), "/callback")
		resp, err := http.Get("http://" + web + "/callback?state=forged&code=x")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 400 {
			t.Errorf("forged callback = %d; want 400", resp.StatusCode)
		}
		// A real flow, stopped at the redirect back to oauthfs.
		cmd := exec.Command(binary, "login", "--no-browser", "--broker", e.socket, "Demo")
		out, _ := cmd.StdoutPipe()
		cmd.Start()
		sc := bufio.NewScanner(out)
		sc.Scan()
		c, redirect := signInWithForms(t, sc.Text(), true)
		cb := redirect.Header.Get("Location")
		redirect.Body.Close()
		// Another browser (no binding cookie) is refused and burns nothing.
		if resp, _ := http.Get(cb); resp.StatusCode != 403 {
			t.Errorf("callback from another browser = %d; want 403", resp.StatusCode)
		}
		final, _ := c.Get(cb)
		if final.StatusCode != 200 {
			t.Errorf("callback from the starting browser = %d; want 200", final.StatusCode)
		}
		if resp, _ := c.Get(cb); resp.StatusCode != 400 {
			t.Errorf("replayed callback = %d; want 400", resp.StatusCode)
		}
		if resp := confirmSignIn(t, c, final); resp.StatusCode != 200 {
			t.Errorf("confirmation = %d; want 200", resp.StatusCode)
		}
		cmd.Wait()
	})

	t.Run("logout revokes", func(t *testing.T) {
		// The provider may hold other grants (the callback test above signed
		// in again, which oauthfs does not revoke: see README); exactly the
		// one oauthfs held must go.
		before := o.stats(t).ActiveRefreshTokens
		if before < 1 {
			t.Fatalf("active refresh tokens before logout = %d", before)
		}
		out, errOut, code := e.oauthfs(t, "logout", "Demo")
		if code != 0 || out != "signed out of Demo\n" || errOut != "" {
			t.Errorf("logout = %q %q (exit %d)", out, errOut, code)
		}
		if _, err := readToken(e); !errors.Is(err, syscall.ENOKEY) {
			t.Errorf("read after logout = %v; want ENOKEY", err)
		}
		if after := o.stats(t).ActiveRefreshTokens; after != before-1 {
			t.Errorf("active refresh tokens %d -> %d after logout; want the one oauthfs held revoked", before, after)
		}
	})

	t.Run("revoked at the provider", func(t *testing.T) {
		login(t, e)
		if _, err := readToken(e); err != nil {
			t.Fatal(err)
		}
		http.Post(o.url+"/test/revoke-all", "text/plain", nil)
		waitFor(t, func() bool { _, err := readToken(e); return errors.Is(err, syscall.EKEYEXPIRED) })
		meta := metaStatus(t, e)
		if meta["status"] != "expired" || !strings.Contains(fmt.Sprint(meta["error"]), "sign in again") {
			t.Errorf("meta = %v; want expired, sign in again", meta)
		}
	})

	m.cmd.Process.Signal(syscall.SIGTERM)
	<-m.done
	for _, s := range []string{oidcSecret} {
		if strings.Contains(m.stderr.String(), s) {
			t.Errorf("mount logs contain the client secret")
		}
	}
}
