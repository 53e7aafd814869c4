// Package localprovider is a small OAuth 2.0 provider on loopback: an
// authorization endpoint that approves every request (PKCE S256
// required) and names its issuer in its answers (RFC 9207), a token
// endpoint (authorization_code and refresh_token grants), RFC 7009
// revocation, a userinfo endpoint that checks bearer tokens, ID tokens
// (RS256, for sign-ins that ask for openid, with their keys at /jwks),
// resource indicators (RFC 8707) and its metadata (OpenID Connect
// Discovery and RFC 8414). 'oauthfs dev' runs it so a newcomer needs no
// account anywhere.
//
// Tests use its knobs for fault injection: token lifetime, refresh-token
// rotation (with or without a grace period), a request counter, and
// answers that are invalid_grant, 500, an HTML page, truncated JSON, huge
// or too slow. Conformance is proven against a real OAuth server
// elsewhere; this provider is never the only proof.
package localprovider

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Mode selects how the token endpoint answers refresh requests.
type Mode int

// The modes of [Provider].
const (
	OK           Mode = iota // a normal token response
	InvalidGrant             // 400 {"error":"invalid_grant"}
	ServerError              // 500 with a plain body
	HTML                     // 200 with an HTML page
	Truncated                // 200 with JSON cut short
	Slow                     // waits SlowDelay, then answers normally
	Huge                     // 200 with a 4 MiB JSON body
	Redirect                 // 307 to the URL set with SetRedirect
	HugeError                // 400 with a 70 KB error code and description
	Unauthorized             // 401 invalid_client, whatever the credentials
)

// Metadata says which metadata documents a [Provider] serves.
type Metadata int

// The values of [Metadata].
const (
	BothMetadata   Metadata = iota // both (the default)
	OpenIDMetadata                 // /.well-known/openid-configuration only
	OAuthMetadata                  // /.well-known/oauth-authorization-server only (RFC 8414)
	NoMetadata                     // neither: 404
)

// Quirks are behaviours of real providers the local one can take on, one
// switch each (docs/design.md, "Providers' quirks").
type Quirks struct {
	// OfflineConsent: a sign-in gets a refresh token only when its
	// authorization request had access_type=offline and prompt=consent
	// (Google).
	OfflineConsent bool
	// OneResource: scopes of two resources' .default in one request are
	// refused with invalid_scope (Microsoft Entra).
	OneResource bool
	// KeepOldRefresh: a rotated refresh token stays valid after its
	// successor is used (Microsoft Entra).
	KeepOldRefresh bool
	// RefreshEndsAccess: a refresh ends the access token it replaces
	// (GitHub Apps).
	RefreshEndsAccess bool
	// NoExpiresIn: answers say nothing of the access token's lifetime
	// (Salesforce, classic GitHub OAuth apps).
	NoExpiresIn bool
	// NoRefreshToken: sign-ins get no refresh token (classic GitHub OAuth
	// apps: tokens that never expire).
	NoRefreshToken bool
	// ReuseRevokesFamily: a rotated refresh token used again after its
	// successor was used revokes every token of its family (Okta, Auth0,
	// Cognito with rotation; the grace of SetRotateGrace covers the time
	// before the successor's first use).
	ReuseRevokesFamily bool
	// RateLimit: after RateLimit token requests, the next ones get 429
	// with Retry-After RetryAfter (seconds) until RetryAfter has passed.
	RateLimit  int
	RetryAfter int
	// DPoP: the token endpoint wants DPoP proofs (RFC 9449) and answers
	// 400 use_dpop_nonce with a WWW-Authenticate: DPoP challenge.
	DPoP bool
	// NoIDTokenOnRefresh: a refresh answers no new ID token, though the
	// sign-in had one (OpenID Connect Core §12.2 lets a provider leave it
	// out).
	NoIDTokenOnRefresh bool
}

