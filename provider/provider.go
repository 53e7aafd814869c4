package provider

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/oauth2"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// Client talks to the provider of one integration. It is safe for
// concurrent use by multiple goroutines.
type Client struct {
	cfg *config.Integration // as configured
	dir *Directory          // the metadata of issuers
	// state is the configuration in use: cfg, with the endpoints its
	// issuer's metadata give where cfg has none, once they are known.
	state atomic.Pointer[resolved]
	// secret is the client secret; owned by the Client, wiped by
	// memguard.Purge at exit.
	secret   *memguard.Enclave
	http     *http.Client
	timeout  time.Duration
	callback string           // the redirect URI of sign-ins
	observe  func(Request)    // nil: nobody is told of token requests
	now      func() time.Time // the broker's clock
}

// Options are what a [Client] needs besides its integration.
type Options struct {
	// Callback is the broker's callback_url, the redirect URI of
	// sign-ins.
	Callback string
	// Timeout bounds every request.
	Timeout time.Duration
	// HTTP sends every request; see [NewHTTPClient].
	HTTP *http.Client
	// Observe, when set, is told of every request to the token endpoint
	// once it has its answer, for the broker's metrics. It must not
	// block.
	Observe func(Request)
	// Directory holds the metadata of issuers, shared by the clients of
	// a broker; nil: a directory of the client's own.
	Directory *Directory
	// Now is the clock answers are timed by; nil: time.Now.
	Now func() time.Time
}

// resolved is a configuration in use, and the metadata it took endpoints
// from (nil: none yet, or no issuer). It is immutable.
type resolved struct {
	cfg  *config.Integration
	meta *Metadata
}

// resolve returns cfg with the endpoints of m where cfg has none:
// configured endpoints win.
func resolve(cfg *config.Integration, m *Metadata) *resolved {
	if m == nil {
		return &resolved{cfg: cfg}
	}
	cp := *cfg
	for _, f := range []struct {
		dst *string
		v   string
	}{{&cp.AuthURL, m.AuthURL}, {&cp.TokenURL, m.TokenURL}, {&cp.RevocationURL, m.RevocationURL},
		{&cp.DeviceAuthURL, m.DeviceAuthURL}, {&cp.UserinfoURL, m.UserinfoURL}} {
		if *f.dst == "" {
			*f.dst = f.v
		}
	}
	return &resolved{cfg: &cp, meta: m}
}

// Request is one request to a token endpoint, as [Options.Observe] is
// told of it. It holds no secret.
type Request struct {
	Integration string // the integration's name
	// Grant is the grant type asked for: refresh_token,
	// authorization_code or device_code.
	Grant string
	// Outcome is [Outcome] of the request's error.
	Outcome string
	// Duration is how long the request took; zero for the device code
	// grant, whose polling lasts as long as the user takes.
	Duration time.Duration
}

// The outcomes of a token request, as [Outcome] names them.
const (
	OutcomeOK           = "ok"
	OutcomeInvalidGrant = "invalid_grant"
	OutcomeTransient    = "transient"
)

// Outcome names how a token request that returned err ended, as the
// broker treats it: ok; invalid_grant, when the grant was refused and only
// signing in again helps (for the device code grant, also access_denied
// and expired_token, RFC 8628 §3.5); or transient, for everything the
// broker retries (the endpoint unreachable, slow or failing, another
// error code, a malformed answer).
func Outcome(err error) string {
	var pe *Error
	switch {
	case err == nil:
		return OutcomeOK
	case errors.As(err, &pe) && (pe.InvalidGrant() || pe.Code == "access_denied" || pe.Code == "expired_token"):
		return OutcomeInvalidGrant
	default:
		return OutcomeTransient
	}
}

// observed tells the observer of a token request that started at start
// and ended with err.
func (c *Client) observed(grant string, start time.Time, err error) {
	if c.observe == nil {
		return
	}
	var d time.Duration
	if !start.IsZero() {
		d = time.Since(start)
	}
	c.observe(Request{Integration: c.cfg.Name, Grant: grant, Outcome: Outcome(err), Duration: d})
}

