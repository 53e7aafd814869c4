package signin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

const uid = 1000

func read(t *testing.T, tok *credential.Token) string {
	t.Helper()
	buf := make([]byte, tok.Len()+10)
	n, err := tok.ReadAt(buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

type signinFixture struct {
	b    *broker.Broker
	s    *Table
	p    *localprovider.Provider
	web  *httptest.Server
	clk  testutil.Clock
	logs *testutil.SyncBuffer
}

// newSigninFixture is a broker and its sign-in table, on a test provider;
// extra lines go into the integration's table, with {provider} standing
// for the provider's URL.
func newSigninFixture(t *testing.T, extra ...string) *signinFixture {
	t.Helper()
	f := &signinFixture{p: localprovider.New(), logs: &testutil.SyncBuffer{}}
	t.Cleanup(f.p.Close)
	var handler atomic.Value
	f.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(f.web.Close)
	src := fmt.Sprintf(`
[broker]
state_dir = ""
callback_url = "%s/callback"
request_timeout = "2s"
[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "%s/authorize"
token_url = "%s/token"
revocation_url = "%s/revoke"
scopes = ["read"]
auth_params = { access_type = "offline", prompt = "consent" }
%s
`, f.web.URL, f.p.URL, f.p.URL, f.p.URL, strings.ReplaceAll(strings.Join(extra, "\n"), "{provider}", f.p.URL))
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "c.toml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if f.b, err = broker.New(cfg, broker.Options{Now: f.clk.Now, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if f.s, err = New(f.b, cfg.Settings.CallbackURL, log); err != nil {
		t.Fatal(err)
	}
	handler.Store(f.s.Handler())
	return f
}

// browser is an HTTP client with a cookie jar. With follow false it stops
// at the redirect back to the broker, so the test holds the callback URL.
// clicked sets the Fetch metadata headers a browser sends with a form
// that a person submitted with a click, which no page script can set.
func clicked(req *http.Request) {
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	req.Header.Set("Sec-Fetch-User", "?1")
	req.Header.Set("Sec-Fetch-Dest", "document")
}

func browser(follow bool) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	if !follow {
		c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if strings.HasSuffix(req.URL.Path, "/callback") {
				return http.ErrUseLastResponse
			}
			return nil
		}
	}
	return c
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// press opens the start link u in browser c, as a person would, and
// presses the confirmation page's button action (continue or cancel). It
// returns the last response.
func press(t *testing.T, c *http.Client, u, action string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(page, []byte(`action="/start"`)) {
		t.Fatalf("start page = %d %q", resp.StatusCode, page)
	}
	form := url.Values{"action": {action}}
	for _, m := range hiddenRE.FindAllSubmatch(page, -1) {
		form.Set(string(m[1]), string(m[2]))
	}
	start, _ := url.Parse(u)
	start.RawQuery = ""
	resp, err = c.PostForm(start.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// signInAll completes a sign-in from its start link in a new browser,
// saying yes to the final confirmation, and returns the last page.
func signInAll(t *testing.T, u string) (int, string) {
	t.Helper()
	c := browser(true)
	resp := press(t, c, u, "continue")
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`action="/confirm"`)) {
		return resp.StatusCode, string(b)
	}
	return confirm(t, c, resp.Request.URL, string(b), "confirm")
}

// callback follows the provider's redirect back to the broker (cb) in
// browser c and, when the broker asks for the final confirmation, says
// yes, as the user would. It returns the last page.
func callback(t *testing.T, c *http.Client, cb string) (int, string) {
	t.Helper()
	code, page := get(t, c, cb)
	if code != 200 || !strings.Contains(page, `action="/confirm"`) {
		return code, page
	}
	u, _ := url.Parse(cb)
	return confirm(t, c, u, page, "confirm")
}

