package signin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/hostcheck"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/metrics"
	"github.com/oauthfs/oauthfs/provider"
)

// maxBody bounds request bodies of the sign-in pages.
const maxBody = 64 << 10

// Sign-in limits.
const (
	// lifetime is how long a sign-in's state stays usable.
	lifetime = 10 * time.Minute
	// maxSignInsPerUser bounds one user's pending sign-ins; maxSignIns
	// bounds everyone's, generously. Finished and cancelled sign-ins do
	// not count.
	maxSignInsPerUser = 20
	maxSignIns        = 10000
	// maxEnded bounds the finished sign-ins kept so that a late callback
	// or a waiting command still learns how they ended.
	maxEnded = 4096
)

// Keeper is what sign-in needs from a broker: the integrations, where
// the tokens of a completed sign-in go, and the clock. Implementations
// are safe for concurrent use.
type Keeper interface {
	// Provider returns the integration with guid or name id, or an error
	// wrapping credential.ErrNotFound.
	Provider(id string) (*provider.Client, error)
	// Put stores t for user uid and integration guid, and wipes its byte
	// slices.
	Put(uid int, guid string, t credential.Tokens) error
	// Now is the broker's clock.
	Now() time.Time
	// Integrations lists what user uid sees of every integration.
	Integrations(uid int) []credential.Integration
	// SignOut forgets user uid's tokens for the integration with guid
	// and revokes them at the provider, as oauthfs logout does; note
	// says, for people, how the revocation went ("" when it went well or
	// none is configured).
	SignOut(ctx context.Context, uid int, guid string) (note string, err error)
}

// State is how a sign-in stands, as the waiting command sees it.
type State string

// The values of State.
const (
	Pending  State = "pending"
	SignedIn State = "signed_in"
	Failed   State = "failed"
)

// Result is the state of one sign-in as seen by the user waiting on it.
type Result struct {
	Status  State  `json:"status"`
	Message string `json:"message,omitempty"`
	Name    string `json:"name"`
	GUID    string `json:"guid"`
	// Account names the provider account that signed in, when the
	// provider said (an email, a login or an OIDC sub).
	Account string `json:"account,omitempty"`
}

// Link is a started sign-in: the link to open and how to wait for it.
type Link struct {
	ID      string    `json:"login_id"`
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
	Name    string    `json:"name"`
	GUID    string    `json:"guid"`
}

// Phases of a sign-in in the browser.
const (
	phaseNew        = iota // the start link was not opened yet
	phaseShown             // the confirmation page was shown to one browser
	phaseContinued         // that browser chose Continue and went to the provider
	phaseExchanging        // the callback came; the code is being exchanged
	phaseConfirming        // the tokens wait for the final confirmation
)

// signin is one pending (or recently finished) sign-in. Its mutable fields
// are guarded by Table.mu; the others are set at creation.
type signin struct {
	id, state, binding, csrf string
	uid                      int
	user                     string // the local user's name, for the pages
	in                       *provider.Client
	// verifier is the PKCE verifier; owned here, wiped by memguard.Purge
	// and dropped when the sign-in ends.
	verifier *memguard.Enclave
	expires  time.Time

	phase  int
	ended  bool
	result Result
	done   chan struct{} // closed when result is final

	// Between the callback and the final confirmation: the tokens (sealed,
	// owned here and dropped when the sign-in ends) and the nonce that
	// only the confirmation page carries.
	held    *held
	confirm string

	// cancel stops the polling of a device sign-in; nil for others.
	cancel context.CancelFunc
	// settings is the settings visit the sign-in started from, where
	// it comes back to; nil for others.
	settings *settingsVisit
	// scopes are the granted scopes, once signed in: for the audit log.
	scopes []string
}

// held is a token answer waiting for the final confirmation.
type held struct {
	access, refresh *memguard.Enclave
	id              *memguard.Enclave // the OpenID Connect ID token, or nil
	tokenType       string
	expiry          time.Time // as the provider's answer said when it arrived
	obtained        time.Time // when it arrived
	scopes          []string
	account         string
}

