package signin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// signInTo runs a sign-in to integration id in a new browser, up to the
// last page, and returns its status and page.
func (f *signinFixture) signInTo(t *testing.T, id string) (int, string) {
	t.Helper()
	si, err := f.s.Start(uid, id)
	if err != nil {
		t.Fatal(err)
	}
	c := browser(false)
	resp := press(t, c, si.URL, "continue")
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("sign-in to %s stopped with HTTP %d", id, resp.StatusCode)
	}
	return callback(t, c, resp.Header.Get("Location"))
}

// TestSignInQuirks: what the presets do for providers whose sign-ins
// differ (docs/design.md, "Providers' quirks"), against the local
// provider behaving as they do.
func TestSignInQuirks(t *testing.T) {
	ctx := context.Background()
	t.Run("Google: the preset asks for offline access with consent, and gets a refresh token", func(t *testing.T) {
		f := newSigninFixture(t, `
[[integration]]
name = "Google"
provider = "google"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "{provider}/authorize"
token_url = "{provider}/token"
`, `
[[integration]]
name = "Plain"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "{provider}/authorize"
token_url = "{provider}/token"
auth_style = "post"
`)
		f.p.SetQuirks(localprovider.Quirks{OfflineConsent: true})
		if code, page := f.signInTo(t, "Google"); code != 200 || !strings.Contains(page, "Signed in to Google") {
			t.Fatalf("sign-in to Google = %d %q", code, page)
		}
		if q := f.p.LastAuthorize(); q.Get("access_type") != "offline" || q.Get("prompt") != "consent" {
			t.Errorf("the Google preset's authorization request = %v; want access_type=offline and prompt=consent", q)
		}
		f.clk.Advance(2 * time.Hour) // the token is due: a read refreshes
		if _, err := f.b.Token(ctx, uid, "Google"); err != nil {
			t.Errorf("a refresh after the Google sign-in = %v; want it to work (a refresh token was granted)", err)
		}
		// Without the preset, Google would send no refresh token.
		if code, _ := f.signInTo(t, "Plain"); code != 200 {
			t.Fatalf("sign-in to Plain = %d", code)
		}
		f.clk.Advance(2 * time.Hour)
		if _, err := f.b.Token(ctx, uid, "Plain"); !errors.Is(err, credential.ErrExpired) {
			t.Errorf("a refresh without offline access = %v; want expired (no refresh token)", err)
		}
	})

	t.Run("Microsoft Entra: two resources in one request are refused, and say so", func(t *testing.T) {
		// (The microsoft preset refuses such scopes when the
		// configuration loads; see config's tests. Here an integration
		// with its own URLs reaches the provider with them.)
		f := newSigninFixture(t, `
[[integration]]
name = "Entra"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "{provider}/authorize"
token_url = "{provider}/token"
scopes = ["https://graph.microsoft.com/.default", "api://other/.default"]
`)
		f.p.SetQuirks(localprovider.Quirks{OneResource: true})
		code, page := f.signInTo(t, "Entra")
		if code == 200 || !strings.Contains(page, "invalid_scope") || !strings.Contains(page, "more than one resource") {
			t.Errorf("a sign-in with .default scopes of two resources = %d %q; want it refused, naming the provider's reason", code, page)
		}
	})

	t.Run("classic GitHub OAuth app: no expires_in, no refresh token", func(t *testing.T) {
		f := newSigninFixture(t)
		f.p.SetQuirks(localprovider.Quirks{NoExpiresIn: true, NoRefreshToken: true})
		if code, page := f.signInTo(t, "Test"); code != 200 {
			t.Fatalf("sign-in = %d %q", code, page)
		}
		tok, err := f.b.Token(ctx, uid, "Test")
		if err != nil || !tok.Expiry().IsZero() {
			t.Fatalf("Token = %v, expiry %v; want a token that does not expire", err, tok.Expiry())
		}
		m, _ := f.b.Integration(uid, "Test")
		if m.Expiry != nil || m.Status != credential.StatusSignedIn {
			t.Errorf("meta expiry %v, status %s; want null, signed_in", m.Expiry, m.Status)
		}
	})
}

// TestExpiryCountsFromTheExchange: a token's lifetime counts from when
// the provider's answer arrived (the code exchange at the callback), not
// from the final confirmation, which may come minutes later: confirmed
// 60 s after the exchange, a 90 s token has 30 s left, and its refresh
// time is the exchange's time plus 90 s less the margin.
func TestExpiryCountsFromTheExchange(t *testing.T) {
	f := newSigninFixture(t)
	f.p.SetLifetime(90 * time.Second)
	c, cb, si := f.startTo(t, uid)
	code, page := get(t, c, cb) // the exchange
	exchanged := f.clk.Now()
	if code != 200 || !strings.Contains(page, `action="/confirm"`) {
		t.Fatalf("callback = %d %q", code, page)
	}
	f.clk.Advance(60 * time.Second) // a slow "Yes"
	u, _ := url.Parse(cb)
	if code, _ := confirm(t, c, u, page, "confirm"); code != 200 {
		t.Fatalf("confirm = %d", code)
	}
	if st := f.status(t, uid, si); st.Status != SignedIn {
		t.Fatalf("status = %+v", st)
	}
	tok, _ := f.b.Peek(uid, f.guid(t, "Test"))
	if tok == nil {
		t.Fatal("no token to hand out 60 s after the exchange of a 90 s token")
	}
	// (Within a second: the clock runs while the answer travels.)
	if got, want := tok.Expiry(), exchanged.Add(90*time.Second); got.Sub(want).Abs() > time.Second {
		t.Errorf("expiry = %v; want the exchange (%v) plus 90 s", got, exchanged)
	}
	if got, want := f.b.RefreshAt(tok), exchanged.Add(90*time.Second-90*time.Second/4); got.Sub(want).Abs() > time.Second {
		t.Errorf("refresh_at = %v; want the exchange plus 90 s less the margin (22.5 s): %v", got, want)
	}
}
