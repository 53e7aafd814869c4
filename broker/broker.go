package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// Options tune a [Broker]. The zero value is usable.
type Options struct {
	// Logger receives sign-in, refresh and failure events; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests move it instead of
	// sleeping.
	Now func() time.Time
}

// Credentials are what a sign-in (or an import) stores for a user.
// The byte slices are wiped by [Broker.Put].
type Credentials struct {
	AccessToken  []byte
	RefreshToken []byte // may be empty
	Expiry       time.Time
	Scopes       []string // granted scopes, if the provider said
	// Account names the provider account that signed in (an email, a
	// login or an OIDC sub), when the provider said; shown, never trusted.
	Account string
}

// Broker is the registry of integrations and the per-user credential
// store. It is safe for concurrent use by multiple goroutines.
type Broker struct {
	log     *slog.Logger
	now     func() time.Time
	client  *http.Client
	margin  time.Duration
	timeout time.Duration
	flights singleflight.Group

	events   hub      // change events to sessions
	store    *store   // nil: memory only
	callback *url.URL // where the provider sends the browser back; nil: no sign-in

	mu           sync.Mutex                // guards the fields below
	integrations map[string]*integration   // by guid
	byName       map[string]*integration   // by name
	users        map[int]map[string]*grant // uid -> guid -> credential, loaded lazily
	broken       map[int]error             // uid -> why its store file does not open
	saveMu       map[saveKey]*sync.Mutex   // serialises the saves of one record

	signins *signins // sign-ins in progress, under their own lock
	host    string   // this host's name, shown on the sign-in pages
}

// integration is one configured integration with its client secret.
type integration struct {
	cfg *config.Integration
	// secret is owned by the integration; it is freed with it and wiped
	// by memguard.Purge at exit.
	secret *memguard.Enclave
}

// grant is one user's tokens for one integration. Its fields are
// guarded by Broker.mu; a grant is replaced, never reused, on
// sign-in, so a refresh can tell whether it raced with one.
type grant struct {
	access  *credential.Token // current access token; nil after invalid_grant
	refresh *memguard.Enclave // nil when the provider gave none
	scopes  []string
	account string
	status  credential.Status
	lastErr string
	// After a transient failure no refresh is tried before retryAt:
	// readers get the cached token, or the last error, at once.
	retryAt  time.Time
	failures int
}

// Backoff after transient refresh failures: retryBase, doubling per
// consecutive failure, at most retryMax.
const (
	retryBase = 5 * time.Second
	retryMax  = time.Minute
)