// Table holds the sign-ins in progress and the recently ended ones, and
// serves their pages. It has its own lock, so that sign-in traffic never
// waits for credentials. It is safe for concurrent use.
type Table struct {
	k        Keeper
	log      *slog.Logger
	callback *url.URL // where the provider sends the browser back; nil: no sign-in
	host     string   // this host's name, shown on the pages

	mu      sync.Mutex // guards the fields below and each signin's mutable fields
	byState map[string]*signin
	byLogin map[string]*signin
	pending map[int]int // uid -> pending sign-ins
	total   int         // pending sign-ins of everyone
	ended   []*signin   // oldest first, at most maxEnded

	links  map[string]*settingsLink  // one-time settings links, by key
	visits map[string]*settingsVisit // settings visits, by the key of their URL
	// deviceStarts holds, per uid, when its recent device sign-ins began.
	deviceStarts map[int][]time.Time
	cluster      *cluster         // nil on one host
	audit        *audit.Log       // nil: no audit log
	metrics      *metrics.Metrics // nil: no metrics
}

// New returns the sign-in table of a broker whose sign-in web server is
// reached at callbackURL (the provider's redirect URI; "" disables
// sign-in). log may be nil.
func New(k Keeper, callbackURL string, log *slog.Logger) (*Table, error) {
	t := &Table{k: k, log: log, host: hostName(), byState: map[string]*signin{}, byLogin: map[string]*signin{}, pending: map[int]int{},
		links: map[string]*settingsLink{}, visits: map[string]*settingsVisit{}, deviceStarts: map[int][]time.Time{}}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if callbackURL != "" {
		u, err := url.Parse(callbackURL)
		if err != nil {
			return nil, fmt.Errorf("signin: callback_url: %w", err)
		}
		t.callback = u
	}
	return t, nil
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

// Start begins a sign-in to the integration with guid or name id for user
// uid, and returns the link the user opens in a browser.
func (t *Table) Start(uid int, id string) (*Link, error) {
	if t.callback == nil {
		return nil, fmt.Errorf("signin: sign-in needs [broker] callback_url: %w", credential.ErrSignIn)
	}
	in, err := t.k.Provider(id)
	if err != nil {
		return nil, err
	}
	// The issuer's metadata give the endpoints and say whether the
	// callback must see the issuer's iss: no sign-in without them.
	// Not the caller's context: the metadata, once read, serve every
	// later sign-in (Ready bounds the request by the request timeout).
	if err := in.Ready(context.Background()); err != nil {
		return nil, fmt.Errorf("signin: start: %w: %w", err, credential.ErrUnavailable)
	}
	verifier, err := provider.NewVerifier()
	if err != nil {
		return nil, fmt.Errorf("signin: start: %w: %w", err, credential.ErrUnavailable)
	}
	cfg := in.Config()
	now := t.k.Now()
	s := &signin{
		id: randomID(16), state: randomID(32), binding: randomID(32), csrf: randomID(32),
		uid: uid, user: userName(uid), in: in, expires: now.Add(lifetime),
		verifier: verifier,
		done:     make(chan struct{}),
		result:   Result{Status: Pending, Name: cfg.Name, GUID: cfg.GUID.String()},
	}
	t.mu.Lock()
	if err := t.roomLocked(uid, now); err != nil {
		t.mu.Unlock()
		return nil, err
	}
	t.byState[s.state] = s
	t.byLogin[s.id] = s
	t.pending[uid]++
	t.total++
	t.mu.Unlock()
	t.route(s.state, s.expires)
	start := *t.callback
	start.Path, start.RawQuery = "/start", url.Values{"state": {s.state}}.Encode()
	t.log.Info("sign-in started", "uid", uid, "integration", cfg.Name, "guid", cfg.GUID.String())
	return &Link{ID: s.id, URL: start.String(), Expires: s.expires, Name: cfg.Name, GUID: cfg.GUID.String()}, nil
}

// roomLocked says whether user uid may start another sign-in, after
// pruning the expired ones. Callers hold t.mu.
func (t *Table) roomLocked(uid int, now time.Time) error {
	t.pruneLocked(now)
	if t.pending[uid] >= maxSignInsPerUser {
		return fmt.Errorf("signin: uid %d has %d sign-ins in progress, the most one user may have: %w", uid, maxSignInsPerUser, credential.ErrSignIn)
	}
	if t.total >= maxSignIns {
		return fmt.Errorf("signin: %d sign-ins are in progress on this broker, the most it takes: %w", maxSignIns, credential.ErrSignIn)
	}
	return nil
}

// pruneLocked ends sign-ins whose state expired; it keeps the ended list
// bounded. Callers hold t.mu.
func (t *Table) pruneLocked(now time.Time) {
	for _, s := range t.byLogin {
		if !s.ended && now.After(s.expires) {
			if s.cancel != nil {
				t.finishLocked(s, Failed, "the code expired before the sign-in was approved; start again")
			} else {
				t.finishLocked(s, Failed, "the sign-in link expired after "+lifetime.String())
			}
		}
	}
	for len(t.ended) > 0 && (len(t.ended) > maxEnded || now.After(t.ended[0].expires.Add(lifetime))) {
		old := t.ended[0]
		t.ended = t.ended[1:]
		if old.state != "" {
			delete(t.byState, old.state)
		}
		delete(t.byLogin, old.id)
	}
}

// finishLocked records the final result of s, frees its slot and wakes its
// waiters. Callers hold t.mu.
func (t *Table) finishLocked(s *signin, status State, msg string) {
	if s.ended {
		return
	}
	s.ended = true
	s.verifier, s.held = nil, nil
	if s.cancel != nil {
		s.cancel() // a device sign-in stops polling
	}
	s.result.Status, s.result.Message = status, msg
	close(s.done)
	t.recordSignInLocked(s)
	t.releaseLocked(s.uid)
	t.ended = append(t.ended, s)
}

// releaseLocked frees a slot of uid. Callers hold t.mu.
func (t *Table) releaseLocked(uid int) {
	t.pending[uid]--
	if t.pending[uid] <= 0 {
		delete(t.pending, uid)
	}
	t.total--
}

func (t *Table) finish(s *signin, status State, msg string) {
	t.mu.Lock()
	t.finishLocked(s, status, msg)
	t.mu.Unlock()
}

// Wait waits until the sign-in loginID of user uid ends or ctx is done,
// and returns its status. Another user's sign-in is not found.
func (t *Table) Wait(ctx context.Context, uid int, loginID string) (Result, error) {
	t.mu.Lock()
	s := t.byLogin[loginID]
	if s == nil || s.uid != uid {
		t.mu.Unlock()
		return Result{}, fmt.Errorf("signin: sign-in %q: %w", printable.String(loginID, 64), credential.ErrNotFound)
	}
	expires, done := s.expires, s.done
	t.mu.Unlock()
	timer := time.NewTimer(time.Until(expires))
	defer timer.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-timer.C:
		t.finish(s, Failed, "the sign-in link expired after "+lifetime.String())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.result, nil
}

// Cancel ends user uid's pending sign-in loginID.
func (t *Table) Cancel(uid int, loginID string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byLogin[loginID]
	if s == nil || s.uid != uid {
		return fmt.Errorf("signin: sign-in %q: %w", printable.String(loginID, 64), credential.ErrNotFound)
	}
	t.finishLocked(s, Failed, "cancelled")
	return nil
}

// Handler serves the start link (/start), its confirmation form, the
// callback (the path of callback_url) and the settings page (/settings)
// for browsers.
func (t *Table) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /start", t.startPage)
	mux.HandleFunc("POST /start", t.startContinue)
	cb := "/callback"
	if t.callback != nil && t.callback.Path != "" {
		cb = t.callback.Path
	}
	mux.HandleFunc("GET "+cb, t.callbackHandler)
	mux.HandleFunc("POST /confirm", t.confirmPost)
	mux.HandleFunc("GET /settings/open", t.openSettings)
	mux.HandleFunc("GET /settings", t.settingsPage)
	mux.HandleFunc("GET /settings/integrations.json", t.settingsJSON)
	mux.HandleFunc("GET /settings/assets/{name}", t.settingsAsset)
	mux.HandleFunc("POST /settings/integrations/{guid}/signin", t.settingsSignIn)
	mux.HandleFunc("POST /settings/integrations/{guid}/signout", t.settingsSignOut)
	mux.HandleFunc("POST /settings/end", t.settingsEnd)
	return hostcheck.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if t.forward(w, r) {
			return // another broker of the cluster holds it
		}
		mux.ServeHTTP(w, r)
	}), t.ownHost)
}