// confirm presses the button action (confirm or refuse) of the final
// confirmation page, shown at u, as the browser would: with its Origin.
func confirm(t *testing.T, c *http.Client, u *url.URL, page, action string) (int, string) {
	t.Helper()
	form := url.Values{"action": {action}}
	for _, m := range hiddenRE.FindAllStringSubmatch(page, -1) {
		form.Set(m[1], m[2])
	}
	req, _ := http.NewRequest("POST", u.Scheme+"://"+u.Host+"/confirm", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", u.Scheme+"://"+u.Host)
	clicked(req)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startTo runs a sign-in up to the redirect back to the broker and
// returns the browser, the callback URL and the sign-in.
func (f *signinFixture) startTo(t *testing.T, uid int) (*http.Client, string, *Link) {
	t.Helper()
	si, err := f.s.Start(uid, "Test")
	if err != nil {
		t.Fatal(err)
	}
	c := browser(false)
	resp := press(t, c, si.URL, "continue")
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("sign-in flow stopped with HTTP %d", resp.StatusCode)
	}
	return c, resp.Header.Get("Location"), si
}

func (f *signinFixture) status(t *testing.T, uid int, si *Link) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := f.s.Wait(ctx, uid, si.ID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSignIn(t *testing.T) {
	f := newSigninFixture(t)
	si, err := f.s.Start(uid, "Test")
	if err != nil {
		t.Fatal(err)
	}
	code, body := signInAll(t, si.URL)
	if code != 200 || !strings.Contains(body, "Signed in to Test") {
		t.Fatalf("sign-in page = %d %q", code, body)
	}
	if st := f.status(t, uid, si); st.Status != "signed_in" {
		t.Errorf("status = %+v; want signed_in", st)
	}
	q := f.p.LastAuthorize()
	for k, want := range map[string]string{"access_type": "offline", "prompt": "consent", "code_challenge_method": "S256", "scope": "read", "response_type": "code"} {
		if q.Get(k) != want {
			t.Errorf("authorization request %s = %q; want %q", k, q.Get(k), want)
		}
	}
	if len(q.Get("state")) < 40 || q.Get("redirect_uri") != f.web.URL+"/callback" {
		t.Errorf("state %q, redirect_uri %q", q.Get("state"), q.Get("redirect_uri"))
	}
	tok, err := f.b.Token(context.Background(), uid, "Test")
	if err != nil || !f.p.Issued(read(t, tok)) {
		t.Fatalf("Token after sign-in = %v", err)
	}
	m, _ := f.b.Integration(uid, "Test")
	if m.Status != credential.StatusSignedIn || strings.Join(m.GrantedScopes, " ") != "read write" {
		t.Errorf("meta = %+v; want signed_in with granted scopes from the token response", m)
	}
	// Sign-out revokes the refresh token at the provider.
	active := f.p.ActiveRefreshTokens()
	res, err := f.b.Logout(context.Background(), uid, "Test")
	if err != nil || !res.SignedOut || !res.Revoked || f.p.ActiveRefreshTokens() != active-1 {
		t.Errorf("Logout = %+v, %v; active refresh tokens %d -> %d", res, err, active, f.p.ActiveRefreshTokens())
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("Token after logout = %v; want ErrNotSignedIn", err)
	}
	logs := f.logs.String()
	for _, secret := range []string{"tok-at-", "tok-rt-", "code-", "test-secret", q.Get("code_challenge")} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q", secret)
		}
	}
}

func TestSignInRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		run    func(t *testing.T, f *signinFixture) (int, string, *Link)
		code   int
		page   string
		status State // of the sign-in afterwards
	}{
		{"missing state", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			c, b := get(t, browser(true), f.web.URL+"/callback?code=x")
			return c, b, nil
		}, 400, "no state parameter", ""},
		{"forged state", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			c, b := get(t, browser(true), f.web.URL+"/callback?code=x&state=forged")
			return c, b, nil
		}, 400, "unknown", ""},
		{"replayed", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			br, cb, si := f.startTo(t, uid)
			if c, _ := callback(t, br, cb); c != 200 {
				t.Fatalf("first callback = %d", c)
			}
			c, b := callback(t, br, cb)
			return c, b, si
		}, 400, "already completed", "signed_in"},
		{"another browser", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			br, cb, si := f.startTo(t, uid)
			c, b := callback(t, browser(true), cb)
			// Not consumed: the right browser still finishes it.
			if c2, b2 := callback(t, br, cb); c2 != 200 || !strings.Contains(b2, "Signed in") {
				t.Errorf("the starting browser after a refused one: %d %q", c2, b2)
			}
			return c, b, si
		}, 403, "started in another browser", "signed_in"},
		{"expired", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			br, cb, si := f.startTo(t, uid)
			f.clk.Advance(lifetime + time.Minute)
			c, b := callback(t, br, cb)
			return c, b, si
		}, 400, "expired", "failed"},
		{"access denied", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			f.p.SetDeny(true)
			br, cb, si := f.startTo(t, uid)
			c, b := callback(t, br, cb)
			return c, b, si
		}, 403, "access_denied (The user said no)", "failed"},
		{"code rejected", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			br, cb, si := f.startTo(t, uid)
			u, _ := url.Parse(cb)
			q := u.Query()
			q.Set("code", "code-forged")
			u.RawQuery = q.Encode()
			c, b := callback(t, br, u.String())
			return c, b, si
		}, 400, "invalid_grant", "failed"},
		{"provider down", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			br, cb, si := f.startTo(t, uid)
			f.p.Close()
			c, b := callback(t, br, cb)
			return c, b, si
		}, 502, "token endpoint unreachable", "failed"},
		{"provider error page", func(t *testing.T, f *signinFixture) (int, string, *Link) {
			br, cb, si := f.startTo(t, uid)
			f.p.SetMode(localprovider.HTML)
			c, b := callback(t, br, cb)
			return c, b, si
		}, 502, "malformed", "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSigninFixture(t)
			code, body, si := tc.run(t, f)
			if code != tc.code || !strings.Contains(body, tc.page) {
				t.Errorf("callback = %d %q; want %d with %q", code, body, tc.code, tc.page)
			}
			if si != nil {
				if st := f.status(t, uid, si); st.Status != tc.status {
					t.Errorf("sign-in status = %+v; want %s", st, tc.status)
				}
			}
			if tc.status != "signed_in" {
				if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
					t.Errorf("Token = %v; want nothing stored", err)
				}
			}
		})
	}
}

func TestSignInBoundToUser(t *testing.T) {
	f := newSigninFixture(t)
	si, _ := f.s.Start(uid, "Test")
	if _, err := f.s.Wait(context.Background(), uid+1, si.ID); !errors.Is(err, credential.ErrNotFound) {
		t.Errorf("another user's WaitSignIn = %v; want ErrNotFound", err)
	}
	if err := f.s.Cancel(uid+1, si.ID); !errors.Is(err, credential.ErrNotFound) {
		t.Errorf("another user's CancelSignIn = %v; want ErrNotFound", err)
	}
	signInAll(t, si.URL)
	if _, err := f.b.Token(context.Background(), uid+1, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("the other user got credentials: %v", err)
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); err != nil {
		t.Errorf("the starting user: %v", err)
	}
}

func TestSignInsRacing(t *testing.T) {
	f := newSigninFixture(t)
	b1, cb1, si1 := f.startTo(t, uid)
	b2, cb2, si2 := f.startTo(t, uid)
	if c, _ := callback(t, b2, cb2); c != 200 {
		t.Fatalf("second sign-in = %d", c)
	}
	first, _ := f.b.Token(context.Background(), uid, "Test")
	if c, _ := callback(t, b1, cb1); c != 200 {
		t.Fatalf("first sign-in = %d", c)
	}
	last, err := f.b.Token(context.Background(), uid, "Test")
	if err != nil || read(t, last) == read(t, first) {
		t.Errorf("the sign-in completed last should win")
	}
	if f.status(t, uid, si1).Status != "signed_in" || f.status(t, uid, si2).Status != "signed_in" {
		t.Errorf("both sign-ins should report success")
	}
}

