package provider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

const testTimeout = 5 * time.Second

// issuerClient is a client of integration name on issuer, with the lines
// of extra in its table, sharing dir.
func issuerClient(t *testing.T, dir *Directory, name, issuer string, extra ...string) *Client {
	t.Helper()
	text := fmt.Sprintf("[[integration]]\nname = %q\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nissuer = %q\n%s\n",
		name, issuer, strings.Join(extra, "\n"))
	cfg, err := config.Parse("c.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg.Integrations[0], Options{Callback: "http://127.0.0.1:1/callback", Timeout: testTimeout, HTTP: NewHTTPClient(testTimeout), Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMetadataURLs(t *testing.T) {
	for _, tc := range []struct {
		issuer string
		want   []string
	}{
		{"https://idp.example", []string{"https://idp.example/.well-known/openid-configuration", "https://idp.example/.well-known/oauth-authorization-server"}},
		{"https://idp.example/", []string{"https://idp.example/.well-known/openid-configuration", "https://idp.example/.well-known/oauth-authorization-server"}},
		{"https://idp.example:8443/realms/a", []string{"https://idp.example:8443/realms/a/.well-known/openid-configuration", "https://idp.example:8443/.well-known/oauth-authorization-server/realms/a"}},
		{"https://idp.example/t/", []string{"https://idp.example/t/.well-known/openid-configuration", "https://idp.example/.well-known/oauth-authorization-server/t"}},
	} {
		if got := metadataURLs(tc.issuer); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("metadataURLs(%q) = %q; want %q", tc.issuer, got, tc.want)
		}
	}
}

// TestDiscover reads the metadata of the local provider as each setting
// serves them, and of servers that answer badly.
func TestDiscover(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	hc := NewHTTPClient(testTimeout)
	for _, tc := range []struct {
		name    string
		set     func()
		path    string // where the metadata were read, after the issuer
		iss     bool
		wantErr string // "" for success
		config  bool   // the error wraps ErrMetadata
	}{
		{name: "both", set: func() {}, path: "/.well-known/openid-configuration", iss: true},
		{name: "openid configuration", set: func() { p.SetMetadata(localprovider.OpenIDMetadata) }, path: "/.well-known/openid-configuration", iss: true},
		{name: "rfc 8414 only", set: func() { p.SetMetadata(localprovider.OAuthMetadata) }, path: "/.well-known/oauth-authorization-server", iss: true},
		{name: "iss not advertised", set: func() { p.SetIss(true, false) }, path: "/.well-known/openid-configuration", iss: false},
		{name: "no metadata", set: func() { p.SetMetadata(localprovider.NoMetadata) }, wantErr: "has no metadata", config: true},
		{name: "another issuer", set: func() { p.SetMetadataIssuer("https://evil.example") },
			wantErr: `name the issuer "https://evil.example", not "` + p.URL + `"`, config: true},
		{name: "the issuer with a trailing slash", set: func() { p.SetMetadataIssuer(p.URL + "/") }, wantErr: "set issuer to exactly", config: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.SetMetadata(localprovider.BothMetadata)
			p.SetMetadataIssuer("")
			p.SetIss(true, true)
			tc.set()
			m, err := Discover(context.Background(), hc, p.Issuer())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, ErrMetadata) != tc.config {
					t.Fatalf("Discover(%q) = %v; want an error containing %q (ErrMetadata: %v)", p.Issuer(), err, tc.wantErr, tc.config)
				}
				return
			}
			if err != nil {
				t.Fatalf("Discover(%q) = %v; want metadata", p.Issuer(), err)
			}
			want := Metadata{Issuer: p.URL, URL: p.URL + tc.path, AuthURL: p.URL + "/authorize", TokenURL: p.URL + "/token",
				RevocationURL: p.URL + "/revoke", DeviceAuthURL: p.URL + "/device/code", UserinfoURL: p.URL + "/userinfo", IssParameter: tc.iss}
			if *m != want {
				t.Errorf("Discover(%q) = %+v; want %+v", p.Issuer(), *m, want)
			}
		})
	}
}

