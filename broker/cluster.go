package broker

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"time"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/provider"
	"github.com/oauthfs/oauthfs/store"
)

// A broker whose store is shared (store.Shared: PostgreSQL) is one of the
// brokers of a cluster. Three things change:
//
//   - A refresh runs under the store's cluster-wide lock of the record,
//     on the record as stored: when another broker refreshed it already,
//     its tokens are taken and the provider is not asked; otherwise the
//     rotated refresh token is committed before anyone gets the new
//     access token.
//   - Changes other brokers commit reach this one (store.Shared.Watch):
//     the record is read again and the user's sessions are told, as if
//     the change had been made here.
//   - Loads from the store do not hold the broker's lock, so that a slow
//     database never holds up reads of tokens already in memory.

// loadSharedLocked loads user uid's records from the shared store, one load per
// user at a time, without holding b.mu: it is called and returns with
// b.mu held. A load that a change of the user overtook is done again.
func (b *Broker) loadSharedLocked(uid int) ([]store.Record, error) {
	u := b.storeUserLocked(uid)
	for {
		// A load joins only one that began after the last change it
		// must see: the key names the generation.
		gen, epoch := b.gen[uid], b.epoch
		b.mu.Unlock()
		key := fmt.Sprintf("%d/%d/%d", uid, gen, epoch)
		v, err, _ := b.loads.Do(key, func() (any, error) { return b.store.Load(b.life, u) })
		b.mu.Lock()
		if err != nil {
			return nil, err
		}
		if b.gen[uid] == gen && b.epoch == epoch {
			return v.([]store.Record), nil
		}
	}
}

// grantOf makes a grant of a stored record.
func grantOf(r store.Record) *grant {
	return &grant{access: r.Access, refresh: r.Refresh, scopes: r.Scopes, account: r.Account, status: r.Status, lastErr: r.Error}
}

// recordOf makes the stored record of a grant. Callers hold b.mu.
func recordOf(guid string, c *grant) *store.Record {
	return &store.Record{GUID: guid, Access: c.access, Refresh: c.refresh, Scopes: c.scopes, Account: c.account, Status: c.status, Error: c.lastErr}
}