// ownHost reports whether host (a request's Host) names this sign-in web
// server: callback_url's host, as browsers and a reverse proxy send it,
// or a loopback name or address (the default set-up, oauthfs dev, and
// the brokers of a cluster on one machine). Any other name is a page of
// somebody else's site that resolves to this server (DNS rebinding).
func (t *Table) ownHost(host string) bool {
	if hostcheck.Loopback(host) {
		return true
	}
	return t.callback != nil && strings.EqualFold(hostcheck.Name(host), t.callback.Hostname())
}

// bindingCookieName names the cookie that binds a browser to sign-in s.
func bindingCookieName(s *signin) string { return "oauthfs_" + s.id[:12] }

// boundTo reports whether r comes from the browser that opened s first.
func boundTo(r *http.Request, s *signin) bool {
	c, err := r.Cookie(bindingCookieName(s))
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.binding)) == 1
}

// lookupLocked finds the pending sign-in of state, or says why there is
// none. Callers hold t.mu.
func (t *Table) lookupLocked(state string, now time.Time) (*signin, string) {
	s := t.byState[state]
	switch {
	case s == nil:
		return nil, "This sign-in link is unknown: it was not issued by this broker, or it was forgotten. Start again with oauthfs login."
	case s.ended && s.result.Status == SignedIn:
		return nil, "This sign-in was already completed; a link works once. Run oauthfs login " + s.in.Config().Name + " again if needed."
	case s.ended:
		return nil, "This sign-in has ended (" + s.result.Message + "). Start again with oauthfs login " + s.in.Config().Name + "."
	case now.After(s.expires):
		t.finishLocked(s, Failed, "the sign-in link expired")
		return nil, "This sign-in link expired (they last " + lifetime.String() + "). Start again with oauthfs login " + s.in.Config().Name + "."
	}
	return s, ""
}

