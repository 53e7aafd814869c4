package broker

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/oauth2"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// Sign-in limits.
const (
	// SignInLifetime is how long a sign-in's state stays usable.
	SignInLifetime = 10 * time.Minute
	// maxSignInsPerUser bounds one user's pending sign-ins; maxSignIns
	// bounds everyone's, generously. Finished and cancelled sign-ins do
	// not count.
	maxSignInsPerUser = 20
	maxSignIns        = 10000
	// maxEnded bounds the finished sign-ins kept so that a late callback
	// or a waiting command still learns how they ended.
	maxEnded = 4096
)

// ErrSignIn is credential.ErrSignIn, wrapped by errors about a sign-in attempt.
var ErrSignIn = credential.ErrSignIn

// Phases of a sign-in in the browser.
const (
	phaseNew        = iota // the start link was not opened yet
	phaseShown             // the confirmation page was shown to one browser
	phaseContinued         // that browser chose Continue and went to the provider
	phaseExchanging        // the callback came; the code is being exchanged
)

// signin is one pending (or recently finished) sign-in. Its mutable fields
// are guarded by signins.mu; the others are set at creation.
type signin struct {
	id, state, binding, csrf string
	uid                      int
	user                     string // the local user's name, for the pages
	in                       *integration
	// verifier is the PKCE verifier; owned here, wiped by memguard.Purge
	// and dropped when the sign-in ends.
	verifier *memguard.Enclave
	expires  time.Time

	phase  int
	ended  bool
	result credential.SignInStatus
	done   chan struct{} // closed when result is final
}

// signins holds the sign-ins in progress and the recently ended ones. It
// has its own lock, so that sign-in traffic never waits for credentials.
type signins struct {
	mu      sync.Mutex
	byState map[string]*signin
	byLogin map[string]*signin
	pending map[int]int // uid -> pending sign-ins
	total   int         // pending sign-ins of everyone
	ended   []*signin   // oldest first, at most maxEnded
}

func newSignins() *signins {
	return &signins{byState: map[string]*signin{}, byLogin: map[string]*signin{}, pending: map[int]int{}}
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// userName returns the name of uid for the sign-in pages.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return printable.String(u.Username, 64)
	}
	return "uid " + strconv.Itoa(uid)
}

// StartSignIn begins a sign-in to the integration with guid or name id
// for user uid, and returns the link the user opens in a browser.
func (b *Broker) StartSignIn(uid int, id string) (*credential.SignIn, error) {
	if b.callback == nil {
		return nil, fmt.Errorf("broker: sign-in needs [broker] callback_url: %w", ErrSignIn)
	}
	b.mu.Lock()
	in, err := b.find(id)
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	verifier, err := secmem.Seal([]byte(oauth2.GenerateVerifier()))
	if err != nil {
		return nil, fmt.Errorf("broker: start sign-in: %w: %w", err, credential.ErrUnavailable)
	}
	now := b.now()
	s := &signin{
		id: randomID(16), state: randomID(32), binding: randomID(32), csrf: randomID(32),
		uid: uid, user: userName(uid), in: in, expires: now.Add(SignInLifetime),
		verifier: verifier,
		done:     make(chan struct{}),
		result:   credential.SignInStatus{Status: credential.SignInPending, Name: in.cfg.Name, GUID: in.cfg.GUID.String()},
	}
	t := b.signins
	t.mu.Lock()
	t.pruneLocked(now)
	if t.pending[uid] >= maxSignInsPerUser {
		t.mu.Unlock()
		return nil, fmt.Errorf("broker: you have %d sign-ins in progress, the most one user may have; finish or cancel one (Ctrl-C its oauthfs login), or wait for them to expire: %w", maxSignInsPerUser, ErrSignIn)
	}
	if t.total >= maxSignIns {
		t.mu.Unlock()
		return nil, fmt.Errorf("broker: %d sign-ins are in progress on this broker, the most it takes; try again in a minute: %w", maxSignIns, ErrSignIn)
	}
	t.byState[s.state] = s
	t.byLogin[s.id] = s
	t.pending[uid]++
	t.total++
	t.mu.Unlock()
	start := *b.callback
	start.Path, start.RawQuery = "/start", url.Values{"state": {s.state}}.Encode()
	b.log.Info("sign-in started", "uid", uid, "integration", in.cfg.Name, "guid", in.cfg.GUID.String())
	return &credential.SignIn{ID: s.id, URL: start.String(), Expires: s.expires, Name: in.cfg.Name, GUID: in.cfg.GUID.String()}, nil
}