// refreshShared is refresh for a broker of a cluster. Under the
// record's cluster-wide lock it works on the record as stored: it takes
// a token another broker refreshed, or refreshes with the stored refresh
// token and commits the answer; only after the commit does this broker's
// memory, and so any reader, get the new access token. The answer is
// committed on top of the stored record whatever happened to this
// broker's copy meanwhile (a reconnect dropping it, say): a rotated
// refresh token is never thrown away. If the commit fails, the answer is
// kept aside, not handed out, and committed by the next attempt. cr is
// marked attempting. It reports whether the user's sessions must drop
// the token now (signed out elsewhere, or expired).
func (b *Broker) refreshShared(uid int, p *provider.Client, cr *grant, cached *credential.Token, ahead time.Duration) (*credential.Token, bool, error) {
	in := p.Config()
	name, g := in.Name, in.GUID.String()
	b.mu.Lock()
	u := b.storeUserLocked(uid)
	held := cr.uncommitted
	b.mu.Unlock()
	var (
		result  *store.Record // the record as it stands after the commit; nil: none
		perr    error         // the provider's failure
		ran     bool
		pending *store.Record // what fn asked to commit
	)
	ctx, cancel := context.WithTimeout(b.life, 2*b.timeout)
	defer cancel()
	err := b.shared.Update(ctx, u, g, true, func(cur *store.Record) (*store.Record, error) {
		ran = true
		base, mustSave := cur, false
		if held != nil && cur != nil && obtainedOf(*held).After(obtainedOf(*cur)) {
			base, mustSave = held, true // ours, from an attempt whose commit failed
		}
		save := func(r *store.Record) (*store.Record, error) { result, pending = r, r; return r, nil }
		if base == nil {
			return nil, nil // signed out on another host
		}
		now := b.now()
		switch {
		case base.Access != nil && b.fresh(base.Access, now, ahead):
			result = base // another host refreshed it
		case base.Refresh == nil && !base.Access.Valid(now, 0) && base.Status != credential.StatusExpired:
			exp := *base
			exp.Access, exp.Status, exp.Error = nil, credential.StatusExpired, "the token expired and there is no refresh token; sign in again"
			return save(&exp)
		case base.Refresh == nil:
			result = base // nothing to refresh with: serve until expiry
		default:
			ans, err := p.Refresh(ctx, base.Refresh)
			if err != nil {
				var pe *provider.Error
				if errors.As(err, &pe) && pe.InvalidGrant() {
					exp := *base
					exp.Access, exp.Refresh, exp.Status = nil, nil, credential.StatusExpired
					exp.Error = "the provider rejected the refresh token (" + pe.Summary() + "); sign in again"
					b.log.Warn("refresh rejected; sign-in required", "uid", uid, "integration", name, "guid", g, "err", err)
					return save(&exp)
				}
				perr, result = err, base
				break
			}
			next, err := answered(*base, ans, now)
			if err != nil {
				perr, result = err, base
				break
			}
			return save(next)
		}
		if mustSave {
			return save(base)
		}
		return nil, nil
	})

	if ran && pending != nil {
		b.metrics.StoreWrite(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	mine := b.users[uid][g] == cr
	if err != nil {
		if ran && pending != nil && pending.Refresh != nil && mine {
			cr.uncommitted = pending // the only copy of a rotated refresh token
		}
		if ran {
			b.log.Error("could not commit credentials; the new tokens wait for the next attempt", "uid", uid, "integration", name, "guid", g, "err", err)
		} else {
			b.log.Warn("credential database unavailable for a refresh", "uid", uid, "integration", name, "guid", g, "err", err)
		}
		t, ferr := b.failedLocked(uid, name, g, cr, cached, fmt.Errorf("credential database: %w", err), now)
		return t, false, ferr
	}
	if mine && pending != nil {
		cr.uncommitted = nil
	}
	if result == nil { // signed out on another host
		if mine {
			stopAhead(cr)
			delete(b.users[uid], g)
		}
		return nil, true, fmt.Errorf("broker: %s: %w", name, credential.ErrNotSignedIn)
	}
	if mine {
		stopAhead(cr)
		if result.Status == credential.StatusSignedIn {
			b.replaceAccess(cr, result.Access, now, in.RefreshRevokesAccess) // the token it replaced is handed out until its time
		} else {
			cr.access, cr.prev = result.Access, nil
		}
		cr.refresh, cr.scopes, cr.account, cr.status, cr.lastErr = result.Refresh, result.Scopes, result.Account, result.Status, result.Error
		cr.failing, cr.retryAt = false, time.Time{}
	} else if creds := b.users[uid]; creds != nil && creds[g] == nil && result.Status == credential.StatusSignedIn {
		creds[g] = grantOf(*result) // dropped meanwhile (a reconnect): what is stored now
	}
	switch {
	case perr != nil:
		t, ferr := b.failedLocked(uid, name, g, cr, cached, perr, now)
		return t, false, ferr
	case result.Status == credential.StatusExpired:
		if pending != nil {
			b.recordLocked(uid, name, g, audit.Event{Event: "refresh", Result: "invalid_grant", Reason: result.Error})
		}
		return nil, true, fmt.Errorf("broker: %s: %w: %s", name, credential.ErrExpired, result.Error)
	case !result.Access.Valid(now, 0):
		return nil, false, fmt.Errorf("broker: %s: %w: the token expired and there is no refresh token; sign in again", name, credential.ErrExpired)
	}
	if mine {
		b.armAheadLocked(uid, g, cr)
	}
	if pending != nil {
		b.recordLocked(uid, name, g, audit.Event{Event: "refresh", Result: "ok"})
		b.log.Info("refreshed", "uid", uid, "integration", name, "guid", g, "expiry", credential.FormatTime(result.Access.Expiry()))
	}
	return result.Access, false, nil
}

// answered is base with the provider's answer to a refresh: a new access
// token and, when the provider rotated it, a new refresh token. It takes
// ans over (sealing or wiping its tokens).
func answered(base store.Record, ans *provider.Answer, now time.Time) (*store.Record, error) {
	defer ans.Wipe()
	scopes := base.Scopes
	if ans.Scopes != nil {
		scopes = ans.Scopes
	}
	t, err := credential.NewAccess(ans.Access, ans.Expiry, ans.Obtained, ans.TokenType, scopes, ans.IDToken, idOf(base.Access)) // wipes ans.Access and ans.IDToken
	if err != nil {
		return nil, err
	}
	next := base
	next.Access, next.Status, next.Error = t, credential.StatusSignedIn, ""
	if ans.Refresh != nil {
		if next.Refresh, err = secmem.Seal(ans.Refresh); err != nil { // wipes ans.Refresh
			return nil, err
		}
	}
	if ans.Scopes != nil {
		next.Scopes = ans.Scopes
	}
	return &next, nil
}

// idOf is the ID token that came with t, or nil (also for a nil t): what
// a refresh that brings none keeps.
func idOf(t *credential.Token) *credential.Token {
	if t == nil {
		return nil
	}
	return t.ID()
}

// obtainedOf is when r's access token was obtained, or zero.
func obtainedOf(r store.Record) time.Time {
	if r.Access == nil {
		return time.Time{}
	}
	return r.Access.Obtained()
}

// failedLocked records a transient failure of a refresh of cr (the
// provider's or the database's): the cached token while it is valid,
// else ErrUnavailable, and no new attempt before retryInterval. Callers
// hold b.mu.
func (b *Broker) failedLocked(uid int, name, g string, cr *grant, cached *credential.Token, err error, now time.Time) (*credential.Token, error) {
	b.recordLocked(uid, name, g, audit.Event{Event: "refresh", Result: "transient", Reason: err.Error()})
	if b.users[uid][g] == cr {
		cr.status, cr.lastErr = credential.StatusError, "refresh failed: "+err.Error()
		cr.failing, cr.retryAt = true, now.Add(retryDelay(err))
	}
	if cached.Valid(now, 0) {
		b.log.Warn("refresh failed; serving the cached token", "uid", uid, "integration", name, "guid", g, "err", err)
		return cached, nil
	}
	b.log.Error("refresh failed", "uid", uid, "integration", name, "guid", g, "err", err)
	return nil, fmt.Errorf("broker: %s: %w: %w", name, credential.ErrUnavailable, err)
}

// persistShared writes user uid's record of guid (a sign-in), as this
// broker holds it when the cluster's lock is taken: after any refresh
// another broker has under way, never in the middle of one. A record
// this broker no longer holds is left to the sign-out that dropped it.
func (b *Broker) persistShared(uid int, guid string) error {
	b.mu.Lock()
	u := b.storeUserLocked(uid)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.life, 2*b.timeout)
	defer cancel()
	return b.shared.Update(ctx, u, guid, false, func(*store.Record) (*store.Record, error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		c := b.users[uid][guid]
		if c == nil {
			return nil, nil
		}
		return recordOf(guid, c), nil
	})
}

// forgetShared is forget for a broker of a cluster: it removes the stored
// record and returns it for revocation; old is what this broker held.
func (b *Broker) forgetShared(uid int, p *provider.Client, old *grant, had bool) (bool, *grant, *provider.Client, error) {
	in := p.Config()
	g := in.GUID.String()
	b.mu.Lock()
	u := b.storeUserLocked(uid)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.life, b.timeout)
	rec, err := b.shared.Take(ctx, u, g)
	cancel()
	if rec != nil || err != nil {
		b.metrics.StoreWrite(err) // a record removed, or the attempt failed
	}
	if rec != nil {
		old, had = grantOf(*rec), true
	}
	if !had {
		return false, nil, p, err
	}
	b.log.Info("signed out", "uid", uid, "integration", in.Name, "guid", g)
	b.publish(uid, EventChanged, g)
	if err != nil {
		return true, old, p, fmt.Errorf("broker: signed out in memory, but the database still holds the old tokens: %w", err)
	}
	return true, old, p, nil
}