// New reads the integration's client secret into an enclave and returns
// a client for it that works as opts say.
func New(cfg *config.Integration, opts Options) (*Client, error) {
	s, err := cfg.Secret()
	if err != nil {
		return nil, err
	}
	sec, err := secmem.Seal(s)
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, dir: opts.Directory, secret: sec, http: opts.HTTP, timeout: opts.Timeout, callback: opts.Callback, observe: opts.Observe, now: opts.Now}
	if c.now == nil {
		c.now = time.Now
	}
	if c.dir == nil {
		c.dir = NewDirectory(opts.HTTP)
	}
	c.state.Store(resolve(cfg, nil))
	c.current()
	return c, nil
}

// current returns the configuration in use, taking the endpoints of the
// issuer's metadata once the directory has them.
func (c *Client) current() *resolved {
	st := c.state.Load()
	if st.meta != nil || c.cfg.Issuer == "" {
		return st
	}
	if m := c.dir.Cached(c.cfg.Issuer); m != nil {
		next := resolve(c.cfg, m)
		if c.state.CompareAndSwap(st, next) {
			return next
		}
		return c.state.Load()
	}
	return st
}

// Config returns the integration's configuration as it is used: with the
// endpoints its issuer's metadata give where the configuration has none,
// once they are known (see [Client.Ready]). Callers must not change it.
func (c *Client) Config() *config.Integration { return c.current().cfg }

// Ready makes sure the metadata of the integration's issuer are known,
// asking the issuer when they are not yet (at most once every 10 s after
// a failure, within the request timeout). For an integration without an
// issuer it returns nil at once. The error names the integration and the
// URL asked.
func (c *Client) Ready(ctx context.Context) error {
	if c.cfg.Issuer == "" || c.current().meta != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	m, err := c.dir.Lookup(ctx, c.cfg.Issuer)
	if err != nil {
		return fmt.Errorf("provider: integration %q: the metadata of its issuer: %w", c.cfg.Name, err)
	}
	if st := c.state.Load(); st.meta == nil {
		c.state.CompareAndSwap(st, resolve(c.cfg, m))
	}
	return nil
}

// readyFor is Ready when the endpoint in use is still unknown ("").
func (c *Client) readyFor(ctx context.Context, endpoint func(*config.Integration) string) error {
	if endpoint(c.Config()) != "" {
		return nil
	}
	return c.Ready(ctx)
}

func tokenURL(in *config.Integration) string { return in.TokenURL }

// CheckIssuer checks the iss parameters of an authorization response
// (RFC 9207 §2.4), which tell which authorization server sent it, so that
// a response another server delivered to the shared callback is not
// taken for this integration's (a mix-up attack). For an integration
// without an issuer there is nothing to compare with, and every response
// passes. Otherwise iss must be the issuer exactly; a response without
// iss passes only when the issuer's metadata do not say that it always
// sends one (authorization_response_iss_parameter_supported). The error
// wraps [ErrIssuer] and quotes the iss it got, cleaned.
func (c *Client) CheckIssuer(iss []string) error {
	want := c.cfg.Issuer
	st := c.current()
	switch {
	case want == "":
		return nil
	case len(iss) > 1:
		return fmt.Errorf("the authorization response names %d issuers: %w", len(iss), ErrIssuer)
	case len(iss) == 1 && iss[0] == want:
		return nil
	case len(iss) == 1:
		return fmt.Errorf("the authorization response comes from the issuer %q, not from %s's issuer %q: %w",
			printable.String(iss[0], 200), c.cfg.Name, want, ErrIssuer)
	case st.meta == nil:
		// Not known whether the issuer names itself: sign-ins start only
		// once it is (Ready), so this is not reached; refuse.
		return fmt.Errorf("the authorization response names no issuer, and the metadata of %s's issuer %q are not known: %w", c.cfg.Name, want, ErrIssuer)
	case st.meta.IssParameter:
		return fmt.Errorf("the authorization response names no issuer, but %s's issuer %q names itself in every response (authorization_response_iss_parameter_supported): %w",
			c.cfg.Name, want, ErrIssuer)
	}
	return nil
}

// maxConnsPerHost bounds the connections to one provider.
const maxConnsPerHost = 64