// startPage answers the start link. The first browser to open it is bound
// to the sign-in (a cookie) and shown who the sign-in is for, with a
// Continue button; a second browser is refused and the sign-in fails, so
// a link that leaked cannot be used behind its owner's back.
func (t *Table) startPage(w http.ResponseWriter, r *http.Request) {
	t.mu.Lock()
	s, fail := t.lookupLocked(r.URL.Query().Get("state"), t.k.Now())
	if s != nil && s.phase != phaseNew && !boundTo(r, s) {
		t.finishLocked(s, Failed, "the sign-in link was opened in a second browser, so someone else may have it; start again, and open the link only in your own browser")
		t.log.Warn("sign-in link opened by a second browser; the sign-in failed", "uid", s.uid, "integration", s.in.Config().Name)
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
		Name: bindingCookieName(s), Value: s.binding, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: t.callback.Scheme == "https", MaxAge: int(lifetime / time.Second),
	})
	authOrigin := ""
	if u, err := url.Parse(s.in.Config().AuthURL); err == nil {
		authOrigin = u.Scheme + "://" + u.Host
	}
	securityHeaders(w, "'self' "+authOrigin)
	w.Header().Set("Referrer-Policy", "same-origin")
	w.WriteHeader(http.StatusOK)
	confirmTmpl.Execute(w, map[string]string{
		"Integration": s.in.Config().DisplayName, "User": s.user, "Host": t.host,
		"Name": s.in.Config().Name, "State": s.state, "CSRF": s.csrf,
	})
}