// pruneLocked ends sign-ins whose state expired; it keeps the ended list
// bounded. Callers hold t.mu.
func (t *signins) pruneLocked(now time.Time) {
	for _, s := range t.byState {
		if !s.ended && now.After(s.expires) {
			t.finishLocked(s, credential.SignInFailed, "the sign-in link expired after "+SignInLifetime.String()+"; run 'oauthfs login "+s.in.cfg.Name+"' again")
		}
	}
	for len(t.ended) > 0 && (len(t.ended) > maxEnded || now.After(t.ended[0].expires.Add(SignInLifetime))) {
		old := t.ended[0]
		t.ended = t.ended[1:]
		delete(t.byState, old.state)
		delete(t.byLogin, old.id)
	}
}

// finishLocked records the final result of s, frees its slot and wakes its
// waiters. Callers hold t.mu.
func (t *signins) finishLocked(s *signin, status, msg string) {
	if s.ended {
		return
	}
	s.ended = true
	s.verifier = nil
	s.result.Status, s.result.Message = status, msg
	close(s.done)
	t.pending[s.uid]--
	if t.pending[s.uid] <= 0 {
		delete(t.pending, s.uid)
	}
	t.total--
	t.ended = append(t.ended, s)
}

func (t *signins) finish(s *signin, status, msg string) {
	t.mu.Lock()
	t.finishLocked(s, status, msg)
	t.mu.Unlock()
}

// WaitSignIn waits until the sign-in loginID of user uid ends or ctx is
// done, and returns its status. Another user's sign-in is ErrNotFound.
func (b *Broker) WaitSignIn(ctx context.Context, uid int, loginID string) (credential.SignInStatus, error) {
	t := b.signins
	t.mu.Lock()
	s := t.byLogin[loginID]
	if s == nil || s.uid != uid {
		t.mu.Unlock()
		return credential.SignInStatus{}, fmt.Errorf("broker: sign-in %q: %w", printable.String(loginID, 64), credential.ErrNotFound)
	}
	expires, done := s.expires, s.done
	t.mu.Unlock()
	timer := time.NewTimer(time.Until(expires))
	defer timer.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-timer.C:
		t.finish(s, credential.SignInFailed, "the sign-in link expired after "+SignInLifetime.String()+"; run 'oauthfs login "+s.in.cfg.Name+"' again")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.result, nil
}

// CancelSignIn ends user uid's pending sign-in loginID.
func (b *Broker) CancelSignIn(uid int, loginID string) error {
	t := b.signins
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byLogin[loginID]
	if s == nil || s.uid != uid {
		return fmt.Errorf("broker: sign-in %q: %w", printable.String(loginID, 64), credential.ErrNotFound)
	}
	t.finishLocked(s, credential.SignInFailed, "cancelled")
	return nil
}

// SignInHandler serves the start link (/start), its confirmation form and
// the callback (the path of callback_url) for browsers.
func (b *Broker) SignInHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /start", b.startPage)
	mux.HandleFunc("POST /start", b.startContinue)
	cb := "/callback"
	if b.callback != nil && b.callback.Path != "" {
		cb = b.callback.Path
	}
	mux.HandleFunc("GET "+cb, b.callbackHandler)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		mux.ServeHTTP(w, r)
	})
}

func cookieName(s *signin) string { return "oauthfs_" + s.id[:12] }

// boundTo reports whether r comes from the browser that opened s first.
func boundTo(r *http.Request, s *signin) bool {
	c, err := r.Cookie(cookieName(s))
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.binding)) == 1
}

// lookup finds the pending sign-in of state, or says why there is none.
func (t *signins) lookupLocked(state string, now time.Time) (*signin, string) {
	s := t.byState[state]
	switch {
	case s == nil:
		return nil, "This sign-in link is unknown: it was not issued by this broker, or it was forgotten. Start again with oauthfs login."
	case s.ended && s.result.Status == credential.SignInSignedIn:
		return nil, "This sign-in was already completed; a link works once. Run oauthfs login " + s.in.cfg.Name + " again if needed."
	case s.ended:
		return nil, "This sign-in has ended (" + s.result.Message + "). Start again with oauthfs login " + s.in.cfg.Name + "."
	case now.After(s.expires):
		t.finishLocked(s, credential.SignInFailed, "the sign-in link expired")
		return nil, "This sign-in link expired (they last " + SignInLifetime.String() + "). Start again with oauthfs login " + s.in.cfg.Name + "."
	}
	return s, ""
}