// New builds a broker for the integrations of cfg, reading every client
// secret into an enclave.
func New(cfg *config.Config, opts Options) (*Broker, error) {
	b := &Broker{
		log:     opts.Logger,
		now:     opts.Now,
		margin:  cfg.Settings.RefreshMargin,
		timeout: cfg.Settings.RequestTimeout,
		users:   map[int]map[string]*grant{},
		broken:  map[int]error{},
		saveMu:  map[saveKey]*sync.Mutex{},
		signins: newSignins(),
		host:    hostName(),
	}
	if cfg.Settings.CallbackURL != "" {
		u, err := url.Parse(cfg.Settings.CallbackURL)
		if err != nil {
			return nil, fmt.Errorf("broker: callback_url: %w", err)
		}
		b.callback = u
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.client = providerClient(b.timeout)
	if b.margin == 0 {
		b.margin = config.DefaultRefreshMargin
	}
	if b.timeout == 0 {
		b.timeout = config.DefaultRequestTimeout
	}
	if !cfg.Settings.MemoryOnly() {
		st, err := openStore(*cfg.Settings.StateDir, cfg.Settings.KeyFile)
		if err != nil {
			return nil, err
		}
		b.store = st
	}
	b.integrations = map[string]*integration{}
	b.byName = map[string]*integration{}
	for _, ic := range cfg.Integrations {
		s, err := ic.Secret()
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		sec, err := secmem.Seal(s)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		in := &integration{cfg: ic, secret: sec}
		b.integrations[ic.GUID.String()] = in
		b.byName[ic.Name] = in
	}
	return b, nil
}

// find returns the integration with guid or name id. Callers hold b.mu.
func (b *Broker) find(id string) (*integration, error) {
	if in, ok := b.integrations[strings.ToLower(id)]; ok {
		return in, nil
	}
	if in, ok := b.byName[id]; ok {
		return in, nil
	}
	return nil, fmt.Errorf("broker: %q: %w", id, credential.ErrNotFound)
}

// Integrations returns what user uid sees of every integration, sorted by
// name. It never makes a network call.
func (b *Broker) Integrations(uid int) []credential.Integration {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]credential.Integration, 0, len(b.integrations))
	for _, in := range b.integrations {
		out = append(out, b.metaLocked(uid, in))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Integration returns what user uid sees of the integration with guid or
// name id. It never makes a network call.
func (b *Broker) Integration(uid int, id string) (credential.Integration, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, err := b.find(id)
	if err != nil {
		return credential.Integration{}, err
	}
	return b.metaLocked(uid, in), nil
}

func (b *Broker) metaLocked(uid int, in *integration) credential.Integration {
	c := in.cfg
	m := credential.Integration{
		GUID:          c.GUID.String(),
		Name:          c.Name,
		DisplayName:   c.DisplayName,
		ClientID:      c.ClientID,
		AuthURL:       c.AuthURL,
		TokenURL:      c.TokenURL,
		Scopes:        nonNil(c.Scopes),
		Status:        credential.StatusNotSignedIn,
		GrantedScopes: []string{},
	}
	creds, err := b.credsLocked(uid)
	if err != nil {
		e := err.Error()
		m.Status, m.Error = credential.StatusError, &e
		return m
	}
	cr := creds[m.GUID]
	if cr == nil {
		return m
	}
	m.Status = cr.status
	m.Authenticated = cr.status == credential.StatusSignedIn || cr.status == credential.StatusError
	if cr.access != nil {
		if s := credential.FormatTime(cr.access.Expiry()); s != "" {
			m.Expiry = &s
		}
	}
	m.GrantedScopes = nonNil(cr.scopes)
	if cr.account != "" {
		a := cr.account
		m.Account = &a
	}
	if cr.lastErr != "" {
		e := cr.lastErr
		m.Error = &e
	}
	return m
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return append([]string(nil), s...)
}

// Put stores credentials for user uid and the integration with guid or
// name id, replacing any there were, and wipes the byte slices of cr.
func (b *Broker) Put(uid int, id string, cr Credentials) error {
	defer memguard.WipeBytes(cr.AccessToken)
	defer memguard.WipeBytes(cr.RefreshToken)
	switch {
	case len(cr.AccessToken) == 0:
		return fmt.Errorf("broker: store credentials for %q: the access token is empty: %w", id, ErrBadRequest)
	case len(cr.AccessToken) > maxTokenLen || len(cr.RefreshToken) > maxTokenLen:
		return fmt.Errorf("broker: store credentials for %q: a token is longer than %d KiB: %w", id, maxTokenLen>>10, ErrBadRequest)
	}
	access, err := credential.NewToken(cr.AccessToken, cr.Expiry, b.now())
	if err != nil {
		return fmt.Errorf("broker: store credentials for %q: %w: %w", id, err, credential.ErrUnavailable)
	}
	refresh, err := secmem.Seal(cr.RefreshToken)
	if err != nil {
		return fmt.Errorf("broker: store credentials for %q: %w: %w", id, err, credential.ErrUnavailable)
	}
	b.mu.Lock()
	in, err := b.find(id)
	if err != nil {
		b.mu.Unlock()
		return err
	}
	creds, err := b.credsLocked(uid)
	if err != nil {
		b.mu.Unlock()
		return err
	}
	g := in.cfg.GUID.String()
	prev := creds[g]
	c := &grant{
		access:  access,
		refresh: refresh,
		scopes:  append([]string(nil), cr.Scopes...),
		account: printable.String(cr.Account, maxAccount),
		status:  credential.StatusSignedIn,
	}
	creds[g] = c
	b.mu.Unlock()
	if err := b.persist(uid, g); err != nil {
		b.mu.Lock()
		if creds[g] == c { // nothing newer arrived: undo
			if prev == nil {
				delete(creds, g)
			} else {
				creds[g] = prev
			}
		}
		b.mu.Unlock()
		b.log.Error("could not save credentials", "uid", uid, "integration", in.cfg.Name, "guid", g, "err", err)
		return err
	}
	b.log.Info("credentials stored", "uid", uid, "integration", in.cfg.Name, "guid", g,
		"expiry", credential.FormatTime(cr.Expiry), "refresh_token", c.refresh != nil)
	b.publish(uid, credential.EventChanged, g)
	return nil
}

// Forget drops user uid's credentials for the integration with guid or
// name id. It reports whether there were any.
func (b *Broker) Forget(uid int, id string) (bool, error) {
	had, _, err := b.forget(uid, id)
	return had, err
}

// forget drops the credentials and returns what was dropped, so that the
// caller can revoke the refresh token.
func (b *Broker) forget(uid int, id string) (bool, *grant, error) {
	b.mu.Lock()
	in, err := b.find(id)
	if err != nil {
		b.mu.Unlock()
		return false, nil, err
	}
	creds, err := b.credsLocked(uid)
	if err != nil {
		b.mu.Unlock()
		return false, nil, err
	}
	g := in.cfg.GUID.String()
	old, had := creds[g]
	delete(creds, g)
	b.mu.Unlock()
	if !had {
		return false, nil, nil
	}
	b.log.Info("signed out", "uid", uid, "integration", in.cfg.Name, "guid", g)
	b.publish(uid, credential.EventChanged, g)
	if err := b.persist(uid, g); err != nil {
		return true, old, fmt.Errorf("broker: signed out in memory, but the store still holds the old tokens: %w", err)
	}
	return true, old, nil
}

// credsLocked returns user uid's credentials, loading them from the store
// on first use. Callers hold b.mu.
func (b *Broker) credsLocked(uid int) (map[string]*grant, error) {
	if u, ok := b.users[uid]; ok {
		return u, nil
	}
	if err := b.broken[uid]; err != nil {
		return nil, err
	}
	u := map[string]*grant{}
	if b.store != nil {
		recs, err := b.store.load(uid)
		if err != nil {
			b.broken[uid] = err
			b.log.Error("credential store unusable", "uid", uid, "err", err)
			return nil, err
		}
		for _, r := range recs {
			u[r.guid] = &grant{access: r.access, refresh: r.refresh, scopes: r.scopes, account: r.account, status: r.status, lastErr: r.lastErr}
		}
		if len(recs) > 0 {
			b.log.Info("credentials loaded", "uid", uid, "count", len(recs))
		}
	}
	b.users[uid] = u
	return u, nil
}

// Load loads user uid's credentials from the store now, so that a store
// file that does not open is reported at start rather than at first use.
func (b *Broker) Load(uid int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.credsLocked(uid)
	return err
}

// saveKey names one stored record.
type saveKey struct {
	uid  int
	guid string
}

// persist writes user uid's credential for guid to the store, or removes
// it when there is none. Saves of one record are serialised and each
// snapshots the state when it starts, so the file never goes back to an
// older state. Only that record is written: the cost does not depend on
// how many credentials the user holds.
func (b *Broker) persist(uid int, guid string) error {
	if b.store == nil {
		return nil
	}
	k := saveKey{uid, guid}
	b.mu.Lock()
	mu := b.saveMu[k]
	if mu == nil {
		mu = &sync.Mutex{}
		b.saveMu[k] = mu
	}
	b.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	b.mu.Lock()
	c := b.users[uid][guid]
	var r record
	if c != nil {
		r = record{guid: guid, access: c.access, refresh: c.refresh, scopes: c.scopes, account: c.account, status: c.status, lastErr: c.lastErr}
		if c.access != nil {
			r.expiry, r.obtained = c.access.Expiry(), c.access.Obtained()
		}
	}
	b.mu.Unlock()
	if c == nil {
		return b.store.remove(uid, guid)
	}
	return b.store.save(uid, r)
}

// marginFor is the refresh margin for t: min(refresh_margin, a quarter of
// the token's lifetime).
func (b *Broker) marginFor(t *credential.Token) time.Duration {
	if t == nil || t.Expiry().IsZero() {
		return 0
	}
	if q := t.Expiry().Sub(t.Obtained()) / 4; q < b.margin {
		return q
	}
	return b.margin
}

// RefreshAt returns when the broker stops handing out t (its expiry less
// the refresh margin), or the zero time for a token without expiry.
func (b *Broker) RefreshAt(t *credential.Token) time.Time {
	if t.Expiry().IsZero() {
		return time.Time{}
	}
	return t.Expiry().Add(-b.marginFor(t))
}

// Token returns a valid access token for user uid and the integration with
// guid or name id, refreshing it first when it expires within the margin.
// Concurrent callers for the same user and integration share one refresh.
// If ctx ends first, Token returns ctx.Err() and the refresh carries on.
func (b *Broker) Token(ctx context.Context, uid int, id string) (*credential.Token, error) {
	b.mu.Lock()
	in, err := b.find(id)
	if err != nil {
		b.mu.Unlock()
		return nil, err
	}
	g := in.cfg.GUID.String()
	creds, err := b.credsLocked(uid)
	if err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", err, credential.ErrUnavailable)
	}
	cr := creds[g]
	if cr == nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: %s: %w: run 'oauthfs login %s'", in.cfg.Name, credential.ErrNotSignedIn, in.cfg.Name)
	}
	now := b.now()
	if t := cr.access; t.Valid(now, b.marginFor(t)) {
		b.mu.Unlock()
		return t, nil
	}
	if now.Before(cr.retryAt) {
		defer b.mu.Unlock()
		if t := cr.access; t.Valid(now, 0) {
			return t, nil
		}
		return nil, fmt.Errorf("broker: %s: %w: %s (next try in %v)", in.cfg.Name, credential.ErrUnavailable, cr.lastErr, cr.retryAt.Sub(now).Round(time.Second))
	}
	b.mu.Unlock()

	ch := b.flights.DoChan(fmt.Sprintf("%d/%s", uid, g), func() (any, error) {
		return b.refresh(uid, in)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*credential.Token), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// refresh runs at most once at a time per user and integration (under the
// singleflight group) and returns the token to hand out.
func (b *Broker) refresh(uid int, in *integration) (*credential.Token, error) {
	name, g := in.cfg.Name, in.cfg.GUID.String()
	b.mu.Lock()
	cr := b.users[uid][g]
	if cr == nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: %s: %w", name, credential.ErrNotSignedIn)
	}
	now := b.now()
	if t := cr.access; t.Valid(now, b.marginFor(t)) {
		b.mu.Unlock()
		return t, nil // refreshed by a flight that ended just before ours
	}
	rt, cached := cr.refresh, cr.access
	if rt == nil {
		if cached.Valid(now, 0) {
			b.mu.Unlock()
			return cached, nil // nothing to refresh with; serve until expiry
		}
		changed := cr.status != credential.StatusExpired
		if changed {
			cr.access = nil
			cr.status, cr.lastErr = credential.StatusExpired, "the token expired and there is no refresh token; sign in again"
		}
		err := fmt.Errorf("broker: %s: %w: %s (run 'oauthfs login %s')", name, credential.ErrExpired, cr.lastErr, name)
		b.mu.Unlock()
		if changed {
			b.persist(uid, g)
		}
		return nil, err
	}
	b.mu.Unlock()

	tok, newRT, err := b.exchangeRefresh(in, rt)

	b.mu.Lock()
	t, save, rerr := b.settleLocked(uid, in, cr, cached, tok, newRT, err)
	b.mu.Unlock()
	if errors.Is(rerr, credential.ErrExpired) {
		b.publish(uid, credential.EventChanged, g) // sessions must drop the revoked token
	}
	if save {
		// The new refresh token (or the expired state) is on disk before
		// anyone gets the new access token: every reader waiting on this
		// flight is released only after the save.
		if perr := b.persist(uid, g); perr != nil {
			b.log.Error("could not save credentials; the new tokens are kept in memory", "uid", uid, "integration", name, "guid", g, "err", perr)
			b.mu.Lock()
			if cr.status == credential.StatusSignedIn {
				cr.status, cr.lastErr = credential.StatusError, "could not save credentials: "+perr.Error()
			}
			b.mu.Unlock()
		}
	}
	return t, rerr
}