// startContinue answers the confirmation form: Continue sends the browser
// to the provider; Cancel ends the sign-in.
func (t *Table) startContinue(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		page(w, http.StatusBadRequest, "Sign-in failed", "The form could not be read.")
		return
	}
	if o := r.Header.Get("Origin"); o != "" && !t.sameOrigin(o) {
		page(w, http.StatusForbidden, "Sign-in failed", "This form was sent from another site.")
		return
	}
	t.mu.Lock()
	s, fail := t.lookupLocked(r.PostForm.Get("state"), t.k.Now())
	if s != nil && (!boundTo(r, s) || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1) {
		s, fail = nil, "This form did not come from the sign-in page that this browser opened."
	}
	if s != nil && r.PostForm.Get("action") == "cancel" {
		t.finishLocked(s, Failed, "cancelled in the browser")
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
	target, err := s.in.AuthCodeURL(s.state, verifier)
	if err != nil {
		page(w, http.StatusServiceUnavailable, "Sign-in failed", "The broker is too busy right now; try again in a moment.")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// sameOrigin reports whether the Origin header o is the sign-in web
// server's public origin, that of callback_url (default ports aside).
func (t *Table) sameOrigin(o string) bool {
	u, err := url.Parse(o)
	if err != nil || u.Scheme != t.callback.Scheme || !strings.EqualFold(u.Hostname(), t.callback.Hostname()) {
		return false
	}
	return port(u) == port(t.callback)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// callbackHandler takes the provider's answer: it checks the state and
// its binding to the browser, exchanges the code with the PKCE verifier,
// and holds the tokens for the final confirmation. It stores nothing: a
// browser can be bound to a sign-in it never started (another local user
// can set cookies for the broker's host from any port of it), so only a
// same-origin form that the confirmation page alone carries, naming the
// account and the local user, gives the tokens away.
func (t *Table) callbackHandler(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		t.pageFor(w, r, http.StatusBadRequest, "Sign-in failed", "The callback has no state parameter: it did not come from a sign-in started by oauthfs.")
		return
	}
	t.mu.Lock()
	s, fail := t.lookupLocked(state, t.k.Now())
	status := http.StatusBadRequest
	if s != nil && (s.phase == phaseExchanging || s.phase == phaseConfirming) {
		s, fail = nil, "This sign-in is already being completed; a callback cannot be used twice."
	}
	if s != nil && (!boundTo(r, s) || s.phase != phaseContinued) {
		// Not consumed: the browser that started it can still finish.
		s, status, fail = nil, http.StatusForbidden, "This sign-in was started in another browser. Finish it in the browser that opened the sign-in link."
	}
	if fail != "" {
		t.mu.Unlock()
		t.log.Warn("sign-in callback refused", "reason", fail)
		t.pageFor(w, r, status, "Sign-in failed", fail)
		return
	}
	in, uid := s.in, s.uid
	name := in.Config().Name
	// RFC 9207: every integration shares this callback, so a response
	// that another authorization server sent under this sign-in's state
	// (a mix-up) is refused before its code or error is looked at.
	if err := in.CheckIssuer(q["iss"]); err != nil {
		t.finishLocked(s, Failed, "the sign-in was refused: "+err.Error())
		t.mu.Unlock()
		t.log.Warn("sign-in callback refused: the authorization response is not from the integration's issuer", "uid", uid, "integration", name, "err", err)
		t.pageFor(w, r, http.StatusBadRequest, "Sign-in to "+name+" failed",
			"The answer that reached oauthfs did not come from "+name+"'s sign-in server: "+err.Error()+". Nothing was stored; start again with oauthfs login "+name+".")
		return
	}
	if e := q.Get("error"); e != "" {
		pe := provider.NewError(0, e, q.Get("error_description"))
		msg := "the provider refused the sign-in: " + pe.Code
		if pe.Description != "" {
			msg += " (" + pe.Description + ")"
		}
		t.finishLocked(s, Failed, msg)
		t.mu.Unlock()
		t.log.Warn("sign-in refused by the provider", "uid", uid, "integration", name, "error", pe.Code)
		status := http.StatusForbidden
		if pe.Code == "server_error" || pe.Code == "temporarily_unavailable" {
			status = http.StatusBadGateway
		}
		t.pageFor(w, r, status, "Sign-in to "+name+" failed", strings.ToUpper(msg[:1])+msg[1:]+".")
		return
	}
	code := q.Get("code")
	if code == "" {
		t.finishLocked(s, Failed, "the provider sent no authorization code")
		t.mu.Unlock()
		t.pageFor(w, r, http.StatusBadRequest, "Sign-in to "+name+" failed", "The provider sent no authorization code.")
		return
	}
	verifier := s.verifier
	// Single use from here on, whatever the outcome: the waiting command
	// learns the result when it is final.
	s.phase, s.verifier = phaseExchanging, nil
	t.mu.Unlock()
	ans, err := in.Exchange(r.Context(), code, verifier)
	if err != nil {
		var pe *provider.Error
		status := http.StatusBadGateway
		if errors.As(err, &pe) && pe.Status >= 400 && pe.Status < 500 {
			status = http.StatusBadRequest
		}
		msg := "the token endpoint failed: " + err.Error()
		t.finish(s, Failed, msg)
		t.log.Warn("sign-in code exchange failed", "uid", uid, "integration", name, "err", err)
		t.pageFor(w, r, status, "Sign-in to "+name+" failed", "The "+msg+".")
		return
	}
	scopes := ans.Scopes
	if scopes == nil {
		scopes = in.Config().Scopes // RFC 6749 §5.1: no scope means the requested ones
	}
	h := &held{expiry: ans.Expiry, obtained: ans.Obtained, scopes: scopes, account: ans.Account, tokenType: ans.TokenType}
	if h.access, err = secmem.Seal(ans.Access); err == nil {
		if h.refresh, err = secmem.Seal(ans.Refresh); err == nil {
			h.id, err = secmem.Seal(ans.IDToken)
		}
	}
	ans.Wipe()
	if err != nil {
		t.finish(s, Failed, "the broker is too busy: "+err.Error())
		t.pageFor(w, r, http.StatusServiceUnavailable, "Sign-in to "+name+" failed", "The broker is too busy right now; try again in a moment.")
		return
	}
	t.mu.Lock()
	if s.ended { // cancelled meanwhile
		t.mu.Unlock()
		t.pageFor(w, r, http.StatusBadRequest, "Sign-in to "+name+" failed", "This sign-in was cancelled.")
		return
	}
	s.phase, s.held, s.confirm = phaseConfirming, h, randomID(32)
	nonce := s.confirm
	t.mu.Unlock()
	account := h.account
	if account == "" {
		account = "the account you signed in with"
	}
	securityHeaders(w, "'self'")
	w.Header().Set("Referrer-Policy", "same-origin")
	w.WriteHeader(http.StatusOK)
	finalTmpl.Execute(w, map[string]string{
		"Integration": in.Config().DisplayName, "Account": account, "User": s.user, "Host": t.host,
		"Name": in.Config().Name, "State": s.state, "Confirm": nonce,
	})
}

// confirmPost answers the final confirmation: Yes stores the tokens held
// since the callback for the user who started the sign-in; No drops them.
// It needs the browser's own Origin (a page elsewhere cannot send it), the
// browser's binding cookie, and the nonce of the confirmation page.
func (t *Table) confirmPost(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		t.pageFor(w, r, http.StatusBadRequest, "Sign-in failed", "The form could not be read.")
		return
	}
	// The page's own origin, or (a browser that sends Origin: null, or
	// none) the browser's word that the form came from this site.
	if o := r.Header.Get("Origin"); !t.sameOrigin(o) && !((o == "" || o == "null") && r.Header.Get("Sec-Fetch-Site") == "same-origin") {
		t.pageFor(w, r, http.StatusForbidden, "Sign-in failed", "This form was not sent from the sign-in page: nothing was stored.")
		return
	}
	// A person's click, not a script: the browser says so in headers no
	// page can set (Fetch metadata). A page that shares the broker's
	// origin could otherwise open the sign-in in a window of its own and
	// press Yes there, or post the form with fetch().
	if r.Header.Get("Sec-Fetch-Mode") != "navigate" || r.Header.Get("Sec-Fetch-User") != "?1" {
		t.log.Warn("refused a confirmation that no person clicked", "mode", r.Header.Get("Sec-Fetch-Mode"), "user", r.Header.Get("Sec-Fetch-User"))
		t.pageFor(w, r, http.StatusForbidden, "Sign-in failed",
			"The confirmation must be a click on its button in your browser (this request did not say it was): nothing was stored. Use a current browser.")
		return
	}
	t.mu.Lock()
	s, fail := t.lookupLocked(r.PostForm.Get("state"), t.k.Now())
	if s != nil && (s.phase != phaseConfirming || !boundTo(r, s) || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("confirm")), []byte(s.confirm)) != 1) {
		s, fail = nil, "This form did not come from the confirmation page of this sign-in: nothing was stored."
	}
	if s != nil && r.PostForm.Get("action") != "confirm" {
		t.finishLocked(s, Failed, "the tokens were refused in the browser")
		ss := t.settingsForLocked(r, s)
		t.mu.Unlock()
		if ss != nil {
			t.say(ss, "Nothing was stored for "+s.in.Config().DisplayName+".", false)
			http.Redirect(w, r, pageURL(ss), http.StatusSeeOther)
			return
		}
		t.pageFor(w, r, http.StatusOK, "Sign-in cancelled", "Nothing was stored. You can close this window.")
		return
	}
	var h *held
	if s != nil {
		h, s.held, s.confirm = s.held, nil, ""
		s.phase = phaseExchanging // single use
	}
	t.mu.Unlock()
	if fail != "" {
		t.pageFor(w, r, http.StatusForbidden, "Sign-in failed", fail)
		return
	}
	in, uid, name := s.in, s.uid, s.in.Config().Name
	access, err := secmem.Open(h.access)
	if err != nil {
		t.finish(s, Failed, "the broker is too busy: "+err.Error())
		t.pageFor(w, r, http.StatusServiceUnavailable, "Sign-in to "+name+" failed", "The broker is too busy right now; try again.")
		return
	}
	tokens := credential.Tokens{Access: append([]byte(nil), access.Bytes()...), Expiry: h.expiry, Obtained: h.obtained, Scopes: h.scopes, Account: h.account, TokenType: h.tokenType}
	access.Destroy()
	for _, x := range []struct {
		e   *memguard.Enclave
		dst *[]byte
	}{{h.refresh, &tokens.Refresh}, {h.id, &tokens.IDToken}} {
		if x.e == nil {
			continue
		}
		plain, err := secmem.Open(x.e)
		if err != nil {
			memguard.WipeBytes(tokens.Access)
			memguard.WipeBytes(tokens.Refresh)
			t.finish(s, Failed, "the broker is too busy: "+err.Error())
			t.pageFor(w, r, http.StatusServiceUnavailable, "Sign-in to "+name+" failed", "The broker is too busy right now; try again.")
			return
		}
		*x.dst = append([]byte(nil), plain.Bytes()...)
		plain.Destroy()
	}
	hadRefresh := h.refresh != nil
	if err := t.k.Put(uid, in.Config().GUID.String(), tokens); err != nil { // wipes tokens
		t.finish(s, Failed, "the tokens could not be saved: "+err.Error())
		t.pageFor(w, r, http.StatusInternalServerError, "Sign-in to "+name+" failed", "The tokens could not be saved: "+err.Error())
		return
	}
	t.mu.Lock()
	s.result.Account, s.scopes = h.account, h.scopes
	t.finishLocked(s, SignedIn, "")
	ss := t.settingsForLocked(r, s)
	t.mu.Unlock()
	t.log.Info("signed in", "uid", uid, "integration", name, "guid", in.Config().GUID.String(), "account", h.account, "refresh_token", hadRefresh)
	as := ""
	if h.account != "" {
		as = " as " + h.account
	}
	if ss != nil {
		t.say(ss, "Signed in to "+name+as+".", false)
		http.Redirect(w, r, pageURL(ss), http.StatusSeeOther)
		return
	}
	t.pageFor(w, r, http.StatusOK, "Signed in to "+name+as, "oauthfs now has your credentials for "+name+as+", for user "+s.user+" on host "+t.host+". You can close this window.")
}