// NewHTTPClient returns the HTTP client for requests to providers. It
// never follows a redirect, which would carry a refresh token, a code or
// the client secret to another host (and past the https-only rule): a 3xx
// answer is an error. Its pool keeps connections to each provider for
// storms of refreshes.
func NewHTTPClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// A storm of refreshes (every user's tokens expiring together) shares
	// connections instead of opening one each: at most 64 to a provider,
	// all kept for reuse. HTTP/2, where the provider offers it, carries
	// many refreshes on one.
	tr.MaxConnsPerHost = maxConnsPerHost
	tr.MaxIdleConnsPerHost = maxConnsPerHost
	tr.MaxIdleConns = 0 // no limit across providers
	tr.ResponseHeaderTimeout = timeout
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// oauthConfig is the x/oauth2 view of the integration, with secret (a
// copy the caller makes from a locked buffer; x/oauth2 takes Go strings).
func (c *Client) oauthConfig(secret string) *oauth2.Config {
	in := c.Config()
	style := oauth2.AuthStyleInHeader
	if in.AuthStyle == config.AuthStylePost {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     in.ClientID,
		ClientSecret: secret,
		// Set, never detected: x/oauth2's detection retries a refused
		// request with the secret in the other place.
		Endpoint:    oauth2.Endpoint{AuthURL: in.AuthURL, TokenURL: in.TokenURL, DeviceAuthURL: in.DeviceAuthURL, AuthStyle: style},
		Scopes:      in.Scopes,
		RedirectURL: c.callback,
	}
}

// Answer is a token endpoint's successful answer. The caller owns the
// byte slices and wipes them (Wipe, or by sealing them into enclaves).
// Its times are absolute, fixed when the answer arrived: nothing
// downstream counts a lifetime from a later "now".
type Answer struct {
	Access []byte
	// Refresh is the refresh token the provider sent; for a refresh, only
	// when it rotated (differs from the one used), else nil.
	Refresh []byte
	// Obtained is when the answer arrived. Expiry is when the access
	// token expires: Obtained plus the answer's expires_in (at most
	// credential.MaxLifetime), or, when the answer has none and the
	// integration sets assumed_lifetime, plus that; the zero time for a
	// token that does not expire.
	Obtained, Expiry time.Time
	Scopes           []string // the granted scopes, or nil when the answer has none
	Account          string   // the account that signed in, when known (sign-in only)
	// IDToken is the OpenID Connect ID token the answer carried, or nil.
	IDToken []byte
	// TokenType is the access token's type, as the answer said it
	// ("Bearer" when it did not; bearer in any case reads "Bearer").
	TokenType string
}

// Wipe clears the answer's tokens.
func (a *Answer) Wipe() {
	memguard.WipeBytes(a.Access)
	memguard.WipeBytes(a.Refresh)
	memguard.WipeBytes(a.IDToken)
}

// maxTokenType bounds a token_type: the registered ones are a few letters.
const maxTokenType = 32

// answer checks a token response and copies what oauthfs keeps of it,
// timing it by the moment it arrived.
func (c *Client) answer(tok *oauth2.Token) (*Answer, error) {
	switch {
	case tok.AccessToken == "":
		return nil, errors.New("token endpoint sent no access token")
	case len(tok.AccessToken) > credential.MaxTokenLen || len(tok.RefreshToken) > credential.MaxTokenLen:
		return nil, fmt.Errorf("token endpoint sent a token longer than %d KiB", credential.MaxTokenLen>>10)
	}
	idt, _ := tok.Extra("id_token").(string)
	if len(idt) > credential.MaxTokenLen {
		return nil, fmt.Errorf("token endpoint sent an ID token longer than %d KiB", credential.MaxTokenLen>>10)
	}
	now := c.now()
	a := &Answer{Access: []byte(tok.AccessToken), Obtained: now, Expiry: credential.ExpiryFrom(tok.ExpiresIn, now),
		TokenType: printable.Code(tok.Type(), maxTokenType)}
	if idt != "" {
		a.IDToken = []byte(idt)
	}
	if tok.ExpiresIn <= 0 && c.cfg.AssumedLifetime > 0 {
		a.Expiry = now.Add(c.cfg.AssumedLifetime) // a provider that does not say (Salesforce)
	}
	if tok.RefreshToken != "" {
		a.Refresh = []byte(tok.RefreshToken)
	}
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		a.Scopes = strings.Fields(printable.String(s, MaxScopes))
	}
	return a, nil
}

