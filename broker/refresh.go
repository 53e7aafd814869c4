package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/provider"
)

// Backoff after transient refresh failures: retryBase, doubling per
// consecutive failure, at most retryMax.
const (
	retryBase = 5 * time.Second
	retryMax  = time.Minute
)

// Now returns the broker's clock.
func (b *Broker) Now() time.Time { return b.now() }

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
	p, err := b.reg.find(id)
	if err != nil {
		return nil, err
	}
	in := p.Config()
	g := in.GUID.String()
	b.mu.Lock()
	creds, err := b.credsLocked(uid)
	if err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", err, credential.ErrUnavailable)
	}
	cr := creds[g]
	if cr == nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: %s: %w", in.Name, credential.ErrNotSignedIn)
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
		return nil, fmt.Errorf("broker: %s: %w: %s (next try in %v)", in.Name, credential.ErrUnavailable, cr.lastErr, cr.retryAt.Sub(now).Round(time.Second))
	}
	b.mu.Unlock()

	ch := b.flights.DoChan(fmt.Sprintf("%d/%s", uid, g), func() (any, error) {
		return b.refresh(uid, p)
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
func (b *Broker) refresh(uid int, p *provider.Client) (*credential.Token, error) {
	in := p.Config()
	name, g := in.Name, in.GUID.String()
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
		err := fmt.Errorf("broker: %s: %w: %s", name, credential.ErrExpired, cr.lastErr)
		b.mu.Unlock()
		if changed {
			b.persist(uid, g)
		}
		return nil, err
	}
	b.mu.Unlock()

	ans, err := p.Refresh(rt)

	b.mu.Lock()
	t, save, rerr := b.settleLocked(uid, in.Name, g, cr, cached, ans, err)
	b.mu.Unlock()
	if errors.Is(rerr, credential.ErrExpired) {
		b.publish(uid, EventChanged, g) // sessions must drop the revoked token
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
// store must be written. It takes ans over (sealing or wiping its tokens).
// Callers hold b.mu.
func (b *Broker) settleLocked(uid int, name, g string, cr *grant, cached *credential.Token, ans *provider.Answer, err error) (*credential.Token, bool, error) {
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
			cr.access, cr.refresh = nil, nil
			cr.status, cr.lastErr = credential.StatusExpired, "the provider rejected the refresh token ("+pe.Summary()+"); sign in again"
			b.log.Warn("refresh rejected; sign-in required", "uid", uid, "integration", name, "guid", g, "err", err)
			return nil, true, fmt.Errorf("broker: %s: %w: %v", name, credential.ErrExpired, err)
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
	fail := func(err error) (*credential.Token, bool, error) {
		cr.status, cr.lastErr = credential.StatusError, "refresh failed: "+err.Error()
		b.log.Error("refresh failed", "uid", uid, "integration", name, "guid", g, "err", err)
		if cached.Valid(now, 0) {
			return cached, false, nil
		}
		return nil, false, fmt.Errorf("broker: %s: %w: %w", name, credential.ErrUnavailable, err)
	}
	t, err := credential.NewToken(ans.Access, credential.ExpiryFrom(ans.ExpiresIn, now), now) // wipes ans.Access
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
	cr.access = t
	if ans.Scopes != nil {
		cr.scopes = ans.Scopes
	}
	cr.status, cr.lastErr = credential.StatusSignedIn, ""
	cr.failures, cr.retryAt = 0, time.Time{}
	b.log.Info("refreshed", "uid", uid, "integration", name, "guid", g,
		"expiry", credential.FormatTime(t.Expiry()), "rotated", rotated)
	return t, true, nil
}