var finalTmpl = template.Must(template.New("final").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Confirm the sign-in to {{.Integration}} · oauthfs</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;line-height:1.5;color:#1f2328}
h1{font-size:1.4em}.who{background:#fff8c5;border:1px solid #d4a72c;padding:.8em 1em;border-radius:6px}
button{font-size:1em;padding:.5em 1.2em;margin-right:.6em;border-radius:6px;border:1px solid #1f2328;background:#fff;cursor:pointer}
button.go{background:#1f6feb;color:#fff;border-color:#1f6feb}button:focus{outline:3px solid #0969da;outline-offset:2px}</style></head>
<body><h1>Give {{.Integration}} access as {{.Account}} to user {{.User}} on host {{.Host}}?</h1>
<p class="who">Every program of the local user <strong>{{.User}}</strong> on <strong>{{.Host}}</strong> will be able to use
<strong>{{.Account}}</strong>'s access to {{.Integration}}.
Say yes only if you are {{.User}} and you started this sign-in yourself (with <code>oauthfs login {{.Name}}</code>).
If you did not, say no: someone may be trying to get your account's tokens.</p>
<form method="post" action="/confirm"><input type="hidden" name="state" value="{{.State}}"><input type="hidden" name="confirm" value="{{.Confirm}}">
<button class="go" type="submit" name="action" value="confirm">Yes, sign in</button><button type="submit" name="action" value="refuse">No</button></form>
</body></html>
`))

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
	writePage(w, status, title, text)
}

// pageFor is page for a sign-in's pages. They never link back to a
// settings visit, whose key belongs only on pages whose own URL holds
// it: these pages' URLs do not, and a page that shares the broker's
// origin could read them.
func (t *Table) pageFor(w http.ResponseWriter, _ *http.Request, status int, title, text string) {
	page(w, status, title, text)
}

func writePage(w http.ResponseWriter, status int, title, text string) {
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

// NewServer returns the HTTP server for the sign-in pages: timeouts on
// every phase of a request, small headers, and bodies bounded by h. Serve
// it on a listener wrapped with unixsock.CapConns(l, MaxConns, false, log).
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      readTimeout + 2*time.Minute, // a code exchange fits
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// MaxConns caps the sign-in web server's connections, all callers
// together: they have no uid to count by.
const MaxConns = 512

// Timeouts of the sign-in web server.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 15 * time.Second // browsers reconnect cheaply
)

// Observe makes t record sign-ins and settings visits in the audit log
// l, and count sign-ins in m (nil: none).
func (t *Table) Observe(l *audit.Log, m *metrics.Metrics) {
	t.mu.Lock()
	t.audit, t.metrics = l, m
	t.mu.Unlock()
}

// recordSignInLocked writes the audit event of sign-in s, which has just
// ended. Callers hold t.mu.
func (t *Table) recordSignInLocked(s *signin) {
	via := "browser"
	switch {
	case s.cancel != nil:
		via = "device"
	case s.settings != nil:
		via = "settings_page"
	}
	ev := audit.Event{Event: "sign_in", User: s.user, UID: audit.UID(s.uid), Integration: s.result.Name, GUID: s.result.GUID,
		Account: s.result.Account, Via: via, Result: "ok"}
	if s.result.Status == SignedIn {
		ev.Scopes = s.scopes
	} else {
		ev.Result, ev.Reason = "failed", s.result.Message
	}
	t.metrics.Event(ev)
	t.audit.Record(ev)
}