// Provider is an httptest token endpoint. It is safe for concurrent use.
type Provider struct {
	*httptest.Server
	ClientID, ClientSecret string

	mu        sync.Mutex // guards the fields below
	lifetime  time.Duration
	rotate    bool
	grace     bool              // a rotated-away token stays valid until its successor is used
	successor map[string]string // refresh token -> the one issued in exchange for it
	mode      Mode
	slowDelay time.Duration
	prefix    string
	refresh   map[string]bool      // refresh tokens the provider accepts
	access    map[string]time.Time // access tokens it issued, with their expiry
	requests  int
	refreshes int
	conns     int // connections accepted

	devices        map[string]*deviceGrant // by device code
	deviceInterval time.Duration
	deviceLife     time.Duration
	slowDowns      int                  // device token requests still to answer slow_down
	drops          int                  // device token requests still to answer by closing the connection
	deny           bool                 // /authorize answers access_denied
	codes          map[string]codeGrant // authorization codes not yet used
	lastAuth       url.Values           // the query of the last /authorize
	redirect       string               // where Redirect sends the client
	authStyle      []string             // how each token request authenticated: basic or post
	denyCode       string               // the error /authorize answers with SetDenyWith
	denyDesc       string

	metadata     Metadata // which metadata documents are served
	metaIssuer   string   // the issuer the metadata name; "": the provider's URL
	sendIss      bool     // /authorize puts iss in its answers (RFC 9207)
	advertiseIss bool     // the metadata say so (authorization_response_iss_parameter_supported)
	metaRequests int      // requests for a metadata document

	quirks      Quirks
	offline     map[string]bool            // codes whose authorization request asked for offline access with consent
	issuedWith  map[string]map[string]bool // refresh token -> the access tokens issued with it
	family      map[string]string          // refresh token -> its family (the first of its line)
	revoked     map[string]bool            // families revoked by a reuse
	reuses      int                        // rotated refresh tokens used again
	limitedTill time.Time                  // RateLimit: 429 until then
	sinceLimit  int                        // token requests since the last limit

	keyOnce    sync.Once
	key        *rsa.PrivateKey     // signs ID tokens; made on first use
	idTokens   int                 // ID tokens issued
	lastID     string              // the ID token issued last
	openid     map[string]bool     // refresh tokens (and codes) of sign-ins that asked for openid
	resources  map[string]bool     // the resources it serves (RFC 8707); nil: the parameter is ignored
	audience   map[string]string   // access token -> the resource it was issued for
	scopeOf    map[string]string   // access token -> its scope
	params     []map[string]string // resource and scope of each refresh request
	lastAccess string              // the access token (for no resource) issued last
}

// SetQuirks sets the quirks the provider behaves with.
func (p *Provider) SetQuirks(q Quirks) { p.mu.Lock(); p.quirks = q; p.mu.Unlock() }

// Reuses returns how many times a refresh token was used again after its
// successor had been used (a client that sent a rotated token twice).
func (p *Provider) Reuses() int { p.mu.Lock(); defer p.mu.Unlock(); return p.reuses }

// codeGrant is what an authorization code was issued for.
type codeGrant struct{ challenge, redirect string }

// New starts a provider on 127.0.0.1 with a random port. Close it when
// done.
func New() *Provider {
	return Start(nil)
}

// Start starts a provider on l, or on a random loopback port when l is
// nil. Close it when done.
func Start(l net.Listener) *Provider {
	p := &Provider{
		ClientID: "test-client", ClientSecret: "test-secret",
		lifetime: time.Hour, rotate: true, slowDelay: 30 * time.Second,
		prefix:  "tok",
		refresh: map[string]bool{}, access: map[string]time.Time{}, successor: map[string]string{},
		codes: map[string]codeGrant{}, devices: map[string]*deviceGrant{},
		offline: map[string]bool{}, family: map[string]string{}, revoked: map[string]bool{}, issuedWith: map[string]map[string]bool{},
		openid: map[string]bool{}, audience: map[string]string{}, scopeOf: map[string]string{},
		deviceInterval: time.Second, deviceLife: 5 * time.Minute,
		sendIss: true, advertiseIss: true,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", p.token)
	mux.HandleFunc("/authorize", p.authorize)
	mux.HandleFunc("/revoke", p.revoke)
	mux.HandleFunc("/userinfo", p.userinfo)
	mux.HandleFunc("/device/code", p.deviceCode)
	mux.HandleFunc("/device", p.devicePage)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /.well-known/openid-configuration", p.serveMetadata(OpenIDMetadata))
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", p.serveMetadata(OAuthMetadata))
	p.Server = httptest.NewUnstartedServer(mux)
	if l != nil {
		p.Server.Listener.Close()
		p.Server.Listener = l
	}
	p.Server.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.mu.Lock()
			p.conns++
			p.mu.Unlock()
		}
	}
	p.Server.Start()
	return p
}