// startPage answers the start link. The first browser to open it is bound
// to the sign-in (a cookie) and shown who the sign-in is for, with a
// Continue button; a second browser is refused and the sign-in fails, so
// a link that leaked cannot be used behind its owner's back.
func (b *Broker) startPage(w http.ResponseWriter, r *http.Request) {
	t := b.signins
	t.mu.Lock()
	s, fail := t.lookupLocked(r.URL.Query().Get("state"), b.now())
	if s != nil && s.phase != phaseNew && !boundTo(r, s) {
		t.finishLocked(s, credential.SignInFailed, "the sign-in link was opened in a second browser, so someone else may have it; start again, and open the link only in your own browser")
		b.log.Warn("sign-in link opened by a second browser; the sign-in failed", "uid", s.uid, "integration", s.in.cfg.Name)
		s, fail = nil, "This sign-in link was already opened in another browser. For your safety the sign-in was stopped; start again with oauthfs login."
	}
	if s != nil && s.phase == phaseNew {
		s.phase = phaseShown
	}
	t.mu.Unlock()
	if fail != "" {
		page(w, http.StatusBadRequest, "Sign-in failed", fail)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(s), Value: s.binding, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: b.callback.Scheme == "https", MaxAge: int(SignInLifetime / time.Second),
	})
	authOrigin := ""
	if u, err := url.Parse(s.in.cfg.AuthURL); err == nil {
		authOrigin = u.Scheme + "://" + u.Host
	}
	securityHeaders(w, "form-action 'self' "+authOrigin)
	w.Header().Set("Referrer-Policy", "same-origin")
	w.WriteHeader(http.StatusOK)
	confirmTmpl.Execute(w, map[string]string{
		"Integration": s.in.cfg.DisplayName, "User": s.user, "Host": b.host,
		"Name": s.in.cfg.Name, "State": s.state, "CSRF": s.csrf,
	})
}

// startContinue answers the confirmation form: Continue sends the browser
// to the provider; Cancel ends the sign-in.
func (b *Broker) startContinue(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		page(w, http.StatusBadRequest, "Sign-in failed", "The form could not be read.")
		return
	}
	if o := r.Header.Get("Origin"); o != "" && o != b.origin() {
		page(w, http.StatusForbidden, "Sign-in failed", "This form was sent from another site.")
		return
	}
	t := b.signins
	t.mu.Lock()
	s, fail := t.lookupLocked(r.PostForm.Get("state"), b.now())
	if s != nil && (!boundTo(r, s) || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1) {
		s, fail = nil, "This form did not come from the sign-in page that this browser opened."
	}
	if s != nil && r.PostForm.Get("action") == "cancel" {
		t.finishLocked(s, credential.SignInFailed, "cancelled in the browser")
		t.mu.Unlock()
		page(w, http.StatusOK, "Sign-in cancelled", "Nothing was changed. You can close this window.")
		return
	}
	var verifier *memguard.Enclave
	if s != nil {
		s.phase = phaseContinued
		verifier = s.verifier
	}
	t.mu.Unlock()
	if fail != "" {
		page(w, http.StatusForbidden, "Sign-in failed", fail)
		return
	}
	v, err := secmem.Open(verifier)
	if err != nil {
		page(w, http.StatusServiceUnavailable, "Sign-in failed", "The broker is too busy right now; try again in a moment.")
		return
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(string(v.Bytes()))}
	v.Destroy()
	for k, val := range s.in.cfg.AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, val))
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, b.oauthConfig(s.in, "").AuthCodeURL(s.state, opts...), http.StatusSeeOther)
}

// origin is the sign-in web server's public origin, from callback_url.
func (b *Broker) origin() string { return b.callback.Scheme + "://" + b.callback.Host }