// TestDiscoverBadAnswers: what a server sends is checked, and only
// failures that asking again may fix are transient.
func TestDiscoverBadAnswers(t *testing.T) {
	var answer func(w http.ResponseWriter, issuer string)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { answer(w, "http://"+r.Host) }))
	defer srv.Close()
	doc := func(extra string) func(http.ResponseWriter, string) {
		return func(w http.ResponseWriter, issuer string) {
			fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%s/a","token_endpoint":"%s/t"%s}`, issuer, issuer, issuer, extra)
		}
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	hc := NewHTTPClient(testTimeout)
	for _, tc := range []struct {
		name    string
		answer  func(http.ResponseWriter, string)
		issuer  string // "" for srv's
		wantErr string
		config  bool
	}{
		{"a plain http endpoint elsewhere", doc(`,"token_endpoint":"http://tokens.example/t"`), "", `token_endpoint: "http://tokens.example/t" uses plain http`, true},
		{"a relative endpoint", doc(`,"revocation_endpoint":"/revoke"`), "", "revocation_endpoint", true},
		{"no issuer", func(w http.ResponseWriter, _ string) { fmt.Fprint(w, `{"token_endpoint":"https://a.example/t"}`) }, "", "name no issuer", true},
		{"html", func(w http.ResponseWriter, _ string) { fmt.Fprint(w, "<html>maintenance</html>") }, "", "not a JSON object", true},
		{"huge", func(w http.ResponseWriter, _ string) { fmt.Fprint(w, `{"x":"`+strings.Repeat("x", maxMetadata)+`"}`) }, "", "larger than 256 KiB", true},
		{"a redirect", func(w http.ResponseWriter, _ string) {
			w.Header().Set("Location", "https://a.example/")
			w.WriteHeader(302)
		},
			"", "a redirect, which oauthfs does not follow", true},
		{"forbidden", func(w http.ResponseWriter, _ string) { w.WriteHeader(403) }, "", "answered HTTP 403", true},
		{"server error", func(w http.ResponseWriter, _ string) { w.WriteHeader(503) }, "", "answered HTTP 503", false},
		{"unreachable", doc(""), closed.URL, "unreachable", false},
		{"an issuer with a query", doc(""), "https://idp.example/?a=b", "has a query or a fragment", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer = tc.answer
			issuer := tc.issuer
			if issuer == "" {
				issuer = srv.URL
			}
			m, err := Discover(context.Background(), hc, issuer)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || errors.Is(err, ErrMetadata) != tc.config {
				t.Errorf("Discover(%q) = %+v, %v; want an error containing %q (ErrMetadata: %v)", issuer, m, err, tc.wantErr, tc.config)
			}
		})
	}
}

// TestIssuerEndpoints: an integration configured by its issuer alone takes
// every endpoint from the metadata; endpoints it configures win.
func TestIssuerEndpoints(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	dir := NewDirectory(NewHTTPClient(testTimeout))
	if bad, err := dir.Fetch(context.Background(), nil); err != nil || bad != nil {
		t.Fatalf("Fetch(nil) = %v, %v", bad, err)
	}
	alone := issuerClient(t, dir, "Alone", p.Issuer())
	own := issuerClient(t, dir, "Own", p.Issuer(), `token_url = "https://tokens.example/t"`, `revocation_url = "https://tokens.example/r"`)
	if got := alone.Config().AuthURL; got != "" {
		t.Errorf("Config().AuthURL before the metadata = %q; want none", got)
	}
	for _, c := range []*Client{alone, own} {
		if err := c.Ready(context.Background()); err != nil {
			t.Fatalf("Ready() = %v", err)
		}
	}
	for _, tc := range []struct {
		c                           *Client
		auth, token, revoke, device string
	}{
		{alone, p.URL + "/authorize", p.URL + "/token", p.URL + "/revoke", p.URL + "/device/code"},
		{own, p.URL + "/authorize", "https://tokens.example/t", "https://tokens.example/r", p.URL + "/device/code"},
	} {
		in := tc.c.Config()
		if in.AuthURL != tc.auth || in.TokenURL != tc.token || in.RevocationURL != tc.revoke || in.DeviceAuthURL != tc.device || in.Issuer != p.Issuer() {
			t.Errorf("%s: Config() = %s %s %s %s; want %s %s %s %s", in.Name, in.AuthURL, in.TokenURL, in.RevocationURL, in.DeviceAuthURL, tc.auth, tc.token, tc.revoke, tc.device)
		}
	}
	if n := p.MetadataRequests(); n != 1 {
		t.Errorf("metadata requests = %d; want 1 (one issuer, looked up once)", n)
	}
}