// settleLocked records the outcome of a refresh of cr and says whether the
// store must be written. Callers hold b.mu.
func (b *Broker) settleLocked(uid int, in *integration, cr *grant, cached *credential.Token, tok *oauth2.Token, newRT []byte, err error) (*credential.Token, bool, error) {
	name, g := in.cfg.Name, in.cfg.GUID.String()
	now := b.now()
	if b.users[uid][g] != cr {
		// Signed out or signed in again while we refreshed: what we got
		// belongs to a grant that is no longer stored.
		memguard.WipeBytes(newRT)
		if c := b.users[uid][g]; c != nil && c.access.Valid(now, 0) {
			return c.access, false, nil
		}
		return nil, false, fmt.Errorf("broker: %s: %w", name, credential.ErrNotSignedIn)
	}
	if err != nil {
		var pe *ProviderError
		if errors.As(err, &pe) && pe.Code == "invalid_grant" {
			cr.access, cr.refresh = nil, nil
			cr.status, cr.lastErr = credential.StatusExpired, "the provider rejected the refresh token ("+pe.summary()+"); sign in again"
			b.log.Warn("refresh rejected; sign-in required", "uid", uid, "integration", name, "guid", g, "err", err)
			return nil, true, fmt.Errorf("broker: %s: %w: %v; run 'oauthfs login %s'", name, credential.ErrExpired, err, name)
		}
		cr.status, cr.lastErr = credential.StatusError, "refresh failed: "+err.Error()
		cr.failures++
		cr.retryAt = now.Add(min(retryBase<<(cr.failures-1), retryMax))
		if cached.Valid(now, 0) {
			b.log.Warn("refresh failed; serving the cached token", "uid", uid, "integration", name, "guid", g, "err", err,
				"expiry", credential.FormatTime(cached.Expiry()))
			return cached, false, nil
		}
		b.log.Error("refresh failed", "uid", uid, "integration", name, "guid", g, "err", err)
		return nil, false, fmt.Errorf("broker: %s: %w: %v", name, credential.ErrUnavailable, err)
	}

	t, err := tokenFrom(tok, now)
	if err != nil {
		memguard.WipeBytes(newRT)
		cr.status, cr.lastErr = credential.StatusError, "refresh failed: "+err.Error()
		b.log.Error("refresh failed", "uid", uid, "integration", name, "guid", g, "err", err)
		if cached.Valid(now, 0) {
			return cached, false, nil
		}
		return nil, false, fmt.Errorf("broker: %s: %w: %w", name, credential.ErrUnavailable, err)
	}
	rotated := newRT != nil
	if rotated {
		rt, err := secmem.Seal(newRT) // wipes newRT
		if err != nil {
			// Keep the old refresh token: most providers accept it until
			// its successor is used, and the new access token is dropped
			// with it so nothing half-done is stored.
			cr.status, cr.lastErr = credential.StatusError, "refresh failed: "+err.Error()
			return nil, false, fmt.Errorf("broker: %s: %w: %w", name, credential.ErrUnavailable, err)
		}
		cr.refresh = rt
	}
	cr.access = t
	if s := grantedScopes(tok); s != nil {
		cr.scopes = s
	}
	cr.status, cr.lastErr = credential.StatusSignedIn, ""
	cr.failures, cr.retryAt = 0, time.Time{}
	b.log.Info("refreshed", "uid", uid, "integration", name, "guid", g,
		"expiry", credential.FormatTime(t.Expiry()), "rotated", rotated)
	return t, true, nil
}