// callbackHandler completes a sign-in: it checks the state, its binding
// to the browser, exchanges the code with the PKCE verifier and stores
// the tokens.
func (b *Broker) callbackHandler(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		page(w, http.StatusBadRequest, "Sign-in failed", "The callback has no state parameter: it did not come from a sign-in started by oauthfs.")
		return
	}
	t := b.signins
	t.mu.Lock()
	s, fail := t.lookupLocked(state, b.now())
	status := http.StatusBadRequest
	if s != nil && s.phase == phaseExchanging {
		s, fail = nil, "This sign-in is already being completed; a callback cannot be used twice."
	}
	if s != nil && (!boundTo(r, s) || s.phase != phaseContinued) {
		// Not consumed: the browser that started it can still finish.
		s, status, fail = nil, http.StatusForbidden, "This sign-in was started in another browser. Finish it in the browser that opened the sign-in link."
	}
	if fail != "" {
		t.mu.Unlock()
		b.log.Warn("sign-in callback refused", "reason", fail)
		page(w, status, "Sign-in failed", fail)
		return
	}
	in, uid := s.in, s.uid
	name := in.cfg.Name
	if e := q.Get("error"); e != "" {
		pe := providerError(e, q.Get("error_description"))
		msg := "the provider refused the sign-in: " + pe.Code
		if pe.Description != "" {
			msg += " (" + pe.Description + ")"
		}
		t.finishLocked(s, credential.SignInFailed, msg)
		t.mu.Unlock()
		b.log.Warn("sign-in refused by the provider", "uid", uid, "integration", name, "error", pe.Code)
		status := http.StatusForbidden
		if pe.Code == "server_error" || pe.Code == "temporarily_unavailable" {
			status = http.StatusBadGateway
		}
		page(w, status, "Sign-in to "+name+" failed", strings.ToUpper(msg[:1])+msg[1:]+".")
		return
	}
	code := q.Get("code")
	if code == "" {
		t.finishLocked(s, credential.SignInFailed, "the provider sent no authorization code")
		t.mu.Unlock()
		page(w, http.StatusBadRequest, "Sign-in to "+name+" failed", "The provider sent no authorization code.")
		return
	}
	verifier := s.verifier
	// Single use from here on, whatever the outcome: the waiting command
	// learns the result when it is final.
	s.phase, s.verifier = phaseExchanging, nil
	t.mu.Unlock()
	tok, account, err := b.exchangeCode(r.Context(), in, code, verifier)
	if err != nil {
		var pe *ProviderError
		status := http.StatusBadGateway
		if errors.As(err, &pe) && pe.Status >= 400 && pe.Status < 500 {
			status = http.StatusBadRequest
		}
		msg := "the token endpoint failed: " + err.Error()
		t.finish(s, credential.SignInFailed, msg)
		b.log.Warn("sign-in code exchange failed", "uid", uid, "integration", name, "err", err)
		page(w, status, "Sign-in to "+name+" failed", "The "+msg+".")
		return
	}
	scopes := grantedScopes(tok)
	if scopes == nil {
		scopes = in.cfg.Scopes // RFC 6749 §5.1: no scope means the requested ones
	}
	access, refresh := []byte(tok.AccessToken), []byte(tok.RefreshToken)
	err = b.Put(uid, in.cfg.GUID.String(), Credentials{
		AccessToken: access, RefreshToken: refresh, Expiry: expiryFrom(tok.ExpiresIn, b.now()), Scopes: scopes, Account: account,
	})
	if err != nil {
		t.finish(s, credential.SignInFailed, "the tokens could not be saved: "+err.Error())
		page(w, http.StatusInternalServerError, "Sign-in to "+name+" failed", "The tokens could not be saved: "+err.Error())
		return
	}
	t.mu.Lock()
	s.result.Account = account
	t.finishLocked(s, credential.SignInSignedIn, "")
	t.mu.Unlock()
	b.log.Info("signed in", "uid", uid, "integration", name, "guid", in.cfg.GUID.String(), "account", account, "refresh_token", tok.RefreshToken != "")
	as := ""
	if account != "" {
		as = " as " + account
	}
	page(w, http.StatusOK, "Signed in to "+name+as, "oauthfs now has your credentials for "+name+as+", for user "+s.user+" on host "+b.host+". You can close this window.")
}

// exchangeCode trades an authorization code for tokens with the PKCE
// verifier, and finds out which account signed in.
func (b *Broker) exchangeCode(ctx context.Context, in *integration, code string, verifier *memguard.Enclave) (*oauth2.Token, string, error) {
	v, err := secmem.Open(verifier)
	if err != nil {
		return nil, "", err
	}
	defer v.Destroy()
	secret, err := secmem.Open(in.secret)
	if err != nil {
		return nil, "", err
	}
	defer secret.Destroy()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.client)
	// Copies, not LockedBuffer.String(): see exchangeRefresh.
	tok, err := b.oauthConfig(in, string(secret.Bytes())).Exchange(ctx, code, oauth2.VerifierOption(string(v.Bytes())))
	if err != nil {
		return nil, "", classify(ctx, err, b.timeout, "token endpoint")
	}
	switch {
	case tok.AccessToken == "":
		return nil, "", errors.New("token endpoint sent no access token")
	case len(tok.AccessToken) > maxTokenLen || len(tok.RefreshToken) > maxTokenLen:
		return nil, "", fmt.Errorf("token endpoint sent a token longer than %d KiB", maxTokenLen>>10)
	}
	return tok, b.accountOf(ctx, in, tok), nil
}