// Conns returns how many connections the provider has accepted.
func (p *Provider) Conns() int { p.mu.Lock(); defer p.mu.Unlock(); return p.conns }

// userinfo answers 200 with {"sub": "dev-user"} for a bearer token the
// provider issued and that has not expired, and 401 otherwise.
func (p *Provider) userinfo(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p.mu.Lock()
	exp, issued := p.access[tok]
	p.mu.Unlock()
	if !ok || !issued || (!exp.IsZero() && time.Now().After(exp)) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		oauthError(w, 401, "invalid_token", "unknown or expired access token")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintln(w, `{"sub":"dev-user"}`)
}

// Issuer is the provider's issuer identifier: its URL.
func (p *Provider) Issuer() string { return p.URL }

// SetMetadata sets which metadata documents the provider serves.
func (p *Provider) SetMetadata(m Metadata) { p.mu.Lock(); p.metadata = m; p.mu.Unlock() }

// SetMetadataIssuer makes the metadata name issuer instead of the
// provider's own ("" restores it), as a server standing in for another
// would.
func (p *Provider) SetMetadataIssuer(issuer string) {
	p.mu.Lock()
	p.metaIssuer = issuer
	p.mu.Unlock()
}

// SetIss sets whether the authorization endpoint names the issuer in its
// answers (send) and whether the metadata say it always does
// (advertise), RFC 9207. Both are on at first, as in oidc-provider.
func (p *Provider) SetIss(send, advertise bool) {
	p.mu.Lock()
	p.sendIss, p.advertiseIss = send, advertise
	p.mu.Unlock()
}

// MetadataRequests returns how many requests for a metadata document
// reached the provider.
func (p *Provider) MetadataRequests() int { p.mu.Lock(); defer p.mu.Unlock(); return p.metaRequests }

// serveMetadata answers the metadata document of kind, when the provider
// serves it, and 404 otherwise.
func (p *Provider) serveMetadata(kind Metadata) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.metaRequests++
		served, issuer, iss := p.metadata, p.metaIssuer, p.advertiseIss
		p.mu.Unlock()
		if served != BothMetadata && served != kind {
			http.NotFound(w, r)
			return
		}
		if issuer == "" {
			issuer = p.URL
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                         issuer,
			"authorization_endpoint":                         p.URL + "/authorize",
			"token_endpoint":                                 p.URL + "/token",
			"revocation_endpoint":                            p.URL + "/revoke",
			"userinfo_endpoint":                              p.URL + "/userinfo",
			"jwks_uri":                                       p.URL + "/jwks",
			"id_token_signing_alg_values_supported":          []string{"RS256"},
			"subject_types_supported":                        []string{"public"},
			"device_authorization_endpoint":                  p.URL + "/device/code",
			"response_types_supported":                       []string{"code"},
			"grant_types_supported":                          []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
			"code_challenge_methods_supported":               []string{"S256"},
			"token_endpoint_auth_methods_supported":          []string{"client_secret_basic", "client_secret_post"},
			"authorization_response_iss_parameter_supported": iss,
		})
	}
}

// SetDeny makes the authorization endpoint answer access_denied.
func (p *Provider) SetDeny(on bool) { p.mu.Lock(); p.deny = on; p.mu.Unlock() }

// SetDenyWith makes the authorization endpoint refuse with this error code
// and description, exactly as given (tests put control characters in).
func (p *Provider) SetDenyWith(code, desc string) {
	p.mu.Lock()
	p.deny, p.denyCode, p.denyDesc = true, code, desc
	p.mu.Unlock()
}

// SetRedirect sets where the Redirect mode sends token requests.
func (p *Provider) SetRedirect(u string) { p.mu.Lock(); p.redirect = u; p.mu.Unlock() }

// AuthStyles returns how each token request so far sent the client
// secret: "basic" (an Authorization header) or "post" (in the form).
func (p *Provider) AuthStyles() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.authStyle...)
}

// LastAuthorize returns the query of the last authorization request.
func (p *Provider) LastAuthorize() url.Values { p.mu.Lock(); defer p.mu.Unlock(); return p.lastAuth }

