package broker

// Token variants, ad-hoc tokens, and tokens that must stay valid for a
// while: every token of a grant besides the one Token hands out,
// obtained with the grant's one refresh token (docs/design.md, "Token
// variants").

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/provider"
	"github.com/oauthfs/oauthfs/store"
)

// TokenRequest says which of a grant's tokens a reader wants, and how
// long it must stay valid. The zero TokenRequest is what Token hands out.
type TokenRequest struct {
	// Variant names one of the integration's token variants
	// ([[integration.token]]); "" is the main token.
	Variant string
	// Target, when not zero, asks for a token for a resource or scopes
	// no variant names (ad hoc): obtained with the refresh token, and
	// kept in this broker's memory like a variant's, never stored.
	Target provider.Target
	// MinValid is how long the token must stay valid from now: a token
	// that would expire sooner is refreshed first, and an answer that
	// does not live that long is an error.
	MinValid time.Duration
	// Force refreshes the token first, whatever its time.
	Force bool
}

// variant is a grant's token of one variant. Its fields are guarded by
// Broker.mu.
type variant struct {
	access  *credential.Token
	failing bool // the last refresh failed for a transient reason
	retryAt time.Time
	lastErr string
}

// errNoRefreshToken is why a grant without a refresh token has no
// variants.
var errNoRefreshToken = errors.New("the sign-in gave no refresh token, and other tokens are obtained with it")

// forever is the lead of a refresh that must happen whatever the token's
// time: no token is fresh that far ahead.
const forever = time.Duration(math.MaxInt64 / 2)

// TokenFor returns the token of user uid's grant for the integration
// with guid or name id that req asks for: the main token (as Token, but
// refreshed first when req.Force or req.MinValid ask for it), a token
// variant, or an ad-hoc token for req.Target. Variants and ad-hoc tokens
// are obtained with the grant's refresh token, one use of it at a time,
// and a rotated refresh token is saved once for all of them; one request
// per variant answers every concurrent reader. Variant and ad-hoc tokens
// are kept in memory, by this broker, until their hand-out time (at most
// maxAdhoc ad-hoc ones per grant). A request the user asks for outright
// (forced, for a minimum validity, for a target not kept) counts against
// the user's bound (spendDemand).
func (b *Broker) TokenFor(ctx context.Context, uid int, id string, req TokenRequest) (*credential.Token, error) {
	if req.MinValid < 0 {
		return nil, fmt.Errorf("broker: a minimum validity of %v: want 0 or more: %w", req.MinValid, credential.ErrBadRequest)
	}
	if req.Variant == "" && req.Target.IsZero() {
		return b.mainToken(ctx, uid, id, req)
	}
	p, err := b.reg.find(id)
	if err != nil {
		return nil, err
	}
	in := p.Config()
	target, adhoc := req.Target, true
	if req.Variant != "" {
		if !req.Target.IsZero() {
			return nil, fmt.Errorf("broker: %s: ask for a token variant or for a resource and scopes, not both: %w", in.Name, credential.ErrBadRequest)
		}
		v := in.Variant(req.Variant)
		if v == nil {
			return nil, noVariantError(fmt.Sprintf("broker: %s has no token variant %q (%s)", in.Name, req.Variant, variantNames(in.Tokens)))
		}
		target, adhoc = provider.Target{Resource: v.Resource, Scopes: v.Scopes}, false
	} else if target.Resource != "" && !in.AllowsResource(target.Resource) {
		// Refused here, never sent: a provider that rotates refresh
		// tokens may spend the grant's on a request it then refuses.
		return nil, fmt.Errorf("broker: %s may not ask for tokens for %s: the configuration lists the resources it may (resources, and its token variants' resources): %w",
			in.Name, target.Resource, credential.ErrBadRequest)
	}
	name := req.Variant
	if adhoc {
		name = adhocName(target)
	}
	t, err := b.variantToken(ctx, uid, p, name, target, adhoc, req)
	if b.metrics != nil {
		b.metrics.Read(in.Name, err)
	}
	return t, err
}

// noVariantError is why a token variant cannot be had: the integration
// has none of that name. It is a credential.ErrNotFound (ENOENT, exit 3)
// that says so in its own words, not "no such integration".
type noVariantError string

func (e noVariantError) Error() string { return string(e) }
func (e noVariantError) Unwrap() error { return credential.ErrNotFound }

// variantNames lists the names of vs for a message.
func variantNames(vs []config.TokenVariant) string {
	if len(vs) == 0 {
		return "it has none"
	}
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.Name
	}
	return "its variants: " + strings.Join(names, ", ")
}