// TestDirectory: Fetch at start and reload, a failed lookup asked again
// only after a while, and the last good metadata kept when the issuer is
// down at a reload.
func TestDirectory(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	dir := NewDirectory(NewHTTPClient(testTimeout))
	now := time.Now()
	dir.now = func() time.Time { return now }
	cfg, err := config.Parse("c.toml", []byte(fmt.Sprintf("[[integration]]\nname = \"A\"\nclient_id = \"i\"\nclient_secret = \"s\"\nissuer = %q\n", p.Issuer())))
	if err != nil {
		t.Fatal(err)
	}
	ins := cfg.Integrations

	// Down at start: not an error, listed, and asked again on use.
	p.SetMetadata(localprovider.NoMetadata)
	if _, err := dir.Fetch(context.Background(), ins); !errors.Is(err, ErrMetadata) || !strings.Contains(err.Error(), `integration "A"`) {
		t.Fatalf("Fetch without metadata = %v; want ErrMetadata naming the integration", err)
	}
	p.SetMetadata(localprovider.BothMetadata)
	p.SetMode(localprovider.ServerError) // the token endpoint only
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer broken.Close()
	down, _ := config.Parse("c.toml", []byte(fmt.Sprintf("[[integration]]\nname = \"B\"\nclient_id = \"i\"\nclient_secret = \"s\"\nissuer = %q\n", broken.URL)))
	bad, err := dir.Fetch(context.Background(), append(ins, down.Integrations...))
	if err != nil || len(bad) != 1 || !strings.Contains(bad[0].Error(), `integration "B"`) || !strings.Contains(bad[0].Error(), "HTTP 503") {
		t.Fatalf("Fetch with one issuer down = %v, %v; want it listed, naming B and the answer", bad, err)
	}
	if dir.Cached(p.Issuer()) == nil || dir.Cached(broken.URL) != nil {
		t.Errorf("Cached after Fetch = %v, %v; want A's metadata only", dir.Cached(p.Issuer()), dir.Cached(broken.URL))
	}
	if _, err := dir.Lookup(context.Background(), broken.URL); err == nil {
		t.Errorf("Lookup(%q) within 10 s of a failure = nil; want the failure", broken.URL)
	}

	// A lookup after a failure waits 10 s before asking again.
	before := p.MetadataRequests()
	dir.Fetch(context.Background(), nil) // forgets everything
	p.SetMetadata(localprovider.NoMetadata)
	for range 3 {
		if _, err := dir.Lookup(context.Background(), p.Issuer()); err == nil {
			t.Fatal("Lookup without metadata = nil; want an error")
		}
	}
	if n := p.MetadataRequests() - before; n != 2 { // the two well-known paths, once
		t.Errorf("metadata requests for 3 lookups within 10 s = %d; want 2", n)
	}
	p.SetMetadata(localprovider.BothMetadata)
	now = now.Add(discoveryRetry + time.Second)
	if m, err := dir.Lookup(context.Background(), p.Issuer()); err != nil || m.TokenURL != p.URL+"/token" {
		t.Errorf("Lookup 11 s later = %v, %v; want the metadata", m, err)
	}

	// A reload while the issuer is down keeps what was read before.
	p.Close()
	bad, err = dir.Fetch(context.Background(), ins)
	if err != nil || len(bad) != 1 || !strings.Contains(bad[0].Error(), "stay in force") {
		t.Fatalf("Fetch with the issuer down = %v, %v; want one warning that the old metadata stay", bad, err)
	}
	if m := dir.Cached(p.Issuer()); m == nil || m.AuthURL != p.URL+"/authorize" {
		t.Errorf("Cached(%q) after a reload with the issuer down = %v; want the metadata read before", p.Issuer(), m)
	}
}

// TestCheckIssuer is RFC 9207 §2.4 as the callback applies it: the
// response must name the integration's issuer, and may leave it out only
// when the issuer does not say it always names itself.
func TestCheckIssuer(t *testing.T) {
	a, b := localprovider.New(), localprovider.New()
	defer a.Close()
	defer b.Close()
	silent := localprovider.New() // no RFC 9207 at all
	defer silent.Close()
	silent.SetIss(false, false)
	dir := NewDirectory(NewHTTPClient(testTimeout))
	onA := issuerClient(t, dir, "A", a.Issuer())
	onSilent := issuerClient(t, dir, "Silent", silent.Issuer())
	for _, c := range []*Client{onA, onSilent} {
		if err := c.Ready(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	legacy := deviceClient(t, a, "basic", "") // endpoints, no issuer
	for _, tc := range []struct {
		name string
		c    *Client
		iss  []string
		ok   bool
		want string // in the error
	}{
		{"A's own iss", onA, []string{a.Issuer()}, true, ""},
		{"B's iss under A's sign-in", onA, []string{b.Issuer()}, false, `comes from the issuer "` + b.Issuer() + `", not from A's issuer "` + a.Issuer() + `"`},
		{"no iss from an issuer that always sends it", onA, nil, false, "authorization_response_iss_parameter_supported"},
		{"an empty iss", onA, []string{""}, false, `comes from the issuer ""`},
		{"iss twice", onA, []string{a.Issuer(), b.Issuer()}, false, "names 2 issuers"},
		{"A's iss with a trailing slash", onA, []string{a.Issuer() + "/"}, false, "not from A's issuer"},
		{"an escape in iss", onA, []string{"https://b.example/\x1b[2J"}, false, `"https://b.example/ [2J"`},
		{"no iss from an issuer that does not advertise it", onSilent, nil, true, ""},
		{"B's iss to an issuer that does not advertise it", onSilent, []string{b.Issuer()}, false, "not from Silent's issuer"},
		{"no issuer configured, no iss", legacy, nil, true, ""},
		{"no issuer configured, some iss", legacy, []string{b.Issuer()}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.CheckIssuer(tc.iss)
			switch {
			case tc.ok && err != nil:
				t.Errorf("CheckIssuer(%q) = %v; want nil", tc.iss, err)
			case !tc.ok && (!errors.Is(err, ErrIssuer) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckIssuer(%q) = %v; want ErrIssuer containing %q", tc.iss, err, tc.want)
			}
		})
	}
}
