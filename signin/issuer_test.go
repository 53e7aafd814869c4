package signin

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// codeFrom has provider p issue an authorization code for redirect, as
// its authorization endpoint does for any browser, and returns the
// answer's query (code, state, iss).
func codeFrom(t *testing.T, p *localprovider.Provider, redirect string) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{"client_id": {p.ClientID}, "redirect_uri": {redirect}, "response_type": {"code"}, "state": {"b-state"},
		"code_challenge_method": {"S256"}, "code_challenge": {"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"}}
	resp, err := c.Get(p.URL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("provider B's authorization answer = %d %q; want a redirect with a code", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

// TestMixUp is RFC 9207's defence, end to end in the sign-in web server:
// every integration shares one callback, so a second authorization
// server (B) that learns a sign-in's state can try to deliver its own
// code, or its own error, to a sign-in of an integration on A. The
// callback must refuse whatever does not name A's issuer when A's
// responses always do, end the sign-in as failed, store nothing and send
// no code to any token endpoint.
func TestMixUp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		issuer bool // the integration names A's issuer
		setA   func(*localprovider.Provider)
		answer func(a, b url.Values) url.Values // the callback's query, from A's answer and B's
		ok     bool
		page   string // in the refusal page
	}{
		{"B's code and B's iss under A's state", true, nil,
			func(a, b url.Values) url.Values {
				return url.Values{"state": a["state"], "code": b["code"], "iss": b["iss"]}
			},
			false, "not from Test's issuer"},
		{"B's error and B's iss under A's state", true, nil,
			func(a, b url.Values) url.Values {
				return url.Values{"state": a["state"], "error": {"access_denied"}, "error_description": {"call 555-0100"}, "iss": b["iss"]}
			},
			false, "not from Test's issuer"},
		{"B's code without iss, A always names itself", true, nil,
			func(a, b url.Values) url.Values { return url.Values{"state": a["state"], "code": b["code"]} },
			false, "authorization_response_iss_parameter_supported"},
		{"A's own code without iss, A always names itself", true, nil,
			func(a, b url.Values) url.Values { return url.Values{"state": a["state"], "code": a["code"]} },
			false, "names no issuer"},
		{"A's code and A's iss", true, nil,
			func(a, b url.Values) url.Values { return a },
			true, ""},
		{"no iss from an A that does not advertise it", true, func(p *localprovider.Provider) { p.SetIss(false, false) },
			func(a, b url.Values) url.Values { return a },
			true, ""},
		{"no issuer configured and no iss", false, func(p *localprovider.Provider) { p.SetIss(false, false) },
			func(a, b url.Values) url.Values { return a },
			true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra []string
			if tc.issuer {
				extra = append(extra, `issuer = "{provider}"`)
			}
			f := newSigninFixture(t, extra...)
			if tc.setA != nil {
				tc.setA(f.p)
			}
			b := localprovider.New()
			t.Cleanup(b.Close)
			br, cb, si := f.startTo(t, uid)
			legit, err := url.Parse(cb)
			if err != nil {
				t.Fatal(err)
			}
			fromB := codeFrom(t, b, f.web.URL+"/callback")
			if tc.setA == nil && (legit.Query().Get("iss") != f.p.Issuer() || fromB.Get("iss") != b.Issuer()) {
				t.Fatalf("the providers' answers name %q and %q; want their issuers", legit.Query().Get("iss"), fromB.Get("iss"))
			}
			delivered := f.web.URL + "/callback?" + tc.answer(legit.Query(), fromB).Encode()
			code, page := callback(t, br, delivered)
			page = html.UnescapeString(page)
			st := f.status(t, uid, si)
			m, _ := f.b.Integration(uid, "Test")
			if tc.ok {
				if code != 200 || st.Status != SignedIn || m.Status != credential.StatusSignedIn {
					t.Errorf("callback(%q) = %d, sign-in %+v, meta %s; want 200, signed in: %s", delivered, code, st, m.Status, page)
				}
				return
			}
			if code != http.StatusBadRequest || !strings.Contains(page, tc.page) || !strings.Contains(page, "Nothing was stored") {
				t.Errorf("callback(%q) = %d %q; want 400 saying %q and that nothing was stored", delivered, code, page, tc.page)
			}
			if st.Status != Failed || !strings.Contains(st.Message, "mix-up") {
				t.Errorf("sign-in after callback(%q) = %+v; want failed, naming a mix-up", delivered, st)
			}
			if m.Status != credential.StatusNotSignedIn {
				t.Errorf("meta after callback(%q) = %s; want not_signed_in", delivered, m.Status)
			}
			if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
				t.Errorf("Token after callback(%q) = %v; want ErrNotSignedIn", delivered, err)
			}
			if n, nb := f.p.Requests(), b.Requests(); n != 0 || nb != 0 {
				t.Errorf("token requests after callback(%q) = A %d, B %d; want none (no code exchanged)", delivered, n, nb)
			}
			if strings.Contains(page, "555-0100") {
				t.Errorf("callback(%q) page shows B's error description: %q", delivered, page)
			}
			// The sign-in is over: A's own answer, arriving late, is refused too.
			if code, page := callback(t, br, cb); code != http.StatusBadRequest || !strings.Contains(page, "has ended") {
				t.Errorf("A's answer after the refusal = %d %q; want 400, the sign-in has ended", code, page)
			}
			for _, secret := range []string{fromB.Get("code"), legit.Query().Get("code")} {
				if strings.Contains(f.logs.String(), secret) {
					t.Errorf("logs contain the code %q", secret)
				}
			}
		})
	}
}