// ActiveRefreshTokens returns how many refresh tokens the provider accepts.
func (p *Provider) ActiveRefreshTokens() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.refresh) }

// authorize is the authorization endpoint of a user who always consents
// (or, with SetDeny, always refuses). It requires PKCE with S256.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	p.lastAuth = q
	deny, denyCode, denyDesc, sendIss := p.deny, p.denyCode, p.denyDesc, p.sendIss
	if p.quirks.OneResource && twoResources(q.Get("scope")) {
		deny, denyCode, denyDesc = true, "invalid_scope", "AADSTS70011: the scopes name more than one resource"
	}
	p.mu.Unlock()
	if denyCode == "" {
		denyCode, denyDesc = "access_denied", "The user said no"
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" || q.Get("client_id") != p.ClientID {
		http.Error(w, "bad client_id or redirect_uri", 400)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	if sendIss {
		back.Set("iss", p.URL) // in error answers too (RFC 9207 §2)
	}
	switch {
	case deny:
		back.Set("error", denyCode)
		back.Set("error_description", denyDesc)
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		back.Set("error", "invalid_request")
		back.Set("error_description", "PKCE with S256 is required")
	default:
		code := "code-" + random()
		p.mu.Lock()
		p.codes[code] = codeGrant{challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
		p.offline[code] = q.Get("access_type") == "offline" && q.Get("prompt") == "consent"
		p.openid[code] = strings.Contains(" "+q.Get("scope")+" ", " openid ")
		p.mu.Unlock()
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// revoke is an RFC 7009 revocation endpoint.
func (p *Provider) revoke(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if err := r.ParseForm(); err != nil || !ok || id != p.ClientID || secret != p.ClientSecret {
		oauthError(w, 401, "invalid_client", "bad client credentials")
		return
	}
	p.mu.Lock()
	tok := r.PostForm.Get("token")
	delete(p.refresh, tok)
	delete(p.access, tok)
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// TokenURL is the token endpoint's URL.
func (p *Provider) TokenURL() string { return p.URL + "/token" }

// SetLifetime sets the lifetime of tokens issued from now on.
func (p *Provider) SetLifetime(d time.Duration) { p.mu.Lock(); p.lifetime = d; p.mu.Unlock() }

// SetRotate turns refresh-token rotation on or off.
func (p *Provider) SetRotate(on bool) { p.mu.Lock(); p.rotate = on; p.mu.Unlock() }

// SetRotateGrace makes rotation keep the previous refresh token valid
// until its successor is first used, as providers with a rotation grace
// period do (Okta's grace period, Auth0's reuse interval): a client that
// crashed before saving the new token can still use the old one.
func (p *Provider) SetRotateGrace(on bool) { p.mu.Lock(); p.grace = on; p.mu.Unlock() }

// SetMode sets how refresh requests are answered.
func (p *Provider) SetMode(m Mode) { p.mu.Lock(); p.mode = m; p.mu.Unlock() }

// SetSlowDelay sets how long a [Slow] answer waits.
func (p *Provider) SetSlowDelay(d time.Duration) { p.mu.Lock(); p.slowDelay = d; p.mu.Unlock() }

// SetPrefix sets the prefix of issued tokens (canary tests use it).
func (p *Provider) SetPrefix(s string) { p.mu.Lock(); p.prefix = s; p.mu.Unlock() }

// Requests returns how many requests reached the token endpoint.
func (p *Provider) Requests() int { p.mu.Lock(); defer p.mu.Unlock(); return p.requests }

// Refreshes returns how many refresh requests succeeded.
func (p *Provider) Refreshes() int { p.mu.Lock(); defer p.mu.Unlock(); return p.refreshes }

// Grant mints an access and refresh token pair, as a sign-in would, and
// returns them with the access token's expiry.
func (p *Provider) Grant() (access, refresh string, expiry time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	access, refresh = p.newPairLocked()
	return access, refresh, time.Now().Add(p.lifetime)
}

// GrantOpenID mints tokens as a sign-in that asked for the openid scope
// would: an access and refresh token pair and an ID token, whose
// refreshes bring new ID tokens.
func (p *Provider) GrantOpenID() (access, refresh, id string, expiry time.Time) {
	p.mu.Lock()
	access, refresh = p.newPairLocked()
	p.openid[refresh] = true
	life := p.lifetime
	p.mu.Unlock()
	return access, refresh, p.idToken(life), time.Now().Add(life)
}

// AcceptsRefresh reports whether rt is a refresh token the provider would
// accept now.
func (p *Provider) AcceptsRefresh(rt string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refresh[rt]
}

// Accepts reports whether at is an access token the provider issued and
// that has not expired.
func (p *Provider) Accepts(at string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	exp, ok := p.access[at]
	return ok && time.Now().Before(exp)
}

// Expiry returns when the access token at expires, by the provider's
// clock, or false when the provider did not issue it.
func (p *Provider) Expiry(at string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	exp, ok := p.access[at]
	return exp, ok
}

// Issued reports whether the provider issued access token at.
func (p *Provider) Issued(at string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.access[at]
	return ok
}

// newPairLocked issues a new access and refresh token. Callers hold p.mu.
func (p *Provider) newPairLocked() (string, string) {
	a := p.prefix + "-at-" + random()
	r := p.prefix + "-rt-" + random()
	p.access[a], p.refresh[r] = time.Now().Add(p.lifetime), true
	p.family[r], p.issuedWith[r] = r, map[string]bool{a: true}
	p.lastAccess = a
	return a, r
}

// LastAccess returns the access token the provider issued last: the one
// a resource server that takes only the newest accepts.
func (p *Provider) LastAccess() string { p.mu.Lock(); defer p.mu.Unlock(); return p.lastAccess }

func random() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests++
	mode, delay, q := p.mode, p.slowDelay, p.quirks
	limited := false
	if q.RateLimit > 0 {
		p.sinceLimit++
		switch now := time.Now(); {
		case now.Before(p.limitedTill):
			limited = true
		case p.sinceLimit > q.RateLimit:
			p.limitedTill, limited = now.Add(time.Duration(q.RetryAfter)*time.Second), true
			p.sinceLimit = 0
		}
	}
	p.mu.Unlock()
	if limited {
		w.Header().Set("Retry-After", fmt.Sprint(q.RetryAfter))
		oauthError(w, http.StatusTooManyRequests, "slow_down", "rate limited")
		return
	}
	if q.DPoP {
		w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="Authorization server requires nonce in DPoP proof"`)
		w.Header().Set("DPoP-Nonce", random())
		oauthError(w, 400, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
		return
	}

	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		oauthError(w, 400, "invalid_request", "want a POST form")
		return
	}
	id, secret, ok := r.BasicAuth()
	style := "basic"
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		style = "post"
	}
	p.mu.Lock()
	p.authStyle = append(p.authStyle, style)
	redirect := p.redirect
	p.mu.Unlock()
	if id != p.ClientID || secret != p.ClientSecret || mode == Unauthorized {
		oauthError(w, 401, "invalid_client", "bad client credentials")
		return
	}
	switch mode {
	case Redirect:
		http.Redirect(w, r, redirect, http.StatusTemporaryRedirect)
		return
	case HugeError:
		oauthError(w, 400, strings.Repeat("e", 70<<10), strings.Repeat("d", 70<<10))
		return
	case InvalidGrant:
		oauthError(w, 400, "invalid_grant", "refresh token revoked")
		return
	case ServerError:
		http.Error(w, "internal error", 500)
		return
	case HTML:
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html><body><h1>Maintenance</h1></body></html>")
		return
	case Truncated:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"abc","token_ty`)
		return
	case Huge:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"`+strings.Repeat("x", 4<<20)+`"}`)
		return
	case Slow:
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		p.exchange(w, r)
		return
	case "urn:ietf:params:oauth:grant-type:device_code":
		p.deviceToken(w, r)
		return
	}
	if r.PostForm.Get("grant_type") != "refresh_token" {
		oauthError(w, 400, "unsupported_grant_type", "want refresh_token or authorization_code")
		return
	}
	rt := r.PostForm.Get("refresh_token")
	p.mu.Lock()
	fam := p.family[rt]
	if q.ReuseRevokesFamily && !p.refresh[rt] && fam != "" && !p.revoked[fam] {
		// A rotated token used again: its whole family is revoked.
		p.reuses++
		p.revoked[fam] = true
		for t, f := range p.family {
			if f == fam {
				delete(p.refresh, t)
			}
		}
	}
	if !p.refresh[rt] || p.revoked[fam] {
		if !q.ReuseRevokesFamily && fam != "" && p.successor[rt] != "" {
			p.reuses++
		}
		p.mu.Unlock()
		oauthError(w, 400, "invalid_grant", "unknown refresh token")
		return
	}
	resource, scope, code, desc := p.targetLocked(r.PostForm.Get("resource"), r.PostForm.Get("scope"))
	p.params = append(p.params, map[string]string{"resource": r.PostForm.Get("resource"), "scope": r.PostForm.Get("scope")})
	if code != "" {
		p.mu.Unlock()
		oauthError(w, 400, code, desc)
		return
	}
	p.refreshes++
	resp := map[string]any{"token_type": "Bearer", "scope": scope}
	withID := p.openid[rt] && !q.NoIDTokenOnRefresh
	if q.RefreshEndsAccess {
		for at := range p.issuedWith[rt] {
			delete(p.access, at)
		}
	}
	a := p.prefix + "-at-" + random()
	p.access[a] = time.Now().Add(p.lifetime)
	p.audience[a], p.scopeOf[a] = resource, scope
	if resource == "" {
		p.lastAccess = a
	}
	resp["access_token"] = a
	if !q.NoExpiresIn {
		resp["expires_in"] = int(p.lifetime / time.Second)
	}
	if p.rotate {
		// Using rt retires whatever rt was issued in exchange for.
		for old, next := range p.successor {
			if next == rt && !q.KeepOldRefresh {
				delete(p.refresh, old)
			}
		}
		if !p.grace && !q.KeepOldRefresh {
			delete(p.refresh, rt)
		}
		nr := p.prefix + "-rt-" + random()
		p.refresh[nr] = true
		p.openid[nr] = p.openid[rt]
		p.successor[rt] = nr
		if fam == "" {
			fam = rt
		}
		p.family[nr] = fam
		p.issuedWith[nr] = map[string]bool{a: true}
		resp["refresh_token"] = nr
	} else {
		if p.issuedWith[rt] == nil || q.RefreshEndsAccess {
			p.issuedWith[rt] = map[string]bool{}
		}
		p.issuedWith[rt][a] = true
	}
	life := p.lifetime
	p.mu.Unlock()
	if withID {
		resp["id_token"] = p.idToken(life)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// RefreshParams returns the resource and scope parameters of each refresh
// request so far ("" when absent).
func (p *Provider) RefreshParams() []map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]string(nil), p.params...)
}

// exchange answers the authorization_code grant, checking the PKCE
// verifier against the challenge.
func (p *Provider) exchange(w http.ResponseWriter, r *http.Request) {
	code := r.PostForm.Get("code")
	p.mu.Lock()
	g, ok := p.codes[code]
	delete(p.codes, code)
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case !ok:
		oauthError(w, 400, "invalid_grant", "unknown or used code")
		return
	case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
		oauthError(w, 400, "invalid_grant", "PKCE verification failed")
		return
	case r.PostForm.Get("redirect_uri") != g.redirect:
		oauthError(w, 400, "invalid_grant", "redirect_uri mismatch")
		return
	}
	p.mu.Lock()
	a, rt := p.newPairLocked()
	life, q, offline, openid := p.lifetime, p.quirks, p.offline[code], p.openid[code]
	delete(p.offline, code)
	delete(p.openid, code)
	p.openid[rt] = openid
	p.scopeOf[a] = "read write"
	p.mu.Unlock()
	resp := map[string]any{"access_token": a, "refresh_token": rt, "token_type": "Bearer", "scope": "read write"}
	if openid {
		resp["id_token"] = p.idToken(life)
		resp["scope"] = "openid read write"
	}
	if !q.NoExpiresIn {
		resp["expires_in"] = int(life / time.Second)
	}
	if q.NoRefreshToken || q.OfflineConsent && !offline {
		delete(resp, "refresh_token")
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// twoResources reports whether scope names the .default scopes of more
// than one resource.
func twoResources(scope string) bool {
	res := map[string]bool{}
	for _, s := range strings.Fields(scope) {
		if r, ok := strings.CutSuffix(s, "/.default"); ok {
			res[r] = true
		}
	}
	return len(res) > 1
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}