// Refresh asks the token endpoint for a new access token with the refresh
// token in rt, within the request timeout. The broker passes a context
// that no reader's request ends (a refresh a reader gave up on still
// completes for the next), which its shutdown does.
func (c *Client) Refresh(ctx context.Context, rt *memguard.Enclave) (*Answer, error) {
	return c.RefreshFor(ctx, rt, Target{})
}

// Target narrows a refresh: to the tokens of one resource (RFC 8707
// resource indicators; Microsoft Entra's tokens for another API), and to
// some of the granted scopes (RFC 6749 §6). The zero Target asks for what
// the grant holds.
type Target struct {
	Resource string
	Scopes   []string
}

// IsZero reports whether t asks for nothing narrower than the grant.
func (t Target) IsZero() bool { return t.Resource == "" && len(t.Scopes) == 0 }

// RefreshFor is Refresh narrowed to target.
func (c *Client) RefreshFor(ctx context.Context, rt *memguard.Enclave, target Target) (*Answer, error) {
	if err := c.readyFor(ctx, tokenURL); err != nil {
		return nil, err
	}
	rtBuf, err := secmem.Open(rt)
	if err != nil {
		return nil, fmt.Errorf("open refresh token: %w", err)
	}
	defer rtBuf.Destroy()
	secret, err := secmem.Open(c.secret)
	if err != nil {
		return nil, fmt.Errorf("open client secret: %w", err)
	}
	defer secret.Destroy()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	// x/oauth2 takes and returns Go strings, so these are copies: never
	// LockedBuffer.String(), which aliases memory that Destroy unmaps
	// while x/oauth2 may still hold the string. The copies are
	// short-lived and reclaimed by the garbage collector
	// (docs/security.md).
	start := time.Now()
	var tok *oauth2.Token
	if target.IsZero() {
		tok, err = c.oauthConfig(string(secret.Bytes())).TokenSource(ctx, &oauth2.Token{RefreshToken: string(rtBuf.Bytes())}).Token()
	} else {
		tok, err = c.narrowRefresh(ctx, string(secret.Bytes()), string(rtBuf.Bytes()), target)
	}
	if err != nil {
		err = classify(ctx, err, c.timeout, "token endpoint")
		c.observed("refresh_token", start, err)
		return nil, err
	}
	a, err := c.answer(tok)
	c.observed("refresh_token", start, err)
	if err != nil {
		return nil, err
	}
	if a.Refresh != nil && bytes.Equal(a.Refresh, rtBuf.Bytes()) {
		memguard.WipeBytes(a.Refresh)
		a.Refresh = nil // not rotated
	}
	return a, nil
}

// narrowRefresh sends a refresh_token grant with the resource and scope
// parameters of target. x/oauth2's token source sends no parameters
// beyond the refresh token, so the request goes through Exchange, whose
// options may set any: grant_type and refresh_token replace the
// authorization code's, and the empty code parameter left behind is one
// the server must ignore for this grant (RFC 6749 §3.2: unrecognised
// parameters are ignored). No redirect_uri is sent.
func (c *Client) narrowRefresh(ctx context.Context, secret, rt string, target Target) (*oauth2.Token, error) {
	cfg := c.oauthConfig(secret)
	cfg.RedirectURL = ""
	opts := []oauth2.AuthCodeOption{
		oauth2.SetAuthURLParam("grant_type", "refresh_token"),
		oauth2.SetAuthURLParam("refresh_token", rt),
	}
	if target.Resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", target.Resource))
	}
	if len(target.Scopes) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("scope", strings.Join(target.Scopes, " ")))
	}
	return cfg.Exchange(ctx, "", opts...)
}

// AuthCodeURL returns where a sign-in sends the browser: the
// authorization endpoint with state, the PKCE challenge of the verifier in
// v, and the integration's auth_params.
func (c *Client) AuthCodeURL(state string, v *memguard.Enclave) (string, error) {
	if c.Config().AuthURL == "" {
		return "", fmt.Errorf("integration %s: the authorization endpoint is not known yet (its issuer was not reached)", c.cfg.Name)
	}
	buf, err := secmem.Open(v)
	if err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(string(buf.Bytes()))}
	buf.Destroy()
	for k, val := range c.Config().AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, val))
	}
	return c.oauthConfig("").AuthCodeURL(state, opts...), nil
}