// storeChanged applies a change another broker committed: the record is
// read again and the user's sessions are told. A change of User "" (the
// store missed notifications) drops every user's credentials from memory;
// they load again at their next use.
func (b *Broker) storeChanged(c store.Change) {
	if c.User == "" {
		b.mu.Lock()
		for uid, creds := range b.users {
			for _, cr := range creds {
				stopAhead(cr)
			}
			delete(b.users, uid)
		}
		b.epoch++ // and loads under way are done again
		clear(b.broken)
		b.mu.Unlock()
		b.log.Info("dropped credentials held in memory: changes made elsewhere may have been missed")
		go b.publish(-1, EventReload, "")
		return
	}
	uid, ok := b.uidOf(c.User)
	if !ok {
		return // no such user on this host
	}
	b.mu.Lock()
	b.gen[uid]++
	_, loaded := b.users[uid]
	u := b.storeUserLocked(uid)
	b.mu.Unlock()
	if !loaded {
		return // nothing of theirs in memory; the next use loads it
	}
	ctx, cancel := context.WithTimeout(b.life, b.timeout)
	rec, err := b.shared.Get(ctx, u, c.GUID)
	cancel()
	b.mu.Lock()
	creds := b.users[uid]
	if old := creds[c.GUID]; old != nil {
		stopAhead(old)
	}
	switch {
	case err != nil:
		// What changed is unknown: forget the user's credentials; the
		// next use loads them again.
		b.log.Warn("could not read a change made elsewhere; the user's credentials load again at next use", "uid", uid, "guid", c.GUID, "err", err)
		for _, cr := range creds {
			stopAhead(cr)
		}
		delete(b.users, uid)
	case creds == nil:
	case rec == nil:
		delete(creds, c.GUID)
	default:
		next := grantOf(*rec)
		if old := creds[c.GUID]; old != nil && c.Refresh && rec.Status == credential.StatusSignedIn {
			// Another host refreshed ahead: the token it replaced is
			// handed out here until its own time, as there.
			next.prev, next.readTok = old.prev, old.readTok
			next.access = old.access
			next.variants = old.variants // obtained with the same grant
			b.replaceAccess(next, rec.Access, b.now(), b.refreshRevokes(c.GUID))
		}
		creds[c.GUID] = next
		b.armAheadLocked(uid, c.GUID, next) // refreshed ahead here too if read here
	}
	b.gen[uid]++
	b.mu.Unlock()
	// Sessions are told beside the next changes: a session slow to
	// acknowledge must not hold up other users' changes.
	if c.Refresh && err == nil && !b.refreshRevokes(c.GUID) {
		b.notify(uid, EventUpdated, c.GUID)
	} else {
		go b.publish(uid, EventChanged, c.GUID)
	}
}

// refreshRevokes reports whether a refresh of the integration guid ends
// the access token it replaces (refresh_revokes_access).
func (b *Broker) refreshRevokes(guid string) bool {
	p, err := b.reg.find(guid)
	return err == nil && p.Config().RefreshRevokesAccess
}

// uidOf returns the uid of the user named name on this host.
func (b *Broker) uidOf(name string) (int, bool) {
	b.mu.Lock()
	for uid, n := range b.names {
		if n == name {
			b.mu.Unlock()
			return uid, true
		}
	}
	b.mu.Unlock()
	u, err := user.Lookup(name)
	if err != nil {
		return 0, false
	}
	uid, err := strconv.Atoi(u.Uid)
	return uid, err == nil
}

// loadFailedLocked records why user uid's credentials did not load: for good
// when they are unusable, only for this use when the store was
// unreachable. Callers hold b.mu.
func (b *Broker) loadFailedLocked(uid int, err error) error {
	if b.shared == nil || errors.Is(err, store.ErrUnusable) {
		b.broken[uid] = err
		b.log.Error("credential store unusable", "uid", uid, "err", err)
		return err
	}
	b.log.Warn("credential database unavailable", "uid", uid, "err", err)
	return err
}