func TestCancelSignIn(t *testing.T) {
	f := newSigninFixture(t)
	br, cb, si := f.startTo(t, uid)
	if err := f.s.Cancel(uid, si.ID); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t, uid, si); st.Status != "failed" || st.Message != "cancelled" {
		t.Errorf("status = %+v", st)
	}
	if c, b := callback(t, br, cb); c != 400 || !bytes.Contains([]byte(b), []byte("has ended (cancelled)")) {
		t.Errorf("callback after cancel = %d %q", c, b)
	}
}

func TestLogoutRevocationFailureStillSignsOut(t *testing.T) {
	f := newSigninFixture(t)
	si, _ := f.s.Start(uid, "Test")
	signInAll(t, si.URL)
	f.p.Close()
	res, err := f.b.Logout(context.Background(), uid, "Test")
	if err != nil || !res.SignedOut || res.Revoked || !strings.Contains(res.RevocationError, "unreachable") {
		t.Errorf("Logout = %+v, %v; want signed out, revocation error", res, err)
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("Token = %v; want ErrNotSignedIn", err)
	}
}

// TestSignInCapIsPerUser: one user starting and cancelling sign-ins, or
// holding many open, cannot stop another user from signing in.
func TestSignInCapIsPerUser(t *testing.T) {
	f := newSigninFixture(t)
	for i := 0; i < maxSignIns/8; i++ { // well past the old global cap of 1,000
		si, err := f.s.Start(uid, "Test")
		if err != nil {
			t.Fatalf("sign-in #%d = %v; finished ones must free their slot at once", i+1, err)
		}
		f.s.Cancel(uid, si.ID)
	}
	for i := 0; i < maxSignInsPerUser; i++ {
		if _, err := f.s.Start(uid, "Test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.s.Start(uid, "Test"); !errors.Is(err, credential.ErrSignIn) || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("a sign-in past the user's cap = %v; want refused", err)
	}
	if _, err := f.s.Start(uid+1, "Test"); err != nil {
		t.Errorf("another user's sign-in = %v; want it to work", err)
	}
	if n := len(f.s.ended); n > maxEnded {
		t.Errorf("%d ended sign-ins kept; want at most %d", n, maxEnded)
	}
}

// TestStartPageConfirmsWhoAndWhere: the start link shows whom the tokens
// will go to before anything happens, and only its own form, from the
// browser it was shown to, continues.
func TestStartPageConfirmsWhoAndWhere(t *testing.T) {
	f := newSigninFixture(t)
	si, _ := f.s.Start(uid, "Test")
	c := browser(false)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	code, page := get(t, c, si.URL)
	if code != 200 || !strings.Contains(page, "Sign in to Test for user "+userName(uid)+" on host "+hostName()) ||
		f.p.LastAuthorize() != nil {
		t.Fatalf("start page = %d %q; want the confirmation naming user and host, and no request to the provider yet", code, page)
	}
	fields := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(page, -1) {
		fields.Set(m[1], m[2])
	}
	post := func(c *http.Client, form url.Values, origin string) int {
		req, _ := http.NewRequest("POST", f.web.URL+"/start", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	noCSRF := url.Values{"state": {fields.Get("state")}, "action": {"continue"}}
	if code := post(c, noCSRF, ""); code != 403 {
		t.Errorf("POST without the csrf field = %d; want 403", code)
	}
	full := url.Values{"state": {fields.Get("state")}, "csrf": {fields.Get("csrf")}, "action": {"continue"}}
	if code := post(c, full, "https://evil.example"); code != 403 {
		t.Errorf("POST from a foreign origin = %d; want 403", code)
	}
	other := browser(false)
	other.CheckRedirect = c.CheckRedirect
	if code := post(other, full, ""); code != 403 {
		t.Errorf("POST from another browser = %d; want 403", code)
	}
	if f.p.LastAuthorize() != nil {
		t.Fatal("a refused POST reached the provider")
	}
	if code := post(c, full, f.web.URL); code != http.StatusSeeOther {
		t.Errorf("Continue = %d; want 303 to the provider", code)
	}
}

// TestStartLinkWorksForOneBrowser: a second browser opening the start link
// is refused, and the sign-in fails, so the waiting command says so.
func TestStartLinkWorksForOneBrowser(t *testing.T) {
	f := newSigninFixture(t)
	si, _ := f.s.Start(uid, "Test")
	first := browser(true)
	if code, _ := get(t, first, si.URL); code != 200 {
		t.Fatalf("first visit = %d", code)
	}
	if code, _ := get(t, first, si.URL); code != 200 {
		t.Errorf("a reload in the same browser = %d; want the page again", code)
	}
	code, page := get(t, browser(true), si.URL)
	if code != 400 || !strings.Contains(page, "already opened in another browser") {
		t.Errorf("second browser = %d %q; want it refused", code, page)
	}
	st := f.status(t, uid, si)
	if st.Status != Failed || !strings.Contains(st.Message, "second browser") {
		t.Errorf("sign-in status = %+v; want failed, naming the second browser", st)
	}
}

// TestSignInNamesTheAccount: the waiting command and the callback page say
// which provider account signed in.
func TestSignInNamesTheAccount(t *testing.T) {
	f := newSigninFixture(t, `userinfo_url = "{provider}/userinfo"`)
	si, _ := f.s.Start(uid, "Test")
	code, page := signInAll(t, si.URL)
	if code != 200 || !strings.Contains(page, "Signed in to Test as dev-user") {
		t.Errorf("callback page = %d %q; want it to name the account", code, page)
	}
	if st := f.status(t, uid, si); st.Account != "dev-user" {
		t.Errorf("sign-in status = %+v; want account dev-user", st)
	}
	if m, _ := f.b.Integration(uid, "Test"); m.Account == nil || *m.Account != "dev-user" {
		t.Errorf("meta account = %v; want dev-user", m.Account)
	}
}

// TestCallbackStoresNothingUntilConfirmed: the provider's answer is held
// until the browser's user says yes on the final page, from that page.
func TestCallbackStoresNothingUntilConfirmed(t *testing.T) {
	f := newSigninFixture(t)
	br, cb, si := f.startTo(t, uid)
	code, page := get(t, br, cb)
	if code != 200 || !strings.Contains(page, `action="/confirm"`) || !strings.Contains(page, "to user "+userName(uid)+" on host "+hostName()) {
		t.Fatalf("callback = %d %q; want the final confirmation naming user and host", code, page)
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Fatalf("Token before the confirmation = %v; want nothing stored", err)
	}
	u, _ := url.Parse(cb)
	fields := url.Values{"action": {"confirm"}}
	for _, m := range hiddenRE.FindAllStringSubmatch(page, -1) {
		fields.Set(m[1], m[2])
	}
	post := func(c *http.Client, form url.Values, origin string, fetch ...string) int {
		req, _ := http.NewRequest("POST", f.web.URL+"/confirm", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		clicked(req)
		for i := 0; i+1 < len(fetch); i += 2 {
			if fetch[i+1] == "" {
				req.Header.Del(fetch[i])
			} else {
				req.Header.Set(fetch[i], fetch[i+1])
			}
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	origin := u.Scheme + "://" + u.Host
	wrong := url.Values{"action": {"confirm"}, "state": {fields.Get("state")}, "confirm": {"forged"}}
	for _, tc := range []struct {
		name   string
		c      *http.Client
		form   url.Values
		origin string
		fetch  []string // Fetch metadata that differs from a person's click
	}{
		{"no Origin", br, fields, "", []string{"Sec-Fetch-Site", ""}},
		{"a foreign Origin", br, fields, "http://127.0.0.1:1", []string{"Sec-Fetch-Site", "cross-site"}},
		{"a foreign Origin from a non-browser", br, fields, "http://127.0.0.1:1", nil},
		{"a forged nonce", br, wrong, origin, nil},
		{"another browser", browser(true), fields, origin, nil},
		// A page that shares the broker's origin: its script posts the
		// form with fetch(), or clicks Yes in a window it opened.
		{"a script's fetch", br, fields, origin, []string{"Sec-Fetch-Mode", "cors", "Sec-Fetch-User", "", "Sec-Fetch-Dest", "empty"}},
		{"a script's click", br, fields, origin, []string{"Sec-Fetch-User", ""}},
		{"no Fetch metadata", br, fields, origin, []string{"Sec-Fetch-Mode", "", "Sec-Fetch-User", "", "Sec-Fetch-Site", "", "Sec-Fetch-Dest", ""}},
	} {
		if code := post(tc.c, tc.form, tc.origin, tc.fetch...); code != 403 {
			t.Errorf("confirmation with %s = %d; want 403", tc.name, code)
		}
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Fatalf("Token after refused confirmations = %v; want nothing stored", err)
	}
	if code := post(br, fields, origin); code != 200 {
		t.Fatalf("the confirmation = %d", code)
	}
	if st := f.status(t, uid, si); st.Status != SignedIn {
		t.Errorf("status = %+v; want signed in", st)
	}
	if code := post(br, fields, origin); code != 400 && code != 403 {
		t.Errorf("a second confirmation = %d; want it refused", code)
	}
}

// TestConfirmationRefusedDropsTheTokens: No on the final page stores
// nothing and ends the sign-in.
func TestConfirmationRefusedDropsTheTokens(t *testing.T) {
	f := newSigninFixture(t)
	br, cb, si := f.startTo(t, uid)
	_, page := get(t, br, cb)
	u, _ := url.Parse(cb)
	if code, body := confirm(t, br, u, page, "refuse"); code != 200 || !strings.Contains(body, "Nothing was stored") {
		t.Errorf("refusing = %d %q", code, body)
	}
	if st := f.status(t, uid, si); st.Status != Failed || !strings.Contains(st.Message, "refused in the browser") {
		t.Errorf("status = %+v; want failed, refused", st)
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("Token after refusing = %v; want nothing stored", err)
	}
}

// TestPlantedCookieCannotStealAnAccount replays a review's attack: another
// local user starts their own sign-in, presses Continue themselves, plants
// its binding cookie in the victim's browser (cookies do not tell ports
// apart) and sends the victim to the provider. The victim's browser comes
// back with the attacker's state and cookie, and the broker only asks,
// naming the attacker's user; the attacker cannot answer for the victim.
func TestPlantedCookieCannotStealAnAccount(t *testing.T) {
	f := newSigninFixture(t)
	const mallory = uid + 1
	attacker := browser(false)
	attacker.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	si, _ := f.s.Start(mallory, "Test")
	resp := press(t, attacker, si.URL, "continue")
	resp.Body.Close()
	authorize := resp.Header.Get("Location")
	web, _ := url.Parse(f.web.URL)
	victim := browser(true)
	victim.Jar.SetCookies(web, attacker.Jar.Cookies(web)) // planted from another port of the host
	resp, err := victim.Get(authorize)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "to user "+userName(mallory)) {
		t.Fatalf("the victim's browser after the provider = %d %q; want the confirmation naming the attacker's user", resp.StatusCode, page)
	}
	// The attacker has the cookie and the state, but not the page's nonce.
	form := url.Values{"action": {"confirm"}, "state": {hiddenRE.FindStringSubmatch(string(page))[2]}, "confirm": {"guess"}}
	req, _ := http.NewRequest("POST", f.web.URL+"/confirm", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.web.URL)
	clicked(req)
	if resp, err := attacker.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("the attacker's own confirmation = %v, %v; want 403", resp.StatusCode, err)
	}
	if _, err := f.b.Token(context.Background(), mallory, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("the attacker got the victim's tokens: %v", err)
	}
}
