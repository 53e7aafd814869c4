package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/provider"
	"golang.org/x/sync/singleflight"
)

// Outage rules. After a transient failure no attempt starts within
// retryInterval of the last one's end; a reader that comes when one may
// start waits at most triggerWait for it, and every other reader gets the
// cached token or the error at once: nobody waits on a known outage.
const (
	retryInterval = time.Second
	triggerWait   = time.Second
)

// noExpiryKeep is how long a filesystem may keep a token that does not
// expire before asking again (changes reach it by events anyway).
const noExpiryKeep = time.Hour

// Timeout returns the broker's request_timeout: how long a request to a
// provider may take.
func (b *Broker) Timeout() time.Duration { return b.timeout }

// Now returns the broker's clock.
func (b *Broker) Now() time.Time { return b.now() }

// expiryOf is when t stops being usable: its expiry, or its ID token's
// when that came with it and expires sooner (an ID token is refreshed
// with its access token). An ID token kept from an earlier answer does
// not count: no refresh would replace it.
func expiryOf(t *credential.Token) time.Time {
	e := t.Expiry()
	if id := t.ID(); id != nil && id.Obtained().Equal(t.Obtained()) && !id.Expiry().IsZero() && (e.IsZero() || id.Expiry().Before(e)) {
		e = id.Expiry()
	}
	return e
}

// marginFor is the refresh margin for t: min(refresh_margin, a quarter of
// the token's lifetime).
func (b *Broker) marginFor(t *credential.Token) time.Duration {
	if t == nil {
		return 0
	}
	return b.marginUntil(t, expiryOf(t))
}

// marginUntil is marginFor(t), for t's expiryOf e.
func (b *Broker) marginUntil(t *credential.Token, e time.Time) time.Duration {
	if e.IsZero() {
		return 0
	}
	if q := e.Sub(t.Obtained()) / 4; q < b.margin {
		return max(0, q)
	}
	return b.margin
}

// RefreshAt returns t's refresh time (its expiry, or its ID token's, less
// the refresh margin), until when whoever was handed t may keep it, or
// the zero time for a token without expiry.
func (b *Broker) RefreshAt(t *credential.Token) time.Time {
	e := expiryOf(t)
	if e.IsZero() {
		return time.Time{}
	}
	return e.Add(-b.marginUntil(t, e))
}

// handOutBy returns when the broker stops handing t out to readers: its
// refresh time less credential.HandOverSlack, so that every reader may
// keep it at least that long; the zero time for a token without expiry.
// A reader after it gets a refreshed token.
func (b *Broker) handOutBy(t *credential.Token) time.Time {
	at := b.RefreshAt(t)
	if at.IsZero() {
		return at
	}
	return at.Add(-credential.HandOverSlack(t))
}

// fresh reports whether t may still be handed out ahead from now: it does
// not expire, or ahead from now is before its hand-out time.
func (b *Broker) fresh(t *credential.Token, now time.Time, ahead time.Duration) bool {
	if t == nil {
		return false
	}
	by := b.handOutBy(t)
	return by.IsZero() || now.Add(ahead).Before(by)
}

// retryDelay is how long after a failure of err no new attempt starts:
// retryInterval, or what the provider asked for (Retry-After, with a 429
// or a 503), whichever is longer.
func retryDelay(err error) time.Duration {
	var pe *provider.Error
	if errors.As(err, &pe) && pe.RetryAfter > retryInterval {
		return pe.RetryAfter
	}
	return retryInterval
}

// handingOut returns the token cr hands out now (which may be past its
// hand-out time: then a refresh is due): after a refresh ahead, the token
// it replaced, until that token's own hand-out time; otherwise the newest.
// The hand-over time depends only on the replaced token, which every host
// of a cluster holds alike, so all of them switch at the same moment.
// Callers hold b.mu.
func (b *Broker) handingOut(cr *grant, now time.Time) *credential.Token {
	if cr.prev != nil {
		if b.fresh(cr.prev, now, 0) {
			return cr.prev
		}
		cr.prev = nil
	}
	return cr.access
}

// replaceAccess makes t cr's newest token. The one it replaces is still
// handed out until its own hand-out time when t is what a refresh ahead
// of it brought: it may still be handed out, and its hand-out time is
// within its refresh-ahead lead (and a second, for the news to travel
// between hosts). A token further from its time is no refresh ahead's:
// a host that held an older token than the one the cluster refreshed,
// or a refresh forced early, hands out t at once. So does an integration
// whose refresh ends the replaced token (revokes: GitHub Apps). Callers
// hold b.mu.
func (b *Broker) replaceAccess(cr *grant, t *credential.Token, now time.Time, revokes bool) {
	if old := b.handingOut(cr, now); !revokes && old != t && b.fresh(old, now, 0) && !b.fresh(old, now, b.aheadFor(old)+time.Second) {
		cr.prev = old
	} else {
		cr.prev = nil
	}
	cr.access = t
}