// maxLifetime bounds a token's expires_in: a larger value (or one that
// would overflow a time.Duration) is taken to mean ten years.
const maxLifetime = 10 * 365 * 24 * time.Hour

// expiryFrom turns a token response's expires_in (seconds; 0 or less:
// no expiry) into a time on our clock. The expiry counts from our clock,
// not x/oauth2's, so that the margin rule and tests share one notion of
// now.
func expiryFrom(expiresIn int64, now time.Time) time.Time {
	if expiresIn <= 0 {
		return time.Time{}
	}
	if expiresIn > int64(maxLifetime/time.Second) {
		return now.Add(maxLifetime)
	}
	return now.Add(time.Duration(expiresIn) * time.Second)
}

// tokenFrom seals the access token of a token response.
func tokenFrom(tok *oauth2.Token, now time.Time) (*credential.Token, error) {
	switch {
	case tok.AccessToken == "":
		return nil, errors.New("token endpoint sent no access token")
	case len(tok.AccessToken) > maxTokenLen:
		return nil, fmt.Errorf("token endpoint sent an access token longer than %d KiB", maxTokenLen>>10)
	}
	return credential.NewToken([]byte(tok.AccessToken), expiryFrom(tok.ExpiresIn, now), now)
}

// maxScopes bounds the granted scopes a token response may add.
const maxScopes = 2 << 10

