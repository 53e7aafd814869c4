package broker

import (
	"context"
	"fmt"
	"log/slog"
	"os/user"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/sync/singleflight"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/metrics"
	"github.com/oauthfs/oauthfs/provider"
	"github.com/oauthfs/oauthfs/store"
)

// Options tune a [Broker]. The zero value is usable.
type Options struct {
	// Logger receives sign-in, refresh and failure events; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests move it instead of
	// sleeping.
	Now func() time.Time
	// Store keeps credentials across restarts; nil keeps them in memory
	// only.
	Store store.Store
	// Audit receives the audit events of refreshes, sign-outs,
	// revocations and reloads; nil records none. The caller owns it.
	Audit *audit.Log
	// Metrics counts token requests, reads, sign-outs, revocations and
	// store writes, and reports the users signed in; nil counts nothing.
	Metrics *metrics.Metrics
	// Directory holds the metadata of the integrations' issuers, which
	// the caller fetched (provider.Directory.Fetch) before New and before
	// each Reload; nil: each is looked up when first needed.
	Directory *provider.Directory
}

// Broker holds every user's credentials for the configured integrations
// and hands out access tokens with refresh-on-read. It is safe for
// concurrent use by multiple goroutines.
//
// Its state is split by concern, each with its own lock: the registry of
// integrations, the users' credentials, the serialisation of saves, and
// the event hub.
type Broker struct {
	log     *slog.Logger
	now     func() time.Time
	margin  time.Duration
	timeout time.Duration
	flights singleflight.Group // one refresh per user and integration
	loads   singleflight.Group // one load per user, from a shared store
	store   store.Store        // nil: memory only
	audit   *audit.Log         // nil: no audit log
	metrics *metrics.Metrics   // nil: no metrics
	shared  store.Shared       // the store, when brokers on other hosts share it
	// life is the broker's lifetime, which Close ends (unwatch): the
	// context of its requests to providers and the store that no
	// reader's request bounds (a refresh a reader gave up on completes
	// for the next one), each bounded by its own timeout.
	life    context.Context
	unwatch context.CancelFunc // ends life: stops hearing the shared store's changes
	reg     registry
	saves   saveLocks
	events  hub

	mu     sync.Mutex                // guards users, broken and the maps below
	users  map[int]map[string]*grant // uid -> guid -> grant, loaded lazily
	broken map[int]error             // uid -> why its stored credentials do not load
	names  map[int]string            // uid -> user name, for the store
	// nameFailed is when a user name lookup of uid last failed: it is
	// not tried again for nameRetry. lookupName looks a name up (a
	// directory service, for the system daemon); nil: user.LookupId.
	nameFailed  map[int]time.Time
	lookupName  func(uid int) (string, error)
	nameLookups singleflight.Group
	gen         map[int]uint64  // uid -> count of changes made elsewhere, for loads they overtake
	demand      map[int]*bucket // uid -> token requests asked for outright (demand.go)
	epoch       uint64          // count of times everything may have changed elsewhere
}

// grant is one user's tokens for one integration. Its fields are guarded
// by Broker.mu; a grant is replaced, never reused, on sign-in, so a
// refresh can tell whether it raced with one.
type grant struct {
	access  *credential.Token // newest access token; nil after invalid_grant
	refresh *memguard.Enclave // nil when the provider gave none
	scopes  []string
	account string
	status  credential.Status
	lastErr string

	// prev is the token a refresh ahead replaced while it could still be
	// handed out: readers get it until its own hand-out time, and access
	// from then on (see handingOut), so that every reader, on every host
	// of a cluster, gets one token at a time.
	prev *credential.Token
	// readTok is the token last handed to a reader (or whose read a
	// filesystem reported); ahead is the timer that refreshes access
	// shortly before its hand-out time if it was read.
	readTok *credential.Token
	ahead   *time.Timer
	// attempting is set while a refresh is on its way. After a transient
	// failure (failing), no attempt starts before retryAt.
	attempting bool
	failing    bool
	retryAt    time.Time
	// uncommitted is, in a cluster, a refresh's answer whose commit
	// failed: the only copy of a rotated refresh token, committed by the
	// next attempt and not handed out before.
	uncommitted *store.Record
	// variants are the grant's kept token variants, by name.
	variants map[string]*variant
	// useRefresh is held while the refresh token is at the provider, by
	// a refresh of any of the grant's tokens: one use at a time, so that
	// a rotation is never raced. It is taken before b.mu, never under it.
	useRefresh sync.Mutex
}