// keepUntil is until when a filesystem may cache t: its refresh time, or
// noExpiryKeep from now for a token that does not expire.
func (b *Broker) keepUntil(t *credential.Token) time.Time {
	if at := b.RefreshAt(t); !at.IsZero() {
		return at
	}
	return b.now().Add(noExpiryKeep)
}

// aheadFor is how long before its hand-out time a token that was read is
// refreshed in the background: half its margin, at most 30 s.
func (b *Broker) aheadFor(t *credential.Token) time.Duration {
	return min(b.marginFor(t), time.Minute) / 2
}

// Peek returns the token Token would hand user uid for guid now, without
// any network call, and until when it may be kept; nil when there is none
// or it is due for a refresh. It does not count as a read.
func (b *Broker) Peek(uid int, guid string) (*credential.Token, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	creds, err := b.credsLocked(uid)
	if err != nil {
		return nil, time.Time{}
	}
	cr := creds[guid]
	if cr == nil {
		return nil, time.Time{}
	}
	t := b.handingOut(cr, b.now())
	if !b.fresh(t, b.now(), 0) {
		return nil, time.Time{}
	}
	return t, b.keepUntil(t)
}

// Touch records that a read of user uid's current token for guid reached
// a filesystem: the token will be refreshed ahead of its refresh time.
func (b *Broker) Touch(uid int, guid string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cr := b.users[uid][guid]; cr != nil {
		cr.readTok = b.handingOut(cr, b.now())
	}
}

// stopAhead stops cr's refresh-ahead timer, if it has one.
func stopAhead(cr *grant) {
	if cr != nil && cr.ahead != nil {
		cr.ahead.Stop()
		cr.ahead = nil
	}
}

// armAheadLocked sets cr's refresh-ahead timer for its current token: at
// the token's hand-out time less aheadFor, a token that was read is
// refreshed in the background, so that its readers never wait for the
// token endpoint; a token nobody read is left alone. Callers hold b.mu.
func (b *Broker) armAheadLocked(uid int, guid string, cr *grant) {
	stopAhead(cr)
	t := cr.access
	if t == nil || expiryOf(t).IsZero() || cr.refresh == nil {
		return
	}
	ahead := b.aheadFor(t)
	at := b.handOutBy(t).Add(-ahead)
	cr.ahead = time.AfterFunc(max(0, at.Sub(b.now())), func() {
		b.mu.Lock()
		// Not while a failure's retry is not due yet: the outage rules
		// hold for refreshes ahead too.
		due := b.users[uid][guid] == cr && cr.access == t && cr.readTok == t && !cr.attempting &&
			!(cr.failing && b.now().Before(cr.retryAt))
		b.mu.Unlock()
		if !due {
			return
		}
		p, err := b.reg.find(guid)
		if err != nil {
			return
		}
		b.flights.DoChan(fmt.Sprintf("%d/%s", uid, guid), func() (any, error) {
			return b.refresh(uid, p, ahead)
		})
	})
}

// Token returns a valid access token for user uid and the integration with
// guid or name id, refreshing it first once it is past its hand-out time
// (its refresh time less credential.HandOverSlack).
// Concurrent callers for the same user and integration share one refresh.
// If ctx ends first, Token returns ctx.Err() and the refresh carries on.
//
// After a transient failure a caller whose cached token is still valid
// gets it at once; one whose token expired gets the error at once, unless
// a new attempt is due (at most one a second), which it starts and waits
// for at most triggerWait.
//
// Each call is a read that reached the broker, counted in the metrics.
func (b *Broker) Token(ctx context.Context, uid int, id string) (*credential.Token, error) {
	t, err := b.token(ctx, uid, id)
	if b.metrics != nil {
		name := ""
		if p, ferr := b.reg.find(id); ferr == nil {
			name = p.Config().Name
		}
		b.metrics.Read(name, err)
	}
	return t, err
}