// NewVerifier returns a new PKCE verifier, sealed.
func NewVerifier() (*memguard.Enclave, error) {
	return secmem.Seal([]byte(oauth2.GenerateVerifier()))
}

// Exchange trades an authorization code for tokens with the PKCE verifier
// in v, and finds out which account signed in. ctx may end early; the
// request is bounded by the request timeout either way.
func (c *Client) Exchange(ctx context.Context, code string, v *memguard.Enclave) (*Answer, error) {
	if err := c.readyFor(ctx, tokenURL); err != nil {
		return nil, err
	}
	vb, err := secmem.Open(v)
	if err != nil {
		return nil, err
	}
	defer vb.Destroy()
	secret, err := secmem.Open(c.secret)
	if err != nil {
		return nil, err
	}
	defer secret.Destroy()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	// Copies, not LockedBuffer.String(): see Refresh.
	start := time.Now()
	tok, err := c.oauthConfig(string(secret.Bytes())).Exchange(ctx, code, oauth2.VerifierOption(string(vb.Bytes())))
	if err != nil {
		err = classify(ctx, err, c.timeout, "token endpoint")
		c.observed("authorization_code", start, err)
		return nil, err
	}
	a, err := c.answer(tok)
	c.observed("authorization_code", start, err)
	if err != nil {
		return nil, err
	}
	a.Account = c.account(ctx, tok)
	return a, nil
}

// account names the provider account behind tok, for people to read:
// from the OIDC id_token's claims, the token response, or the
// integration's userinfo_url. It returns "" when none says. The id_token
// is not verified: it came straight from the token endpoint, and the name
// is only shown (OpenID Connect Core §3.1.3.7 allows TLS in place of the
// signature for this flow).
func (c *Client) account(ctx context.Context, tok *oauth2.Token) string {
	if idt, ok := tok.Extra("id_token").(string); ok {
		if parts := strings.Split(idt, "."); len(parts) == 3 && len(parts[1]) < maxUserinfo {
			if raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "=")); err == nil {
				if a := accountName(raw); a != "" {
					return a
				}
			}
		}
	}
	for _, k := range []string{"email", "username", "login", "user_id"} {
		if v, ok := tok.Extra(k).(string); ok && v != "" {
			return printable.String(v, MaxAccount)
		}
	}
	userinfo := c.Config().UserinfoURL
	if userinfo == "" {
		return ""
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, userinfo, nil)
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxUserinfo))
	return accountName(raw)
}

// maxUserinfo bounds a userinfo answer or id_token payload.
const maxUserinfo = 64 << 10

// accountName picks the most readable account name from a JSON object of
// claims or user details: email, preferred_username, login, username,
// name, sub. It returns "" when none is there.
func accountName(raw []byte) string {
	var claims map[string]any
	if json.Unmarshal(raw, &claims) != nil {
		return ""
	}
	for _, k := range []string{"email", "preferred_username", "login", "username", "name", "sub"} {
		switch v := claims[k].(type) {
		case string:
			if v != "" {
				return printable.String(v, MaxAccount)
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}

// Revoke posts an RFC 7009 revocation request for the token in tok (which
// it destroys) to the integration's revocation_url, authenticating as
// auth_style says.
func (c *Client) Revoke(ctx context.Context, tok *secmem.Buffer, hint string) error {
	defer tok.Destroy()
	if err := c.readyFor(ctx, func(in *config.Integration) string { return in.RevocationURL }); err != nil {
		return err
	}
	secret, err := secmem.Open(c.secret)
	if err != nil {
		return err
	}
	defer secret.Destroy()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	form := url.Values{"token": {string(tok.Bytes())}, "token_type_hint": {hint}}
	in := c.Config()
	post := in.AuthStyle == config.AuthStylePost
	if post {
		form.Set("client_id", in.ClientID)
		form.Set("client_secret", string(secret.Bytes()))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if !post {
		// client_secret_basic, with the RFC 6749 §2.3.1 form encoding.
		req.SetBasicAuth(url.QueryEscape(in.ClientID), url.QueryEscape(string(secret.Bytes())))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return classify(ctx, err, c.timeout, "revocation endpoint")
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Errorf("revocation endpoint answered HTTP %d, a redirect, which oauthfs does not follow", resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("revocation endpoint answered HTTP %d", resp.StatusCode)
	}
	return nil
}
