package broker

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/oauth2"

	"github.com/oauthfs/oauthfs/broker/api"
)

// Sign-in limits.
const (
	// SignInLifetime is how long a sign-in's state stays usable.
	SignInLifetime = 10 * time.Minute
	// maxSignInsPerUser and maxSignIns bound the pending sign-ins.
	maxSignInsPerUser = 20
	maxSignIns        = 1000
)

// ErrSignIn is api.ErrSignIn, wrapped by errors about a sign-in attempt.
var ErrSignIn = api.ErrSignIn

// signin is one pending (or recently finished) sign-in. Its fields are
// guarded by Broker.mu, except the immutable ones set at creation.
type signin struct {
	id, state, binding string
	uid                int
	in                 *integration
	// verifier is the PKCE verifier; owned here, wiped by memguard.Purge
	// and dropped when the sign-in ends.
	verifier *memguard.Enclave
	expires  time.Time
	used     bool
	result   api.SignInStatus
	done     chan struct{} // closed when result is final
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// StartSignIn begins a sign-in to the integration with guid or name id
// for user uid, and returns the link the user opens in a browser.
func (b *Broker) StartSignIn(uid int, id string) (*api.SignIn, error) {
	if b.callback == nil {
		return nil, fmt.Errorf("broker: sign-in needs [broker] callback_url: %w", ErrSignIn)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	in, err := b.find(id)
	if err != nil {
		return nil, err
	}
	now := b.now()
	b.pruneSignInsLocked(now)
	mine := 0
	for _, s := range b.signins {
		if s.uid == uid && !s.used {
			mine++
		}
	}
	if mine >= maxSignInsPerUser || len(b.signins) >= maxSignIns {
		return nil, fmt.Errorf("broker: too many sign-ins in progress; finish or cancel one, or wait %v: %w", SignInLifetime, ErrSignIn)
	}
	s := &signin{
		id: randomID(16), state: randomID(32), binding: randomID(32),
		uid: uid, in: in, expires: now.Add(SignInLifetime),
		verifier: memguard.NewEnclave([]byte(oauth2.GenerateVerifier())),
		done:     make(chan struct{}),
		result:   api.SignInStatus{Status: "pending", Name: in.cfg.Name, GUID: in.cfg.GUID.String()},
	}
	b.signins[s.state] = s
	b.logins[s.id] = s
	start := *b.callback
	start.Path, start.RawQuery = "/start", url.Values{"state": {s.state}}.Encode()
	b.log.Info("sign-in started", "uid", uid, "integration", in.cfg.Name, "guid", in.cfg.GUID.String())
	return &api.SignIn{ID: s.id, URL: start.String(), Expires: s.expires, Name: in.cfg.Name, GUID: in.cfg.GUID.String()}, nil
}

// pruneSignInsLocked forgets sign-ins whose state expired long ago; for a
// while after expiry they are kept so a late callback is told "expired"
// rather than "unknown".
func (b *Broker) pruneSignInsLocked(now time.Time) {
	for k, s := range b.signins {
		if now.After(s.expires.Add(SignInLifetime)) {
			delete(b.signins, k)
			delete(b.logins, s.id)
		}
	}
}

// finishLocked records the final result of s and wakes its waiters.
func (b *Broker) finishLocked(s *signin, status, msg string) {
	if s.result.Status != "pending" {
		return
	}
	s.used = true
	s.verifier = nil
	s.result.Status, s.result.Message = status, msg
	close(s.done)
}

// WaitSignIn waits until the sign-in loginID of user uid ends or ctx is
// done, and returns its status. Another user's sign-in is ErrNotFound.
func (b *Broker) WaitSignIn(ctx context.Context, uid int, loginID string) (api.SignInStatus, error) {
	b.mu.Lock()
	s := b.logins[loginID]
	if s == nil || s.uid != uid {
		b.mu.Unlock()
		return api.SignInStatus{}, fmt.Errorf("broker: sign-in %q: %w", loginID, api.ErrNotFound)
	}
	expires, done := s.expires, s.done
	b.mu.Unlock()
	timer := time.NewTimer(time.Until(expires))
	defer timer.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-timer.C:
		b.mu.Lock()
		b.finishLocked(s, "failed", "the sign-in link expired after "+SignInLifetime.String()+"; run 'oauthfs login "+s.in.cfg.Name+"' again")
		b.mu.Unlock()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return s.result, nil
}

// CancelSignIn ends user uid's pending sign-in loginID.
func (b *Broker) CancelSignIn(uid int, loginID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.logins[loginID]
	if s == nil || s.uid != uid {
		return fmt.Errorf("broker: sign-in %q: %w", loginID, api.ErrNotFound)
	}
	b.finishLocked(s, "failed", "cancelled")
	return nil
}

// SignInHandler serves the start link (/start) and the callback (the path
// of callback_url) for browsers.
func (b *Broker) SignInHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /start", b.start)
	cb := "/callback"
	if b.callback != nil && b.callback.Path != "" {
		cb = b.callback.Path
	}
	mux.HandleFunc("GET "+cb, b.callbackHandler)
	return mux
}

func cookieName(s *signin) string { return "oauthfs_" + s.id[:12] }

// start sets the cookie that binds the sign-in to this browser and sends
// the browser to the provider.
func (b *Broker) start(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	s := b.signins[r.URL.Query().Get("state")]
	var fail string
	switch {
	case s == nil:
		fail = "This sign-in link is unknown. Start again with oauthfs login."
	case s.used:
		fail = "This sign-in link was already used. Start again with oauthfs login " + s.in.cfg.Name + "."
	case b.now().After(s.expires):
		fail = "This sign-in link expired. Start again with oauthfs login " + s.in.cfg.Name + "."
	}
	if fail != "" {
		b.mu.Unlock()
		page(w, http.StatusBadRequest, "Sign-in failed", fail)
		return
	}
	verifier, err := s.verifier.Open()
	in := s.in
	b.mu.Unlock()
	if err != nil {
		page(w, http.StatusInternalServerError, "Sign-in failed", "internal error")
		return
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(string(verifier.Bytes()))}
	verifier.Destroy()
	for k, v := range in.cfg.AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(s), Value: s.binding, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: b.callback.Scheme == "https", MaxAge: int(SignInLifetime / time.Second),
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, b.oauthConfig(in, "").AuthCodeURL(s.state, opts...), http.StatusFound)
}

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
	b.mu.Lock()
	s := b.signins[state]
	now := b.now()
	var status int
	var fail string
	switch {
	case s == nil:
		status, fail = http.StatusBadRequest, "This sign-in is unknown: its state is not one oauthfs issued, or it was forgotten. Start again with oauthfs login."
	case s.used:
		status, fail = http.StatusBadRequest, "This sign-in was already completed or cancelled; a callback cannot be used twice. Start again with oauthfs login "+s.in.cfg.Name+" if needed."
	case now.After(s.expires):
		b.finishLocked(s, "failed", "the sign-in link expired")
		status, fail = http.StatusBadRequest, "This sign-in expired (they last "+SignInLifetime.String()+"). Start again with oauthfs login "+s.in.cfg.Name+"."
	}
	if fail == "" {
		c, err := r.Cookie(cookieName(s))
		if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.binding)) != 1 {
			// Not consumed: the browser that started it can still finish.
			status, fail = http.StatusForbidden, "This sign-in was started in another browser. Finish it in the browser that opened the sign-in link."
		}
	}
	if fail != "" {
		b.mu.Unlock()
		b.log.Warn("sign-in callback refused", "reason", fail)
		page(w, status, "Sign-in failed", fail)
		return
	}
	in, uid := s.in, s.uid
	name := in.cfg.Name
	if e := q.Get("error"); e != "" {
		desc := printable(q.Get("error_description"), maxDescription)
		msg := "the provider refused the sign-in: " + e
		if desc != "" {
			msg += " (" + desc + ")"
		}
		b.finishLocked(s, "failed", msg)
		b.mu.Unlock()
		b.log.Warn("sign-in refused by the provider", "uid", uid, "integration", name, "error", e)
		status := http.StatusForbidden
		if e == "server_error" || e == "temporarily_unavailable" {
			status = http.StatusBadGateway
		}
		page(w, status, "Sign-in to "+name+" failed", strings.ToUpper(msg[:1])+msg[1:]+".")
		return
	}
	code := q.Get("code")
	if code == "" {
		b.finishLocked(s, "failed", "the provider sent no authorization code")
		b.mu.Unlock()
		page(w, http.StatusBadRequest, "Sign-in to "+name+" failed", "The provider sent no authorization code.")
		return
	}
	s.used = true // single use from here on, whatever the outcome
	verifier, verr := s.verifier.Open()
	b.mu.Unlock()
	if verr != nil {
		b.signInDone(s, "failed", "internal error")
		page(w, http.StatusInternalServerError, "Sign-in failed", "internal error")
		return
	}
	tok, err := b.exchangeCode(r.Context(), in, code, verifier)
	if err != nil {
		var pe *ProviderError
		status := http.StatusBadGateway
		if errors.As(err, &pe) && pe.Status >= 400 && pe.Status < 500 {
			status = http.StatusBadRequest
		}
		msg := "the token endpoint failed: " + err.Error()
		b.signInDone(s, "failed", msg)
		b.log.Warn("sign-in code exchange failed", "uid", uid, "integration", name, "err", err)
		page(w, status, "Sign-in to "+name+" failed", "The "+msg+".")
		return
	}
	var expiry time.Time
	if tok.ExpiresIn > 0 {
		expiry = b.now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	scopes := in.cfg.Scopes // RFC 6749 §5.1: no scope means the requested ones
	if sc, ok := tok.Extra("scope").(string); ok && sc != "" {
		scopes = strings.Fields(sc)
	}
	err = b.Put(uid, in.cfg.GUID.String(), Credentials{
		AccessToken: []byte(tok.AccessToken), RefreshToken: []byte(tok.RefreshToken), Expiry: expiry, Scopes: scopes,
	})
	if err != nil {
		b.signInDone(s, "failed", "the tokens could not be saved: "+err.Error())
		page(w, http.StatusInternalServerError, "Sign-in to "+name+" failed", "The tokens could not be saved: "+err.Error())
		return
	}
	b.signInDone(s, "signed_in", "")
	b.log.Info("signed in", "uid", uid, "integration", name, "guid", in.cfg.GUID.String(), "refresh_token", tok.RefreshToken != "")
	page(w, http.StatusOK, "Signed in to "+name, "oauthfs now has your credentials for "+name+". You can close this window.")
}

