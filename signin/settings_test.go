package signin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

// otherIntegration is a second integration for the settings fixtures.
const otherIntegration = `
[[integration]]
name = "Other"
display_name = "Another API"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "{provider}/authorize"
token_url = "{provider}/token"
issuer = "{provider}"
scopes = ["x", "y"]
`

// settingsBrowser is a browser with its settings session: the cookie in
// its jar and the key of its page's URL.
type settingsBrowser struct {
	*http.Client
	key string
}

var forwardRE = regexp.MustCompile(`url=/settings\?s=([A-Za-z0-9_-]+)"`)

// openSettings asks for a one-time link for uid, opens it in a new
// browser and returns the browser, now holding uid's session, and the
// link.
func openSettings(t *testing.T, f *signinFixture, uid int) (*settingsBrowser, string) {
	t.Helper()
	l, err := f.s.SettingsLink(uid)
	if err != nil {
		t.Fatal(err)
	}
	c := browser(true)
	code, body := get(t, c, l.URL)
	m := forwardRE.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("one-time link = %d %q", code, body)
	}
	return &settingsBrowser{c, m[1]}, l.URL
}

// at is path with the browser's session key.
func (b *settingsBrowser) at(path string) string {
	if strings.Contains(path, "?") {
		return path + "&s=" + b.key
	}
	return path + "?s=" + b.key
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// settingsPage returns the settings page as browser c sees it, and its
// csrf token.
func settingsPage(t *testing.T, f *signinFixture, c *settingsBrowser) (int, string, string) {
	t.Helper()
	code, body := get(t, c.Client, f.web.URL+c.at("/settings"))
	csrf := ""
	if m := csrfRE.FindStringSubmatch(body); m != nil {
		csrf = m[1]
	}
	return code, body, csrf
}

// post sends a settings form from browser c with the given csrf token
// and Origin header ("" sends none) and returns the last response's
// status and body.
func post(t *testing.T, f *signinFixture, c *settingsBrowser, path, csrf, origin string, extra ...string) (int, string) {
	t.Helper()
	resp := postResp(t, f, c, path, csrf, origin, extra...)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// postResp is post, returning the last response, its body not read.
func postResp(t *testing.T, f *signinFixture, c *settingsBrowser, path, csrf, origin string, extra ...string) *http.Response {
	t.Helper()
	form := url.Values{}
	if csrf != "" {
		form.Set("csrf", csrf)
	}
	req, _ := http.NewRequest("POST", f.web.URL+c.at(path), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// guid returns the GUID of integration name.
func (f *signinFixture) guid(t *testing.T, name string) string {
	t.Helper()
	p, err := f.b.Provider(name)
	if err != nil {
		t.Fatal(err)
	}
	return p.Config().GUID.String()
}

// signIn signs uid in to integration id through the start link.
func (f *signinFixture) signIn(t *testing.T, uid int, id string) {
	t.Helper()
	si, err := f.s.Start(uid, id)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := signInAll(t, si.URL); code != 200 || !strings.Contains(body, "Signed in") {
		t.Fatalf("sign-in = %d %q", code, body)
	}
}

func TestSettingsLink(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	l, err := f.s.SettingsLink(uid)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.URL, f.web.URL+"/settings/open?key=") || len(l.URL) < len(f.web.URL)+50 {
		t.Fatalf("link = %q", l.URL)
	}
	jar := browser(true)
	resp, err := jar.Get(l.URL)
	if err != nil {
		t.Fatal(err)
	}
	fwd, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := forwardRE.FindSubmatch(fwd)
	if m == nil {
		t.Fatalf("forward page %q", fwd)
	}
	c := &settingsBrowser{jar, string(m[1])}
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if strings.HasPrefix(k.Name, settingsCookie) && len(k.Name) > len(settingsCookie) {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.MaxAge != 36000 || ck.Path != "/" || len(ck.Value) < 40 {
		t.Fatalf("session cookie = %+v; want HttpOnly, SameSite=Strict, not Secure on http, a working day", ck)
	}

	t.Run("once", func(t *testing.T) {
		code, body := get(t, browser(true), l.URL)
		if code != 400 || !strings.Contains(body, "work once") {
			t.Errorf("second use = %d %q", code, body)
		}
	})
	t.Run("expires", func(t *testing.T) {
		l2, _ := f.s.SettingsLink(uid)
		f.clk.Advance(61 * time.Second)
		if code, _ := get(t, browser(true), l2.URL); code != 400 {
			t.Errorf("a link after 61 s = %d; want 400", code)
		}
	})
	t.Run("page", func(t *testing.T) {
		resp, err := c.Get(f.web.URL + c.at("/settings"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self' " + f.p.URL} {
			if !strings.Contains(csp, want) {
				t.Errorf("CSP %q lacks %q", csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("CSP %q allows unsafe sources", csp)
		}
		for k, want := range map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
			if h.Get(k) != want {
				t.Errorf("%s = %q; want %q", k, h.Get(k), want)
			}
		}
		code, body, csrf := settingsPage(t, f, c)
		if code != 200 || csrf == "" {
			t.Fatalf("settings page = %d %q", code, body)
		}
		for _, want := range []string{userName(uid), f.s.host, "Another API", "Test", "Not signed in", "test-client", f.p.URL + "/token", "x y", `action="/settings/integrations/`} {
			if !strings.Contains(body, want) {
				t.Errorf("settings page lacks %q", want)
			}
		}
		if strings.Index(body, "Another API") > strings.Index(body, "<h3>Test") {
			t.Error("integrations are not sorted by name")
		}
		for _, secret := range []string{"test-secret"} {
			if strings.Contains(body, secret) {
				t.Errorf("settings page shows the client secret %q", secret)
			}
		}
	})
	t.Run("assets", func(t *testing.T) {
		for name, typ := range map[string]string{"settings.css": "text/css", "settings.js": "text/javascript"} {
			resp, err := c.Get(f.web.URL + "/settings/assets/" + name)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) || resp.ContentLength < 100 {
				t.Errorf("%s = %d %q %d bytes", name, resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength)
			}
		}
		if code, _ := get(t, c.Client, f.web.URL+"/settings/assets/settings.html"); code != 404 {
			t.Errorf("the template as an asset = %d; want 404", code)
		}
	})
	t.Run("json", func(t *testing.T) {
		code, body := get(t, c.Client, f.web.URL+c.at("/settings/integrations.json"))
		if code != 200 || !strings.Contains(body, `"display_name":"Another API"`) {
			t.Errorf("integrations.json = %d %q", code, body)
		}
		if code, _ := get(t, browser(true), f.web.URL+c.at("/settings/integrations.json")); code != 401 {
			t.Errorf("integrations.json without the cookie = %d; want 401", code)
		}
		if code, _ := get(t, c.Client, f.web.URL+"/settings/integrations.json"); code != 401 {
			t.Errorf("integrations.json without the key = %d; want 401", code)
		}
	})
	t.Run("no session", func(t *testing.T) {
		for name, u := range map[string]struct {
			c   *http.Client
			url string
		}{
			"nothing":     {browser(true), "/settings"},
			"key only":    {browser(true), c.at("/settings")},
			"cookie only": {c.Client, "/settings"}, // what a server on another port gets
		} {
			code, body := get(t, u.c, f.web.URL+u.url)
			if code != 401 || !strings.Contains(body, "oauthfs settings") {
				t.Errorf("%s: settings = %d %q", name, code, body)
			}
		}
	})
	t.Run("expired session", func(t *testing.T) {
		c, _ := openSettings(t, f, uid)
		f.clk.Advance(settingsLife + time.Minute)
		if code, _, _ := settingsPage(t, f, c); code != 401 {
			t.Errorf("a session after a working day = %d; want 401", code)
		}
	})
}

func TestSettingsForms(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	f.signIn(t, uid, "Test")
	c, _ := openSettings(t, f, uid)
	_, body, csrf := settingsPage(t, f, c)
	if !strings.Contains(body, "Signed in") || !strings.Contains(body, "read write") {
		t.Fatalf("settings page after a sign-in lacks the status or granted scopes: %q", body)
	}
	guid := f.guid(t, "Test")
	signout := "/settings/integrations/" + guid + "/signout"
	origin := f.web.URL
	for _, tc := range []struct {
		name         string
		c            *settingsBrowser
		csrf, origin string
		extra        []string
	}{
		{"no csrf", c, "", origin, nil},
		{"wrong csrf", c, "forged", origin, nil},
		{"foreign origin", c, csrf, "https://evil.example", nil},
		{"cross-site fetch", c, csrf, "", []string{"Sec-Fetch-Site", "cross-site"}},
		{"no cookie", &settingsBrowser{browser(true), c.key}, csrf, origin, nil},
		{"no key (the cookie alone)", &settingsBrowser{c.Client, ""}, csrf, origin, nil},
		{"null origin from elsewhere", c, csrf, "null", nil},
		{"null origin cross-site", c, csrf, "null", []string{"Sec-Fetch-Site", "same-site"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, f, tc.c, signout, tc.csrf, tc.origin, tc.extra...)
			if code != 403 || !strings.Contains(body, "nothing was changed") {
				t.Errorf("POST = %d %q; want 403", code, body)
			}
			if _, err := f.b.Token(context.Background(), uid, "Test"); err != nil {
				t.Errorf("the refused form signed the user out: %v", err)
			}
		})
	}
	t.Run("sign out", func(t *testing.T) {
		active := f.p.ActiveRefreshTokens()
		// As Chromium sends it from a page with Referrer-Policy: no-referrer.
		code, body := post(t, f, c, signout, csrf, "null", "Sec-Fetch-Site", "same-origin")
		if code != 200 || !strings.Contains(body, "Signed out of Test") || !strings.Contains(body, "Not signed in") {
			t.Errorf("sign out = %d %q", code, body)
		}
		if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
			t.Errorf("Token after the page's sign-out = %v; want ErrNotSignedIn", err)
		}
		if f.p.ActiveRefreshTokens() != active-1 {
			t.Errorf("the page's sign-out did not revoke the refresh token")
		}
		// The message is shown once.
		if _, body, _ := settingsPage(t, f, c); strings.Contains(body, "Signed out of Test") {
			t.Error("the message is shown again")
		}
	})
	t.Run("end", func(t *testing.T) {
		if code, _ := post(t, f, c, "/settings/end", csrf, origin); code != 200 {
			t.Errorf("end = %d", code)
		}
		if code, _, _ := settingsPage(t, f, c); code != 401 {
			t.Errorf("page after end = %d; want 401", code)
		}
	})
	t.Run("sign out everywhere", func(t *testing.T) {
		c1, _ := openSettings(t, f, uid)
		c2, _ := openSettings(t, f, uid)
		other, _ := openSettings(t, f, uid+1)
		l, _ := f.s.SettingsLink(uid)
		if n := f.s.EndSettings(uid); n != 2 {
			t.Errorf("EndSettings = %d; want 2", n)
		}
		for i, c := range []*settingsBrowser{c1, c2} {
			if code, _, _ := settingsPage(t, f, c); code != 401 {
				t.Errorf("browser %d after EndSettings = %d; want 401", i, code)
			}
		}
		if code, _, _ := settingsPage(t, f, other); code != 200 {
			t.Errorf("another user's session after EndSettings = %d; want 200", code)
		}
		if code, _ := get(t, browser(true), l.URL); code != 400 {
			t.Errorf("an unused link after EndSettings = %d; want 400", code)
		}
	})
}

// TestSettingsSignIn signs in from the settings page: the form goes to
// the provider, comes back to the final confirmation, and then to the
// page, which shows the result.
func TestSettingsSignIn(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	c, _ := openSettings(t, f, uid)
	_, _, csrf := settingsPage(t, f, c)
	guid := f.guid(t, "Other") // Other
	stop := &settingsBrowser{browser(false), c.key}
	stop.Jar = c.Jar
	resp := postResp(t, f, stop, "/settings/integrations/"+guid+"/signin", csrf, f.web.URL)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("sign-in form = %d; want the provider's redirect back", resp.StatusCode)
	}
	q := f.p.LastAuthorize()
	if q.Get("scope") != "x y" || q.Get("code_challenge_method") != "S256" {
		t.Fatalf("authorization request = %v", q)
	}
	code, body := callback(t, c.Client, resp.Header.Get("Location"))
	if code != 200 || !strings.Contains(body, "Signed in to Other") || !strings.Contains(body, "Managed Credentials") {
		t.Fatalf("back on the page = %d %q", code, body)
	}
	if _, err := f.b.Token(context.Background(), uid, "Other"); err != nil {
		t.Errorf("Token after the page's sign-in = %v", err)
	}
	if _, err := f.b.Token(context.Background(), uid+1, "Other"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("another user's Token = %v; want ErrNotSignedIn", err)
	}
	t.Run("refused", func(t *testing.T) {
		guid := f.guid(t, "Test")
		resp := postResp(t, f, stop, "/settings/integrations/"+guid+"/signin", csrf, f.web.URL)
		resp.Body.Close()
		cb := resp.Header.Get("Location")
		_, page := get(t, c.Client, cb)
		u, _ := url.Parse(cb)
		code, body := confirm(t, c.Client, u, page, "refuse")
		if code != 200 || !strings.Contains(body, "Nothing was stored for Test") {
			t.Errorf("refused = %d %q", code, body)
		}
		if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
			t.Errorf("Token after a refused sign-in = %v", err)
		}
	})
}

// TestSettingsUsers: one user's session never shows or changes another
// user's credentials.
func TestSettingsUsers(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	f.signIn(t, uid, "Test")
	a, _ := openSettings(t, f, uid)
	b, _ := openSettings(t, f, uid+1)
	_, pageA, _ := settingsPage(t, f, a)
	_, pageB, csrfB := settingsPage(t, f, b)
	if !strings.Contains(pageA, "Signed in") || strings.Contains(pageB, "Signed in") {
		t.Fatalf("user A sees signed-in %v, user B %v", strings.Contains(pageA, "Signed in"), strings.Contains(pageB, "Signed in"))
	}
	if !strings.Contains(pageB, userName(uid+1)) || strings.Contains(pageB, ">"+userName(uid)+"<") {
		t.Error("user B's page does not name user B alone")
	}
	guid := f.guid(t, "Test")
	// B's page token with A's session, and B's own sign-out, leave A alone.
	if code, _ := post(t, f, a, "/settings/integrations/"+guid+"/signout", csrfB, f.web.URL); code != 403 {
		t.Errorf("A's session with B's csrf = %d; want 403", code)
	}
	if code, _ := post(t, f, b, "/settings/integrations/"+guid+"/signout", csrfB, f.web.URL); code != 200 {
		t.Errorf("B's sign-out = %d", code)
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); err != nil {
		t.Errorf("A's token after B's sign-out = %v", err)
	}
}

// TestSettingsPlantedCookie: a cookie another user's server planted in
// the browser (cookies do not tell ports apart), even on a longer path
// that browsers send first, neither hides the user's own page nor turns
// the user's forms into the other user's.
func TestSettingsPlantedCookie(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	f.signIn(t, uid, "Test")
	victim, _ := openSettings(t, f, uid)
	attacker, _ := openSettings(t, f, uid+1)
	web, _ := url.Parse(f.web.URL)
	planted := attacker.Jar.Cookies(web)
	if len(planted) != 1 {
		t.Fatalf("attacker's cookies %v", planted)
	}
	victim.Jar.SetCookies(&url.URL{Scheme: "http", Host: web.Host, Path: "/settings"},
		[]*http.Cookie{{Name: planted[0].Name, Value: planted[0].Value, Path: "/settings"}})
	code, page, csrf := settingsPage(t, f, victim)
	if code != 200 || !strings.Contains(page, "<strong>"+userName(uid)+"</strong>") || !strings.Contains(page, "Signed in") {
		t.Fatalf("the victim's page with a planted cookie = %d %q", code, page)
	}
	if code, body := post(t, f, victim, "/settings/integrations/"+f.guid(t, "Test")+"/signout", csrf, f.web.URL); code != 200 || !strings.Contains(body, "Signed out of Test") {
		t.Errorf("the victim's sign-out with a planted cookie = %d", code)
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("the victim's sign-out did not reach the victim's credentials: %v", err)
	}
}

// TestSettingsCookieFromAnotherPort: cookies do not tell ports apart, so a
// server on another port of the host can set cookies the browser sends
// to the broker. One named like the session's old fixed name
// (oauthfs_settings) does nothing now: each session's cookie has a name
// of its own, which only the holder of the session's key can tell.
func TestSettingsCookieFromAnotherPort(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	f.signIn(t, uid, "Test")
	victim, _ := openSettings(t, f, uid)
	web, _ := url.Parse(f.web.URL)
	mine := victim.Jar.Cookies(web)
	if len(mine) != 1 || !strings.HasPrefix(mine[0].Name, settingsCookie) || mine[0].Name == settingsCookie {
		t.Fatalf("the session's cookie = %v; want a name of its own", mine)
	}
	other := *web
	other.Host = "127.0.0.1:1" // another port: its cookies are the host's too
	victim.Jar.SetCookies(&other, []*http.Cookie{
		{Name: "oauthfs_settings", Value: "planted", Path: "/"},
		{Name: "oauthfs_settings_0000000000000000", Value: "planted", Path: "/"},
	})
	code, page, _ := settingsPage(t, f, victim)
	if code != 200 || !strings.Contains(page, "Signed in") {
		t.Errorf("the victim's page with cookies planted from another port = %d", code)
	}
	// And the session's cookie name says nothing of another session's.
	other2, _ := openSettings(t, f, uid)
	if n := other2.Jar.Cookies(web); len(n) != 1 || n[0].Name == mine[0].Name {
		t.Errorf("two sessions' cookies = %v and %v; want names of their own", mine, n)
	}
}

// TestSignInPagesHoldNoSettingsKey: the pages of a sign-in (the callback,
// the confirmation's answer, the failures) never carry the key of the
// browser's settings session: their URLs do not hold it, and a page that
// shares the broker's origin could read them.
func TestSignInPagesHoldNoSettingsKey(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	c, _ := openSettings(t, f, uid)
	_, _, csrf := settingsPage(t, f, c)
	stop := &settingsBrowser{browser(false), c.key}
	stop.Jar = c.Jar
	resp := postResp(t, f, stop, "/settings/integrations/"+f.guid(t, "Other")+"/signin", csrf, f.web.URL)
	resp.Body.Close()
	cb := resp.Header.Get("Location")
	pages := map[string]string{}
	_, pages["the confirmation page"] = get(t, c.Client, cb)
	_, pages["a replayed callback"] = get(t, c.Client, cb)
	_, pages["an unknown state"] = get(t, c.Client, f.web.URL+"/callback?state=unknown&code=x")
	_, pages["a start link that is unknown"] = get(t, c.Client, f.web.URL+"/start?state=unknown")
	for name, body := range pages {
		if strings.Contains(body, c.key) {
			t.Errorf("%s holds the settings key:\n%s", name, body)
		}
	}
}

// TestSettingsDetailsShowIssuer: an integration's details name its issuer
// when one is configured, as posit-sdk's integration objects do.
func TestSettingsDetailsShowIssuer(t *testing.T) {
	f := newSigninFixture(t, otherIntegration)
	c, _ := openSettings(t, f, uid)
	_, page, _ := settingsPage(t, f, c)
	if want := "<dt>Issuer</dt><dd><code>" + f.p.URL + "</code></dd>"; strings.Count(page, want) != 1 {
		t.Errorf("the settings page shows the issuer %d times; want once (%q)", strings.Count(page, want), want)
	}
}