// grantedScopes returns the scopes of a token response's "scope" field,
// cleaned and bounded, or nil when it has none.
func grantedScopes(tok *oauth2.Token) []string {
	s, ok := tok.Extra("scope").(string)
	if !ok || s == "" {
		return nil
	}
	return strings.Fields(printable.String(s, maxScopes))
}

// exchangeRefresh asks the token endpoint for a new token with the refresh
// token in rt. It is bounded by the request timeout whatever its caller.
// newRT is a rotated refresh token, owned by the caller, or nil when the
// provider kept the old one.
func (b *Broker) exchangeRefresh(in *integration, rt *memguard.Enclave) (tok *oauth2.Token, newRT []byte, err error) {
	rtBuf, err := secmem.Open(rt)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: open refresh token: %w", err)
	}
	defer rtBuf.Destroy()
	secret, err := secmem.Open(in.secret)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: open client secret: %w", err)
	}
	defer secret.Destroy()

	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.client)
	// x/oauth2 takes and returns Go strings, so these are copies: never
	// LockedBuffer.String(), which aliases memory that Destroy unmaps
	// while x/oauth2 may still hold the string. The copies are
	// short-lived and reclaimed by the garbage collector (see
	// docs/security.md).
	cfg := b.oauthConfig(in, string(secret.Bytes()))
	tok, err = cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: string(rtBuf.Bytes())}).Token()
	if err != nil {
		return nil, nil, classify(ctx, err, b.timeout, "token endpoint")
	}
	if len(tok.RefreshToken) > maxTokenLen {
		return nil, nil, fmt.Errorf("token endpoint sent a refresh token longer than %d KiB", maxTokenLen>>10)
	}
	if tok.RefreshToken != "" && !bytes.Equal(rtBuf.Bytes(), []byte(tok.RefreshToken)) {
		newRT = []byte(tok.RefreshToken)
	}
	return tok, newRT, nil
}