// accountOf names the provider account behind tok, for people to read:
// from the OIDC id_token's claims, the token response, or the
// integration's userinfo_url. It returns "" when none says. The id_token
// is not verified: it came straight from the token endpoint, and the name
// is only shown (OpenID Connect Core §3.1.3.7 allows TLS in place of the
// signature for this flow).
func (b *Broker) accountOf(ctx context.Context, in *integration, tok *oauth2.Token) string {
	if idt, ok := tok.Extra("id_token").(string); ok {
		if parts := strings.Split(idt, "."); len(parts) == 3 && len(parts[1]) < maxBody {
			if raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "=")); err == nil {
				if a := accountName(raw); a != "" {
					return a
				}
			}
		}
	}
	for _, k := range []string{"email", "username", "login", "user_id"} {
		if v, ok := tok.Extra(k).(string); ok && v != "" {
			return printable.String(v, maxAccount)
		}
	}
	if in.cfg.UserinfoURL == "" {
		return ""
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.cfg.UserinfoURL, nil)
	if err != nil {
		return ""
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	return accountName(raw)
}

// accountName picks the most readable account name from a JSON object of
// claims or user details.
func accountName(raw []byte) string {
	var claims map[string]any
	if json.Unmarshal(raw, &claims) != nil {
		return ""
	}
	for _, k := range []string{"email", "preferred_username", "login", "username", "name", "sub"} {
		switch v := claims[k].(type) {
		case string:
			if v != "" {
				return printable.String(v, maxAccount)
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}

var confirmTmpl = template.Must(template.New("confirm").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in to {{.Integration}} · oauthfs</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;line-height:1.5;color:#1f2328}
h1{font-size:1.4em}.who{background:#fff8c5;border:1px solid #d4a72c;padding:.8em 1em;border-radius:6px}
button{font-size:1em;padding:.5em 1.2em;margin-right:.6em;border-radius:6px;border:1px solid #1f2328;background:#fff;cursor:pointer}
button.go{background:#1f6feb;color:#fff;border-color:#1f6feb}button:focus{outline:3px solid #0969da;outline-offset:2px}</style></head>
<body><h1>Sign in to {{.Integration}} for user {{.User}} on host {{.Host}}</h1>
<p class="who">The tokens of the account you sign in with will go to the local user <strong>{{.User}}</strong> on <strong>{{.Host}}</strong>.
Continue only if you are {{.User}} and you started this sign-in yourself (with <code>oauthfs login {{.Name}}</code>).
If someone sent you this link, close this page.</p>
<form method="post" action="/start"><input type="hidden" name="state" value="{{.State}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button class="go" type="submit" name="action" value="continue">Continue</button><button type="submit" name="action" value="cancel">Cancel</button></form>
</body></html>
`))

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{{.Title}} · oauthfs</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;line-height:1.5}
h1{font-size:1.4em}.ok{color:#1a7f37}.fail{color:#cf222e}</style></head>
<body><h1 class="{{if .OK}}ok{{else}}fail{{end}}">{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

// securityHeaders sets the headers every page carries: no caching, no
// framing, no referrer, and a Content-Security-Policy that allows only the
// page's own inline style and the form targets in formAction.
func securityHeaders(w http.ResponseWriter, formAction string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	csp := "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
	if formAction != "" {
		csp += "; form-action " + formAction
	}
	h.Set("Content-Security-Policy", csp)
}

// page writes a small HTML page that says plainly what happened.
func page(w http.ResponseWriter, status int, title, text string) {
	securityHeaders(w, "")
	w.WriteHeader(status)
	pageTmpl.Execute(w, struct {
		Title, Text string
		OK          bool
	}{title, text, status == http.StatusOK})
}

// hostName is this host's name, for the sign-in pages.
func hostName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "this host"
	}
	return printable.String(h, 64)
}