func (b *Broker) token(ctx context.Context, uid int, id string) (*credential.Token, error) {
	p, g, cr, err := b.lockGrant(uid, id)
	if err != nil {
		return nil, err
	}
	in := p.Config()
	now := b.now()
	if t := b.handingOut(cr, now); b.fresh(t, now, 0) {
		cr.readTok = t
		b.mu.Unlock()
		return t, nil
	}
	key := fmt.Sprintf("%d/%s", uid, g)
	if cr.failing {
		// An attempt under way is joined, not repeated: a reader whose
		// read was interrupted and restarted (a signal) waits for the
		// attempt it started rather than failing at once.
		due := cr.attempting || !now.Before(cr.retryAt)
		cached, lastErr := cr.access, cr.lastErr
		b.mu.Unlock()
		var ch <-chan singleflight.Result
		if due {
			ch = b.flights.DoChan(key, func() (any, error) { return b.refresh(uid, p, 0) })
		}
		if cached.Valid(now, 0) {
			return cached, nil
		}
		if ch == nil {
			return nil, fmt.Errorf("broker: %s: %w: %s (retrying)", in.Name, credential.ErrUnavailable, lastErr)
		}
		wait := time.NewTimer(triggerWait)
		defer wait.Stop()
		select {
		case r := <-ch:
			return b.handedOut(uid, g, r)
		case <-wait.C:
			return nil, fmt.Errorf("broker: %s: %w: %s (retrying)", in.Name, credential.ErrUnavailable, lastErr)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	b.mu.Unlock()

	ch := b.flights.DoChan(key, func() (any, error) {
		return b.refresh(uid, p, 0)
	})
	select {
	case r := <-ch:
		return b.handedOut(uid, g, r)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// handedOut returns the result of a refresh to a reader, and records that
// the new token was read, so that it is refreshed ahead in its turn.
func (b *Broker) handedOut(uid int, guid string, r singleflight.Result) (*credential.Token, error) {
	if r.Err != nil {
		return nil, r.Err
	}
	t := r.Val.(*credential.Token)
	b.mu.Lock()
	if cr := b.users[uid][guid]; cr != nil {
		cr.readTok = t
	}
	b.mu.Unlock()
	return t, nil
}

// refresh runs at most once at a time per user and integration (under the
// singleflight group) and returns the token to hand out. It refreshes
// unless the current token may still be handed out ahead from now (a
// flight that ended just before ours refreshed it).
func (b *Broker) refresh(uid int, p *provider.Client, ahead time.Duration) (*credential.Token, error) {
	in := p.Config()
	name, g := in.Name, in.GUID.String()
	b.mu.Lock()
	cr := b.users[uid][g]
	if cr == nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: %s: %w", name, credential.ErrNotSignedIn)
	}
	now := b.now()
	if b.fresh(cr.access, now, ahead) {
		t := b.handingOut(cr, now)
		b.mu.Unlock()
		return t, nil // refreshed by a flight that ended just before ours
	}
	rt, cached := cr.refresh, cr.access
	if rt == nil && b.shared == nil { // (a cluster's broker asks the stored record)
		if cached.Valid(now, 0) {
			b.mu.Unlock()
			return cached, nil // nothing to refresh with; serve until expiry
		}
		changed := cr.status != credential.StatusExpired
		if changed {
			cr.access = nil
			cr.status, cr.lastErr = credential.StatusExpired, "the token expired and there is no refresh token; sign in again"
		}
		err := fmt.Errorf("broker: %s: %w: %s", name, credential.ErrExpired, cr.lastErr)
		b.mu.Unlock()
		if changed {
			b.persist(uid, g)
			b.notify(uid, EventUpdated, g)
		}
		return nil, err
	}
	cr.attempting = true
	b.mu.Unlock()

	var (
		t    *credential.Token
		save bool
		rerr error
	)
	if b.shared != nil {
		var changed bool
		t, changed, rerr = b.refreshShared(uid, p, cr, cached, ahead) // committed under the cluster's lock
		b.mu.Lock()
		cr.attempting = false
		b.mu.Unlock()
		switch {
		case changed:
			b.publish(uid, EventChanged, g) // signed out, or expired: sessions drop the token
		case in.RefreshRevokesAccess && rerr == nil:
			b.publish(uid, EventChanged, g) // the provider ended the token sessions keep
		default:
			b.notify(uid, EventUpdated, g)
		}
		return t, rerr
	} else {
		// One use of the refresh token at a time across the grant's
		// tokens; a variant's refresh may have rotated it meanwhile.
		cr.useRefresh.Lock()
		b.mu.Lock()
		if rt = cr.refresh; rt == nil {
			// A variant's refresh found the refresh token dead meanwhile.
			cr.attempting = false
			msg := cr.lastErr
			b.mu.Unlock()
			cr.useRefresh.Unlock()
			return nil, fmt.Errorf("broker: %s: %w: %s", name, credential.ErrExpired, msg)
		}
		b.mu.Unlock()
		ans, err := p.Refresh(b.life, rt)
		b.mu.Lock()
		cr.attempting = false
		t, save, rerr = b.settleLocked(uid, in, g, cr, cached, ans, err)
		b.mu.Unlock()
		cr.useRefresh.Unlock()
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
	switch {
	case errors.Is(rerr, credential.ErrExpired):
		b.publish(uid, EventChanged, g) // sessions must drop the revoked token
	case in.RefreshRevokesAccess && save && rerr == nil:
		b.publish(uid, EventChanged, g) // the provider ended the token sessions keep
	default:
		b.notify(uid, EventUpdated, g) // a new expiry, or a failure to show
	}
	return t, rerr
}

// settleLocked records the outcome of a refresh of cr and says whether the
// store must be written. It takes ans over (sealing or wiping its tokens).
// Callers hold b.mu.
func (b *Broker) settleLocked(uid int, in *config.Integration, g string, cr *grant, cached *credential.Token, ans *provider.Answer, err error) (*credential.Token, bool, error) {
	name := in.Name
	now := b.now()
	if ans != nil {
		defer ans.Wipe()
	}
	if b.users[uid][g] != cr {
		// Signed out or signed in again while we refreshed: what we got
		// belongs to a grant that is no longer stored.
		if c := b.users[uid][g]; c != nil && c.access.Valid(now, 0) {
			return c.access, false, nil
		}
		return nil, false, fmt.Errorf("broker: %s: %w", name, credential.ErrNotSignedIn)
	}
	if err != nil {
		var pe *provider.Error
		if errors.As(err, &pe) && pe.InvalidGrant() {
			cr.access, cr.prev, cr.refresh = nil, nil, nil
			cr.failing = false
			stopAhead(cr)
			cr.status, cr.lastErr = credential.StatusExpired, "the provider rejected the refresh token ("+pe.Summary()+"); sign in again"
			b.log.Warn("refresh rejected; sign-in required", "uid", uid, "integration", name, "guid", g, "err", err)
			b.recordLocked(uid, name, g, audit.Event{Event: "refresh", Result: "invalid_grant", Reason: pe.Summary()})
			return nil, true, fmt.Errorf("broker: %s: %w: %v", name, credential.ErrExpired, err)
		}
		cr.status, cr.lastErr = credential.StatusError, "refresh failed: "+err.Error()
		cr.failing, cr.retryAt = true, now.Add(retryDelay(err))
		b.recordLocked(uid, name, g, audit.Event{Event: "refresh", Result: "transient", Reason: err.Error()})
		if cached.Valid(now, 0) {
			b.log.Warn("refresh failed; serving the cached token", "uid", uid, "integration", name, "guid", g, "err", err,
				"expiry", credential.FormatTime(cached.Expiry()))
			return cached, false, nil
		}
		b.log.Error("refresh failed", "uid", uid, "integration", name, "guid", g, "err", err)
		return nil, false, fmt.Errorf("broker: %s: %w: %v", name, credential.ErrUnavailable, err)
	}
	fail := func(err error) (*credential.Token, bool, error) {
		cr.status, cr.lastErr = credential.StatusError, "refresh failed: "+err.Error()
		cr.failing, cr.retryAt = true, now.Add(retryDelay(err))
		b.log.Error("refresh failed", "uid", uid, "integration", name, "guid", g, "err", err)
		if cached.Valid(now, 0) {
			return cached, false, nil
		}
		return nil, false, fmt.Errorf("broker: %s: %w: %w", name, credential.ErrUnavailable, err)
	}
	scopes := cr.scopes
	if ans.Scopes != nil {
		scopes = ans.Scopes
	}
	t, err := credential.NewAccess(ans.Access, ans.Expiry, ans.Obtained, ans.TokenType, scopes, ans.IDToken, idOf(cr.access)) // wipes ans.Access and ans.IDToken
	if err != nil {
		return fail(err)
	}
	rotated := ans.Refresh != nil
	if rotated {
		rt, err := secmem.Seal(ans.Refresh) // wipes ans.Refresh
		if err != nil {
			// Keep the old refresh token: most providers accept it until
			// its successor is used, and the new access token is dropped
			// with it so nothing half-done is stored.
			return fail(err)
		}
		cr.refresh = rt
	}
	b.replaceAccess(cr, t, now, in.RefreshRevokesAccess)
	if ans.Scopes != nil {
		cr.scopes = ans.Scopes
	}
	cr.status, cr.lastErr = credential.StatusSignedIn, ""
	cr.failing, cr.retryAt = false, time.Time{}
	b.armAheadLocked(uid, g, cr)
	b.log.Info("refreshed", "uid", uid, "integration", name, "guid", g,
		"expiry", credential.FormatTime(t.Expiry()), "rotated", rotated)
	b.recordLocked(uid, name, g, audit.Event{Event: "refresh", Result: "ok"})
	return t, true, nil
}
