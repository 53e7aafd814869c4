package broker

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"time"

	"github.com/oauthfs/oauthfs/credential"
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

// loadShared loads user uid's records from the shared store, one load per
// user at a time, without holding b.mu: it is called and returns with
// b.mu held. A load that a change of the user overtook is done again.
func (b *Broker) loadSharedLocked(uid int) ([]store.Record, error) {
	u := b.storeUserLocked(uid)
	for {
		gen := b.gen[uid]
		b.mu.Unlock()
		v, err, _ := b.loads.Do(strconv.Itoa(uid), func() (any, error) { return b.store.Load(u) })
		b.mu.Lock()
		if err != nil {
			return nil, err
		}
		if b.gen[uid] == gen {
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

// refreshShared is refresh for a broker of a cluster: under the record's
// cluster-wide lock it takes the tokens another broker refreshed, or
// refreshes with the stored refresh token and commits the result before
// returning it. cr is marked attempting.
func (b *Broker) refreshShared(uid int, p *provider.Client, cr *grant, cached *credential.Token, ahead time.Duration) (*credential.Token, bool, error) {
	in := p.Config()
	name, g := in.Name, in.GUID.String()
	b.mu.Lock()
	u := b.storeUserLocked(uid)
	b.mu.Unlock()
	var (
		t    *credential.Token
		rerr error
		ran  bool
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.timeout)
	defer cancel()
	err := b.shared.Update(ctx, u, g, func(cur *store.Record) (*store.Record, error) {
		ran = true
		now := b.now()
		b.mu.Lock()
		defer b.mu.Unlock()
		mine := b.users[uid][g] == cr
		switch {
		case cur == nil: // signed out on another host
			if mine {
				stopAhead(cr)
				delete(b.users[uid], g)
			}
			rerr = fmt.Errorf("broker: %s: %w", name, credential.ErrNotSignedIn)
			return nil, nil
		case cur.Access != nil && b.fresh(cur.Access, now, ahead), cur.Refresh == nil:
			// Another host refreshed it (or there is nothing to refresh
			// with): take what is stored.
			if mine {
				stopAhead(cr)
				cr.access, cr.refresh, cr.scopes, cr.account, cr.status, cr.lastErr = cur.Access, cur.Refresh, cur.Scopes, cur.Account, cur.Status, cur.Error
				cr.failing, cr.read = false, false
			}
			switch {
			case cur.Access.Valid(now, 0):
				t = cur.Access
			case cur.Status == credential.StatusExpired:
				rerr = fmt.Errorf("broker: %s: %w: %s", name, credential.ErrExpired, cur.Error)
			default:
				rerr = fmt.Errorf("broker: %s: %w: the token expired and there is no refresh token; sign in again", name, credential.ErrExpired)
			}
			return nil, nil
		}
		// Ours to refresh, with the refresh token as stored (another
		// host may have rotated the one in memory). The provider is
		// asked without b.mu.
		b.mu.Unlock()
		ans, perr := p.Refresh(cur.Refresh)
		b.mu.Lock()
		if b.users[uid][g] == cr {
			cr.refresh = cur.Refresh
		}
		var save bool
		t, save, rerr = b.settleLocked(uid, name, g, cr, cached, ans, perr)
		if save && b.users[uid][g] == cr {
			return recordOf(g, cr), nil
		}
		return nil, nil
	})
	if err == nil {
		return t, false, rerr
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !ran {
		// The database did not answer: as when the provider does not.
		b.log.Warn("credential database unavailable for a refresh", "uid", uid, "integration", name, "guid", g, "err", err)
		t, _, rerr = b.settleLocked(uid, name, g, cr, cached, nil, fmt.Errorf("credential database: %w", err))
		return t, false, rerr
	}
	// Refreshed, but the commit failed: the new tokens are kept in memory
	// and saved again on the next change.
	b.log.Error("could not save credentials; the new tokens are kept in memory", "uid", uid, "integration", name, "guid", g, "err", err)
	if cr.status == credential.StatusSignedIn {
		cr.status, cr.lastErr = credential.StatusError, "could not save credentials: "+err.Error()
	}
	return t, false, rerr
}

// forgetShared is forget for a broker of a cluster: it removes the stored
// record and returns it for revocation; old is what this broker held.
func (b *Broker) forgetShared(uid int, p *provider.Client, old *grant, had bool) (bool, *grant, *provider.Client, error) {
	in := p.Config()
	g := in.GUID.String()
	b.mu.Lock()
	u := b.storeUserLocked(uid)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	rec, err := b.shared.Take(ctx, u, g)
	cancel()
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
			b.gen[uid]++
		}
		clear(b.broken)
		b.mu.Unlock()
		b.log.Info("dropped credentials held in memory: changes made elsewhere may have been missed")
		b.publish(-1, EventReload, "")
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
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
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
		creds[c.GUID] = grantOf(*rec)
	}
	b.gen[uid]++
	b.mu.Unlock()
	if c.Refresh && err == nil {
		b.notify(uid, EventUpdated, c.GUID)
	} else {
		b.publish(uid, EventChanged, c.GUID)
	}
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

// loadFailed records why user uid's credentials did not load: for good
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