func (b *Broker) signInDone(s *signin, status, msg string) {
	b.mu.Lock()
	b.finishLocked(s, status, msg)
	b.mu.Unlock()
}

// exchangeCode trades an authorization code for tokens, with the PKCE
// verifier, which it destroys.
func (b *Broker) exchangeCode(ctx context.Context, in *integration, code string, verifier *memguard.LockedBuffer) (*oauth2.Token, error) {
	defer verifier.Destroy()
	secret, err := in.secret.Open()
	if err != nil {
		return nil, err
	}
	defer secret.Destroy()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.client)
	// Copies, not LockedBuffer.String(): see exchangeRefresh.
	tok, err := b.oauthConfig(in, string(secret.Bytes())).Exchange(ctx, code, oauth2.VerifierOption(string(verifier.Bytes())))
	if err != nil {
		return nil, classify(ctx, err, b.timeout, "token endpoint")
	}
	return tok, nil
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} · oauthfs</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;line-height:1.5}
h1{font-size:1.4em}.ok{color:#1a7f37}.fail{color:#cf222e}</style></head>
<body><h1 class="{{if .OK}}ok{{else}}fail{{end}}">{{.Title}}</h1><p>{{.Text}}</p></body></html>
`))

// page writes a small HTML page that says plainly what happened.
func page(w http.ResponseWriter, status int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(status)
	pageTmpl.Execute(w, struct {
		Title, Text string
		OK          bool
	}{title, text, status == http.StatusOK})
}