func (b *Broker) oauthConfig(in *integration, secret string) *oauth2.Config {
	style := oauth2.AuthStyleInHeader
	if in.cfg.AuthStyle == config.AuthStylePost {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     in.cfg.ClientID,
		ClientSecret: secret,
		// Set, never detected: x/oauth2's detection retries a refused
		// request with the secret in the other place.
		Endpoint:    oauth2.Endpoint{AuthURL: in.cfg.AuthURL, TokenURL: in.cfg.TokenURL, AuthStyle: style},
		Scopes:      in.cfg.Scopes,
		RedirectURL: b.callbackURL(),
	}
}

// providerClient is the HTTP client for every request to a provider:
// token, revocation, userinfo. It never follows a redirect, which would
// carry a refresh token, a code or the client secret to another host (and
// past the https-only rule); a 3xx answer is an error. Its pool keeps
// connections to each provider for storms of refreshes.
func providerClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.ResponseHeaderTimeout = timeout
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func (b *Broker) callbackURL() string {
	if b.callback == nil {
		return ""
	}
	return b.callback.String()
}

// Session binds a broker to one user. It is what the filesystem of that
// user's embedded mount talks to. It is safe for concurrent use.
type Session struct {
	B   *Broker
	UID int
}

// Integrations returns the user's view of every integration.
func (s Session) Integrations(context.Context) ([]credential.Integration, error) {
	return s.B.Integrations(s.UID), nil
}

// Integration returns the user's view of one integration.
func (s Session) Integration(_ context.Context, id string) (credential.Integration, error) {
	return s.B.Integration(s.UID, id)
}

// Token returns a valid access token with refresh-on-read.
func (s Session) Token(ctx context.Context, id string) (*credential.Token, error) {
	return s.B.Token(ctx, s.UID, id)
}