// New builds a broker for the integrations of cfg, reading every client
// secret into an enclave.
func New(cfg *config.Config, opts Options) (*Broker, error) {
	b := &Broker{
		log:        opts.Logger,
		now:        opts.Now,
		margin:     cfg.Settings.RefreshMargin,
		timeout:    cfg.Settings.RequestTimeout,
		store:      opts.Store,
		audit:      opts.Audit,
		metrics:    opts.Metrics,
		users:      map[int]map[string]*grant{},
		broken:     map[int]error{},
		names:      map[int]string{},
		nameFailed: map[int]time.Time{},
		gen:        map[int]uint64{},
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.margin == 0 {
		b.margin = config.DefaultRefreshMargin
	}
	if b.timeout == 0 {
		b.timeout = config.DefaultRequestTimeout
	}
	b.reg.http = provider.NewHTTPClient(b.timeout)
	b.reg.now = b.now
	b.reg.dir = opts.Directory
	if b.reg.dir == nil {
		b.reg.dir = provider.NewDirectory(b.reg.http)
	}
	b.reg.callback = cfg.Settings.CallbackURL
	if b.metrics != nil {
		b.reg.observe = b.metrics.TokenRequest
		b.metrics.SignedIn(b.signedIn)
		b.metrics.Sessions(b.events.count)
	}
	if _, _, err := b.reg.replace(cfg, b.timeout); err != nil {
		return nil, err
	}
	b.life, b.unwatch = context.WithCancel(context.Background())
	if sh, ok := opts.Store.(store.Shared); ok {
		b.shared = sh
		go sh.Watch(b.life, b.storeChanged)
	}
	return b, nil
}

// Provider returns the provider client of the integration with guid or
// name id.
func (b *Broker) Provider(id string) (*provider.Client, error) { return b.reg.find(id) }

// Integrations returns what user uid sees of every integration, sorted by
// name. It never asks a provider; in a cluster, a user whose credentials
// are not in memory yet is loaded from the database, once.
func (b *Broker) Integrations(uid int) []credential.Integration {
	all := b.reg.all()
	out := make([]credential.Integration, 0, len(all))
	b.mu.Lock()
	defer b.mu.Unlock()
	creds, err := b.credsLocked(uid)
	for _, p := range all {
		out = append(out, metaOf(p.Config(), creds, err))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Integration returns what user uid sees of the integration with guid or
// name id. It never asks a provider.
func (b *Broker) Integration(uid int, id string) (credential.Integration, error) {
	p, creds, err := b.lockGrants(uid, id)
	if p == nil {
		return credential.Integration{}, err
	}
	if err == nil {
		defer b.mu.Unlock()
	}
	return metaOf(p.Config(), creds, err), nil
}

// lockGrant is lockGrants for user uid's grant of the integration: on
// success it returns the integration, its guid and the grant with b.mu
// held (the caller unlocks it); ErrNotSignedIn when there is no grant,
// and a store that did not load as ErrUnavailable, without b.mu held.
func (b *Broker) lockGrant(uid int, id string) (*provider.Client, string, *grant, error) {
	p, creds, err := b.lockGrants(uid, id)
	if p == nil {
		return nil, "", nil, err
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w: %w", err, credential.ErrUnavailable)
	}
	g := p.Config().GUID.String()
	cr := creds[g]
	if cr == nil {
		b.mu.Unlock()
		return nil, "", nil, fmt.Errorf("broker: %s: %w", p.Config().Name, credential.ErrNotSignedIn)
	}
	return p, g, cr, nil
}

// lockGrants finds the integration with guid or name id, locks b.mu and
// returns user uid's grants, keyed by GUID, loading them on first use.
// The caller unlocks b.mu. On an error b.mu is not held, and the
// integration is returned if it was found (the grants did not load).
func (b *Broker) lockGrants(uid int, id string) (*provider.Client, map[string]*grant, error) {
	p, err := b.reg.find(id)
	if err != nil {
		return nil, nil, err
	}
	b.mu.Lock()
	creds, err := b.credsLocked(uid)
	if err != nil {
		b.mu.Unlock()
		return p, nil, err
	}
	return p, creds, nil
}

// metaOf is what a user whose credentials are creds (or did not load,
// with err) sees of integration c. Callers hold b.mu.
func metaOf(c *config.Integration, creds map[string]*grant, err error) credential.Integration {
	m := credential.Integration{
		GUID:             c.GUID.String(),
		Name:             c.Name,
		DisplayName:      c.DisplayName,
		ClientID:         c.ClientID,
		AuthURL:          c.AuthURL,
		TokenURL:         c.TokenURL,
		Scopes:           nonNil(c.Scopes),
		Issuer:           nonEmpty(c.Issuer),
		Status:           credential.StatusNotSignedIn,
		GrantedScopes:    []string{},
		Tokens:           []credential.TokenVariant{},
		Resources:        nonNil(c.Resources),
		DockerRegistries: nonNil(c.DockerRegistries),
		DockerUsername:   c.DockerUsername,
	}
	for _, v := range c.Tokens {
		m.Tokens = append(m.Tokens, credential.TokenVariant{Name: v.Name, Resource: v.Resource, Scopes: v.Scopes})
	}
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

// nonEmpty returns &s, or nil for "".
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return append([]string(nil), s...)
}

// Import is Put for credentials a user brought from elsewhere. One with
// a refresh token that replaces a grant the user holds counts as a token
// request the user asks for outright (it starts a grant whose tokens
// nothing kept yet, each a request to the provider; see demand.go), and
// is refused past the user's bound, so that a loop of imports and reads
// cannot send a request each. A first import of each integration (a
// migration of hundreds at once) and one without a refresh token (which
// can cause no request) are not counted. It wipes the byte slices of t
// either way.
func (b *Broker) Import(uid int, id string, t credential.Tokens) error {
	if len(t.Refresh) == 0 {
		return b.Put(uid, id, t)
	}
	if _, _, _, err := b.lockGrant(uid, id); err != nil {
		return b.Put(uid, id, t) // nothing to replace (or Put says why not)
	}
	b.mu.Unlock()
	if err := b.spendDemand(uid); err != nil {
		memguard.WipeBytes(t.Access)
		memguard.WipeBytes(t.Refresh)
		memguard.WipeBytes(t.IDToken)
		return err
	}
	return b.Put(uid, id, t)
}

// Put stores tokens for user uid and the integration with guid or name id,
// replacing any there were, and wipes the byte slices of t.
func (b *Broker) Put(uid int, id string, t credential.Tokens) error {
	defer memguard.WipeBytes(t.Access)
	defer memguard.WipeBytes(t.Refresh)
	defer memguard.WipeBytes(t.IDToken)
	switch {
	case len(t.Access) == 0:
		return fmt.Errorf("broker: store credentials for %q: the access token is empty: %w", id, credential.ErrBadRequest)
	case len(t.Access) > credential.MaxTokenLen || len(t.Refresh) > credential.MaxTokenLen || len(t.IDToken) > credential.MaxTokenLen:
		return fmt.Errorf("broker: store credentials for %q: a token is longer than %d KiB: %w", id, credential.MaxTokenLen>>10, credential.ErrBadRequest)
	}
	obtained := t.Obtained
	if obtained.IsZero() {
		obtained = b.now()
	}
	access, err := credential.NewAccess(t.Access, t.Expiry, obtained, t.TokenType, t.Scopes, t.IDToken, nil)
	if err != nil {
		return fmt.Errorf("broker: store credentials for %q: %w: %w", id, err, credential.ErrUnavailable)
	}
	refresh, err := secmem.Seal(t.Refresh)
	if err != nil {
		return fmt.Errorf("broker: store credentials for %q: %w: %w", id, err, credential.ErrUnavailable)
	}
	p, creds, err := b.lockGrants(uid, id)
	if err != nil {
		return err
	}
	in := p.Config()
	g := in.GUID.String()
	prev := creds[g]
	c := &grant{
		access:  access,
		refresh: refresh,
		scopes:  append([]string(nil), t.Scopes...),
		account: printable.String(t.Account, provider.MaxAccount),
		status:  credential.StatusSignedIn,
	}
	creds[g] = c
	stopAhead(prev)
	b.armAheadLocked(uid, g, c)
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
		b.log.Error("could not save credentials", "uid", uid, "integration", in.Name, "guid", g, "err", err)
		return err
	}
	b.log.Info("credentials stored", "uid", uid, "integration", in.Name, "guid", g,
		"expiry", credential.FormatTime(t.Expiry), "refresh_token", c.refresh != nil)
	b.publish(uid, EventChanged, g)
	return nil
}

// Forget drops user uid's credentials for the integration with guid or
// name id. It reports whether there were any.
func (b *Broker) Forget(uid int, id string) (bool, error) {
	had, _, _, err := b.forget(uid, id)
	return had, err
}

// forget drops the credentials and returns what was dropped, and the
// integration's provider, so that the caller can revoke the refresh token.
func (b *Broker) forget(uid int, id string) (bool, *grant, *provider.Client, error) {
	p, creds, err := b.lockGrants(uid, id)
	if err != nil {
		return false, nil, nil, err
	}
	g := p.Config().GUID.String()
	old, had := creds[g]
	delete(creds, g)
	stopAhead(old)
	b.mu.Unlock()
	if b.shared != nil {
		// The stored record, not this broker's copy, is what to revoke:
		// another broker may have rotated the refresh token since.
		return b.forgetShared(uid, p, old, had)
	}
	if !had {
		return false, nil, p, nil
	}
	b.log.Info("signed out", "uid", uid, "integration", p.Config().Name, "guid", g)
	b.publish(uid, EventChanged, g)
	if err := b.persist(uid, g); err != nil {
		return true, old, p, fmt.Errorf("broker: signed out in memory, but the store still holds the old tokens: %w", err)
	}
	return true, old, p, nil
}

// LogoutResult says what a sign-out did.
type LogoutResult struct {
	// SignedOut is true when there were tokens to forget.
	SignedOut bool `json:"signed_out"`
	// Revoked is true when the provider confirmed the revocation of the
	// refresh token (or, without one, of the access token).
	Revoked bool `json:"revoked"`
	// RevocationError says why revocation failed or was skipped; the
	// tokens are forgotten locally in any case.
	RevocationError string `json:"revocation_error,omitempty"`
}

// Logout forgets user uid's tokens for the integration with guid or name
// id, in memory and on disk, then revokes the refresh token (or, without
// one, the access token) at the provider when revocation_url is
// configured (RFC 7009).
func (b *Broker) Logout(ctx context.Context, uid int, id string) (LogoutResult, error) {
	res, err := b.logout(ctx, uid, id)
	if res.SignedOut {
		b.Record(uid, id, audit.Event{Event: "sign_out", Result: result(err)})
		if res.Revoked {
			b.Record(uid, id, audit.Event{Event: "revocation", Result: "ok"})
		} else if res.RevocationError != "" {
			b.Record(uid, id, audit.Event{Event: "revocation", Result: "failed", Reason: res.RevocationError})
		}
	}
	return res, err
}

func (b *Broker) logout(ctx context.Context, uid int, id string) (LogoutResult, error) {
	had, old, p, err := b.forget(uid, id)
	res := LogoutResult{SignedOut: had}
	if !had || old == nil {
		return res, err
	}
	if p.Config().RevocationURL == "" {
		// An issuer not reached yet may give one.
		if rerr := p.Ready(ctx); rerr != nil {
			res.RevocationError = rerr.Error()
			return res, err
		}
	}
	if p.Config().RevocationURL == "" {
		return res, err
	}
	in := p.Config()
	var buf *secmem.Buffer
	var oerr error
	hint := "refresh_token"
	switch {
	case old.refresh != nil:
		buf, oerr = secmem.Open(old.refresh)
	case old.access != nil:
		hint = "access_token"
		buf, oerr = old.access.Open()
	default:
		return res, err
	}
	if oerr != nil {
		res.RevocationError = oerr.Error()
		return res, err
	}
	if rerr := p.Revoke(ctx, buf, hint); rerr != nil {
		res.RevocationError = rerr.Error()
		b.log.Warn("revocation failed; the tokens are forgotten here but may stay valid at the provider", "uid", uid,
			"integration", in.Name, "guid", in.GUID.String(), "err", rerr)
	} else {
		res.Revoked = true
		b.log.Info("revoked at the provider", "uid", uid, "integration", in.Name, "guid", in.GUID.String(), "token", hint)
	}
	return res, err
}

// SignOut is Logout for the sign-in web server's settings page: note says,
// for people, how revocation went ("" when the provider confirmed it or
// none is configured).
func (b *Broker) SignOut(ctx context.Context, uid int, guid string) (note string, err error) {
	res, err := b.Logout(ctx, uid, guid)
	if res.RevocationError != "" {
		note = "The provider did not confirm the revocation (" + res.RevocationError + "); the tokens are forgotten here."
	}
	return note, err
}

// nameRetry is how long a failed user name lookup is not tried again.
const nameRetry = 30 * time.Second

// storeUserLocked names uid for the store, from the names looked up so
// far (resolveNameLocked): it never waits for a directory service. Callers
// hold b.mu.
func (b *Broker) storeUserLocked(uid int) store.User {
	return store.User{UID: uid, Name: b.names[uid]}
}

// resolveNameLocked looks up uid's user name unless it is known, or its
// lookup failed less than nameRetry ago. The lookup (NSS: LDAP or SSSD,
// which can be slow) runs without b.mu, one at a time per uid, so it
// never holds up other users. Callers hold b.mu; it is released and taken
// again around the lookup.
func (b *Broker) resolveNameLocked(uid int) {
	if _, ok := b.names[uid]; ok {
		return
	}
	if at, ok := b.nameFailed[uid]; ok && b.now().Sub(at) < nameRetry {
		return
	}
	b.mu.Unlock()
	v, err, _ := b.nameLookups.Do(strconv.Itoa(uid), func() (any, error) {
		if b.lookupName != nil {
			return b.lookupName(uid)
		}
		u, err := user.LookupId(strconv.Itoa(uid))
		if err != nil {
			return "", err
		}
		return u.Username, nil
	})
	b.mu.Lock()
	if err != nil {
		b.nameFailed[uid] = b.now()
		return
	}
	b.names[uid] = v.(string)
	delete(b.nameFailed, uid)
}

// credsLocked returns user uid's credentials, loading them from the store
// on first use. Callers hold b.mu; on first use it releases b.mu while it
// looks up the user's name, and, from a shared store, while it loads.
func (b *Broker) credsLocked(uid int) (map[string]*grant, error) {
	if u, ok := b.users[uid]; ok {
		return u, nil
	}
	b.resolveNameLocked(uid) // without b.mu while it looks up
	if u, ok := b.users[uid]; ok {
		return u, nil // loaded meanwhile
	}
	if err := b.broken[uid]; err != nil {
		return nil, err
	}
	u := map[string]*grant{}
	if b.store != nil {
		var recs []store.Record
		var err error
		if b.shared != nil {
			recs, err = b.loadSharedLocked(uid) // without b.mu while it loads
			if u, ok := b.users[uid]; ok {
				return u, nil // loaded meanwhile
			}
		} else {
			recs, err = b.store.Load(b.life, b.storeUserLocked(uid))
		}
		if err != nil {
			return nil, b.loadFailedLocked(uid, err)
		}
		for _, r := range recs {
			u[r.GUID] = &grant{access: r.Access, refresh: r.Refresh, scopes: r.Scopes, account: r.Account, status: r.Status, lastErr: r.Error}
			b.armAheadLocked(uid, r.GUID, u[r.GUID])
		}
		if len(recs) > 0 {
			b.log.Info("credentials loaded", "uid", uid, "count", len(recs))
		}
	}
	b.users[uid] = u
	return u, nil
}

// Load loads user uid's credentials from the store now, so that stored
// credentials that do not load are reported at start rather than at first
// use.
func (b *Broker) Load(uid int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.credsLocked(uid)
	return err
}

// saveLocks serialise the saves of each record. It is safe for concurrent
// use.
type saveLocks struct {
	mu    sync.Mutex
	locks map[saveKey]*sync.Mutex
}

// saveKey names one stored record.
type saveKey struct {
	uid  int
	guid string
}

func (s *saveLocks) lock(k saveKey) func() {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[saveKey]*sync.Mutex{}
	}
	mu := s.locks[k]
	if mu == nil {
		mu = &sync.Mutex{}
		s.locks[k] = mu
	}
	s.mu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// persist writes user uid's credentials for guid to the store, or removes
// them when there are none. Saves of one record are serialised and each
// snapshots the state when it starts, so the stored record never goes
// back to an older state. Only that record is written: the cost does not
// depend on how many credentials the user holds.
func (b *Broker) persist(uid int, guid string) error {
	if b.store == nil {
		return nil
	}
	if b.shared != nil {
		err := b.persistShared(uid, guid) // under the cluster's lock
		b.metrics.StoreWrite(err)
		return err
	}
	defer b.saves.lock(saveKey{uid, guid})()
	b.mu.Lock()
	u := b.storeUserLocked(uid)
	c := b.users[uid][guid]
	var r store.Record
	if c != nil {
		r = store.Record{GUID: guid, Access: c.access, Refresh: c.refresh, Scopes: c.scopes, Account: c.account, Status: c.status, Error: c.lastErr}
	}
	b.mu.Unlock()
	var err error
	if c == nil {
		err = b.store.Remove(b.life, u, guid)
	} else {
		err = b.store.Save(b.life, u, r)
	}
	b.metrics.StoreWrite(err)
	return err
}

// Source binds a broker to one user: it is what that user's filesystem
// in the broker's own process (an embedded mount, or the user's view of
// the system mount) reads tokens from. It is safe for concurrent use.
type Source struct {
	B   *Broker
	UID int
}

// Integrations returns the user's view of every integration.
func (s Source) Integrations(context.Context) ([]credential.Integration, error) {
	return s.B.Integrations(s.UID), nil
}

// Integration returns the user's view of one integration.
func (s Source) Integration(_ context.Context, id string) (credential.Integration, error) {
	return s.B.Integration(s.UID, id)
}

// Token returns a valid access token with refresh-on-read, and until when
// it may be kept (its refresh time): the main token, or token variant
// variant's.
func (s Source) Token(ctx context.Context, id, variant string) (*credential.Token, time.Time, error) {
	var t *credential.Token
	var err error
	if variant == "" {
		t, err = s.B.Token(ctx, s.UID, id)
	} else {
		t, err = s.B.TokenFor(ctx, s.UID, id, TokenRequest{Variant: variant})
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	return t, s.B.keepUntil(t), nil
}

// Peek returns the token Token would hand out now, without a network
// call, and until when it may be kept; nil when there is none or it is
// due for a refresh.
func (s Source) Peek(guid, variant string) (*credential.Token, time.Time) {
	if variant == "" {
		return s.B.Peek(s.UID, guid)
	}
	return s.B.PeekVariant(s.UID, guid, variant)
}

// Touch records that a read of guid's current token reached the
// filesystem, so that the token is refreshed ahead of its refresh time.
func (s Source) Touch(guid string) { s.B.Touch(s.UID, guid) }

// Watch calls f with every change to the user's integrations until ctx
// ends. A change completes only after f returns (or after the broker
// stops waiting, AckTimeout).
func (s Source) Watch(ctx context.Context, f func(credential.Change)) {
	for ctx.Err() == nil {
		sub, err := s.B.Subscribe(s.UID)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		f(credential.Change{Revoke: true}) // whatever happened before
		s.watch(ctx, sub, f)
		s.B.Unsubscribe(sub)
		f(credential.Change{Revoke: true, Unwatched: true})
	}
}

func (s Source) watch(ctx context.Context, sub *Subscription, f func(credential.Change)) {
	for {
		select {
		case ev := <-sub.C:
			f(ev.Change())
			sub.Ack(ev.Seq)
		case <-sub.Dead():
			return
		case <-ctx.Done():
			return
		}
	}
}

// Record writes an audit event about user uid and the integration with
// guid or name id, filling in the user's and the integration's names, and
// counts it in the metrics. It does nothing without either.
func (b *Broker) Record(uid int, id string, ev audit.Event) {
	if b.audit == nil && b.metrics == nil {
		return
	}
	if p, err := b.reg.find(id); err == nil {
		ev.Integration, ev.GUID = p.Config().Name, p.Config().GUID.String()
	}
	b.metrics.Event(ev)
	if b.audit == nil {
		return
	}
	b.mu.Lock()
	ev.User, ev.UID = b.storeUserLocked(uid).Name, audit.UID(uid)
	b.mu.Unlock()
	b.audit.Record(ev)
}

// recordLocked is Record for the integration name (guid g). Callers hold
// b.mu.
func (b *Broker) recordLocked(uid int, name, g string, ev audit.Event) {
	if b.audit == nil && b.metrics == nil {
		return
	}
	ev.Integration, ev.GUID = name, g
	b.metrics.Event(ev)
	if b.audit == nil {
		return
	}
	ev.User, ev.UID = b.storeUserLocked(uid).Name, audit.UID(uid)
	b.audit.Record(ev)
}

// signedIn counts, for each integration's name, the users whose loaded
// credentials are not expired: signed in, or waiting to retry a refresh
// after a transient failure. It is the metrics' users signed in.
func (b *Broker) signedIn() map[string]int {
	ps := b.reg.all()
	out := make(map[string]int, len(ps))
	guids := make(map[string]string, len(ps)) // guid -> name, made before b.mu
	for _, p := range ps {
		out[p.Config().Name] = 0
		guids[p.Config().GUID.String()] = p.Config().Name
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, creds := range b.users {
		for g, c := range creds {
			if name, ok := guids[g]; ok && c.status != credential.StatusExpired {
				out[name]++
			}
		}
	}
	return out
}

// result is an audit result of err: ok or failed.
func result(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}