// mainToken is Token with req's minimum validity and forcing.
func (b *Broker) mainToken(ctx context.Context, uid int, id string, req TokenRequest) (*credential.Token, error) {
	if !req.Force {
		t, err := b.Token(ctx, uid, id)
		if err != nil || req.MinValid == 0 || t.Valid(b.now(), req.MinValid) {
			return t, err
		}
	}
	p, g, cr, err := b.lockGrant(uid, id)
	if err != nil {
		return nil, err
	}
	in := p.Config()
	noRefresh := cr.refresh == nil && b.shared == nil
	b.mu.Unlock()
	if noRefresh {
		return nil, fmt.Errorf("broker: %s: cannot refresh: %w: %w", in.Name, errNoRefreshToken, credential.ErrUnavailable)
	}
	// A flight of its own: one that began before this call may have
	// settled for the token this call must replace.
	ch := b.flights.DoChan(fmt.Sprintf("%d/%s/force", uid, g), func() (any, error) {
		if err := b.spendDemand(uid); err != nil {
			return nil, err
		}
		return b.refresh(uid, p, forever)
	})
	var t *credential.Token
	select {
	case r := <-ch:
		if t, err = b.handedOut(uid, g, r); err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return t, lifetimeShort(in.Name, t, req.MinValid, b.now())
}

// lifetimeShort says why a token just obtained cannot stay valid for
// minValid, or nil when it can.
func lifetimeShort(name string, t *credential.Token, minValid time.Duration, now time.Time) error {
	if minValid == 0 || t.Valid(now, minValid) {
		return nil
	}
	life := t.Expiry().Sub(t.Obtained()).Round(time.Second)
	return fmt.Errorf("broker: %s: the provider's new token lives %v, less than the %v asked for: ask for less: %w",
		name, life, minValid, credential.ErrBadRequest)
}

// maxAdhoc bounds the ad-hoc tokens kept per grant: past it, the kept
// ones that may no longer be handed out go first, then the one that
// expires first.
const maxAdhoc = 16

// adhocName is the name under which a grant keeps its ad-hoc token for
// target: it starts with a NUL, which no variant's name holds.
func adhocName(target provider.Target) string {
	scopes := slices.Clone(target.Scopes)
	slices.Sort(scopes)
	return "\x00" + target.Resource + "\x00" + strings.Join(slices.Compact(scopes), " ")
}

// variantToken returns the token for target of user uid's grant for p,
// kept under name (a variant's, or adhocName's): the kept token while it
// may be handed out, or a new one.
func (b *Broker) variantToken(ctx context.Context, uid int, p *provider.Client, name string, target provider.Target, adhoc bool, req TokenRequest) (*credential.Token, error) {
	in := p.Config()
	_, g, cr, err := b.lockGrant(uid, in.GUID.String())
	if err != nil {
		return nil, err
	}
	if cr.status == credential.StatusExpired {
		msg := cr.lastErr
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: %s: %w: %s", in.Name, credential.ErrExpired, msg)
	}
	if adhoc && len(cr.scopes) > 0 {
		for _, s := range target.Scopes {
			if !slices.Contains(cr.scopes, s) {
				granted := strings.Join(cr.scopes, " ")
				b.mu.Unlock()
				return nil, fmt.Errorf("broker: %s: scope %q was not granted (granted: %s); a token may be narrowed, not widened: %w", in.Name, s, granted, credential.ErrBadRequest)
			}
		}
	}
	now := b.now()
	if v := cr.variants[name]; v != nil && !req.Force {
		if b.fresh(v.access, now, 0) && v.access.Valid(now, req.MinValid) {
			b.mu.Unlock()
			return v.access, nil
		}
		if v.failing && now.Before(v.retryAt) {
			cached, msg := v.access, v.lastErr
			b.mu.Unlock()
			if cached.Valid(now, req.MinValid) {
				return cached, nil
			}
			return nil, fmt.Errorf("broker: %s: token %s: %w: %s (retrying)", in.Name, name, credential.ErrUnavailable, msg)
		}
	}
	b.mu.Unlock()
	key := fmt.Sprintf("%d/%s/variant/%q", uid, g, name)
	if req.Force || req.MinValid > 0 {
		key += "/force"
	}
	ch := b.flights.DoChan(key, func() (any, error) {
		return b.refreshVariant(uid, p, name, target, adhoc, req)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		t := r.Val.(*credential.Token)
		return t, lifetimeShort(in.Name, t, req.MinValid, b.now())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// refreshVariant obtains a token for target with the grant's refresh
// token, holding its useRefresh so that no other refresh of the grant
// uses the refresh token at the same time; in a cluster, under the
// record's lock, on the stored refresh token. A rotated refresh token is
// saved before the new token is returned.
func (b *Broker) refreshVariant(uid int, p *provider.Client, name string, target provider.Target, adhoc bool, req TokenRequest) (*credential.Token, error) {
	in := p.Config()
	g := in.GUID.String()
	label, shown := "token "+name, name // for messages, and logs
	if adhoc {
		label, shown = "a token for "+describeTarget(target), describeTarget(target)
	}
	b.mu.Lock()
	cr := b.users[uid][g]
	b.mu.Unlock()
	if cr == nil {
		return nil, fmt.Errorf("broker: %s: %w", in.Name, credential.ErrNotSignedIn)
	}
	cr.useRefresh.Lock()
	defer cr.useRefresh.Unlock()
	b.mu.Lock()
	if b.users[uid][g] != cr {
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: %s: %w", in.Name, credential.ErrNotSignedIn)
	}
	now := b.now()
	v := cr.variants[name]
	if v != nil && !req.Force && b.fresh(v.access, now, 0) && v.access.Valid(now, req.MinValid) {
		b.mu.Unlock()
		return v.access, nil // a flight that ended just before ours got it
	}
	rt := cr.refresh
	u := b.storeUserLocked(uid)
	b.mu.Unlock()
	if rt == nil && b.shared == nil {
		return nil, fmt.Errorf("broker: %s: %s: %w: %w", in.Name, label, errNoRefreshToken, credential.ErrUnavailable)
	}
	if (adhoc && (v == nil || v.access == nil)) || req.Force || req.MinValid > 0 {
		// Asked for outright (also an ad-hoc target the provider
		// refused before): a variant's refresh when its time came is
		// not.
		if err := b.spendDemand(uid); err != nil {
			return nil, err
		}
	}

	var (
		ans     *provider.Answer
		err     error
		rotated *store.Record // in a cluster: the record committed with the rotated refresh token
	)
	if b.shared != nil {
		ctx, cancel := context.WithTimeout(b.life, 2*b.timeout)
		err = b.shared.Update(ctx, u, g, true, func(cur *store.Record) (*store.Record, error) {
			if cur == nil || cur.Refresh == nil || cur.Status == credential.StatusExpired {
				return nil, fmt.Errorf("broker: %s: %w", in.Name, credential.ErrNotSignedIn)
			}
			a, perr := p.RefreshFor(b.life, cur.Refresh, target)
			if perr != nil {
				return nil, perr
			}
			ans = a
			if a.Refresh == nil {
				return nil, nil
			}
			next := *cur
			if next.Refresh, perr = secmem.Seal(a.Refresh); perr != nil { // wipes a.Refresh
				return nil, perr
			}
			a.Refresh = nil
			rotated = &next
			return &next, nil
		})
		cancel()
	} else {
		ans, err = p.RefreshFor(b.life, rt, target)
	}

	b.mu.Lock()
	if ans != nil {
		defer ans.Wipe()
	}
	if cur := b.users[uid][g]; cur != cr {
		// In a cluster another host's change replaces the grant object
		// (what was obtained here was committed on the record as it
		// stood); here, a sign-in or sign-out did.
		if cur == nil || b.shared == nil {
			b.mu.Unlock()
			return nil, fmt.Errorf("broker: %s: %w", in.Name, credential.ErrNotSignedIn)
		}
		cr = cur
	}
	v = cr.variants[name]
	if v == nil {
		v = &variant{}
		if cr.variants == nil {
			cr.variants = map[string]*variant{}
		}
		if adhoc {
			b.dropAdhocLocked(cr, now)
		}
		cr.variants[name] = v
	}
	if err != nil {
		var pe *provider.Error
		switch {
		case errors.As(err, &pe) && pe.InvalidGrant():
			// The one refresh token is dead: so is the whole grant.
			cr.access, cr.prev, cr.refresh, cr.variants = nil, nil, nil, nil
			cr.failing = false
			stopAhead(cr)
			cr.status, cr.lastErr = credential.StatusExpired, "the provider rejected the refresh token ("+pe.Summary()+"); sign in again"
			b.recordLocked(uid, in.Name, g, audit.Event{Event: "refresh", Result: "invalid_grant", Reason: pe.Summary()})
			b.mu.Unlock()
			b.log.Warn("refresh rejected; sign-in required", "uid", uid, "integration", in.Name, "guid", g, "token", shown, "err", err)
			b.persist(uid, g)
			b.publish(uid, EventChanged, g)
			return nil, fmt.Errorf("broker: %s: %w: %v", in.Name, credential.ErrExpired, err)
		case errors.As(err, &pe) && (pe.Code == "invalid_target" || pe.Code == "invalid_scope"):
			b.mu.Unlock()
			b.log.Warn("the provider refused a token variant", "uid", uid, "integration", in.Name, "guid", g, "token", shown, "err", err)
			return nil, fmt.Errorf("broker: %s: the provider refused %s (%s): check the variant's resource and scopes in the configuration: %w",
				in.Name, label, pe.Summary(), credential.ErrUnavailable)
		case errors.Is(err, credential.ErrNotSignedIn):
			b.mu.Unlock()
			return nil, err
		}
		v.failing, v.retryAt, v.lastErr = true, now.Add(retryDelay(err)), err.Error()
		cached := v.access
		b.mu.Unlock()
		b.log.Error("refresh failed", "uid", uid, "integration", in.Name, "guid", g, "token", shown, "err", err)
		if cached.Valid(b.now(), req.MinValid) {
			return cached, nil
		}
		return nil, fmt.Errorf("broker: %s: %s: %w: %v", in.Name, label, credential.ErrUnavailable, err)
	}
	scopes := ans.Scopes
	if scopes == nil {
		scopes = target.Scopes
	}
	t, terr := credential.NewAccess(ans.Access, ans.Expiry, ans.Obtained, ans.TokenType, scopes, ans.IDToken, nil) // wipes ans.Access and ans.IDToken
	if terr != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: %s: %s: %w: %w", in.Name, label, terr, credential.ErrUnavailable)
	}
	save := false
	switch {
	case rotated != nil:
		cr.refresh = rotated.Refresh // committed already
	case ans.Refresh != nil:
		if cr.refresh, terr = secmem.Seal(ans.Refresh); terr != nil { // wipes ans.Refresh
			b.mu.Unlock()
			return nil, fmt.Errorf("broker: %s: %s: %w: %w", in.Name, label, terr, credential.ErrUnavailable)
		}
		ans.Refresh, save = nil, true
	}
	v.access, v.failing, v.retryAt, v.lastErr = t, false, time.Time{}, ""
	b.recordLocked(uid, in.Name, g, audit.Event{Event: "refresh", Result: "ok", Reason: label})
	b.mu.Unlock()
	b.log.Info("refreshed", "uid", uid, "integration", in.Name, "guid", g, "token", shown, "resource", target.Resource,
		"expiry", credential.FormatTime(t.Expiry()), "rotated", save || rotated != nil)
	if save {
		// The rotated refresh token is on disk before the token is
		// handed out, as for the main token.
		if perr := b.persist(uid, g); perr != nil {
			b.log.Error("could not save credentials; the new tokens are kept in memory", "uid", uid, "integration", in.Name, "guid", g, "err", perr)
		}
	}
	return t, nil
}

// describeTarget names target for a message.
func describeTarget(t provider.Target) string {
	var parts []string
	if t.Resource != "" {
		parts = append(parts, "resource "+t.Resource)
	}
	if len(t.Scopes) > 0 {
		parts = append(parts, "scopes "+strings.Join(t.Scopes, " "))
	}
	return strings.Join(parts, " and ")
}

// PeekVariant returns variant name's kept token of user uid's grant for
// guid while it may be handed out, and until when it may be kept; nil
// when there is none.
func (b *Broker) PeekVariant(uid int, guid, name string) (*credential.Token, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cr := b.users[uid][guid]
	if cr == nil || cr.variants[name] == nil {
		return nil, time.Time{}
	}
	t := cr.variants[name].access
	if !b.fresh(t, b.now(), 0) {
		return nil, time.Time{}
	}
	return t, b.keepUntil(t)
}

// dropAdhocLocked makes room for one more ad-hoc token in cr: the kept
// ones that may no longer be handed out at now go, and when maxAdhoc are
// left, the one that expires first. Callers hold b.mu.
func (b *Broker) dropAdhocLocked(cr *grant, now time.Time) {
	var kept []string
	for name, v := range cr.variants {
		if !strings.HasPrefix(name, "\x00") {
			continue
		}
		if v.access == nil || !b.fresh(v.access, now, 0) {
			delete(cr.variants, name)
			continue
		}
		kept = append(kept, name)
	}
	if len(kept) >= maxAdhoc {
		delete(cr.variants, slices.MinFunc(kept, func(x, y string) int {
			return cr.variants[x].access.Expiry().Compare(cr.variants[y].access.Expiry())
		}))
	}
}
