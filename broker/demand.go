package broker

import (
	"fmt"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

// Token requests a user asks for outright (a forced refresh, a minimum
// validity the token does not have, a token for a resource or scopes
// not kept yet, an import of credentials) are bounded per user: every user's tokens come from the
// integration's one client, and a provider that rate-limits that client
// would make every user wait for one user's loop. Refreshes a token's
// time makes due are bounded by its lifetime and never count.
const (
	// demandBurst is how many such requests a user may make at once.
	demandBurst = 20
	// demandEvery is how often one more is allowed after the burst.
	demandEvery = 3 * time.Second
)

// ErrTooManyRequests is why a request a user asked for outright was
// refused: the user asked for too many in a short time.
var ErrTooManyRequests = fmt.Errorf("too many token requests asked for outright (forced refreshes, minimum validity, new resources or scopes): at most %d at once, then one every %v", demandBurst, demandEvery)

// bucket counts a user's requests asked for outright: it held tokens
// at time at, and gains one every demandEvery up to demandBurst.
type bucket struct {
	tokens float64
	at     time.Time
}

// spendDemand takes one of user uid's requests asked for outright, or
// says how long until the next is allowed.
func (b *Broker) spendDemand(uid int) error {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.demand == nil {
		b.demand = map[int]*bucket{}
	}
	k := b.demand[uid]
	if k == nil {
		if len(b.demand) >= 4096 {
			// Forget the users whose buckets are full again: they are
			// as if new.
			for u, k := range b.demand {
				if k.level(now) >= demandBurst {
					delete(b.demand, u)
				}
			}
		}
		k = &bucket{tokens: demandBurst, at: now}
		b.demand[uid] = k
	}
	k.tokens, k.at = k.level(now), now
	if k.tokens < 1 {
		wait := time.Duration((1 - k.tokens) * float64(demandEvery)).Round(time.Second)
		return fmt.Errorf("broker: %w; try again in %v: %w", ErrTooManyRequests, max(wait, time.Second), credential.ErrUnavailable)
	}
	k.tokens--
	return nil
}

// level is how many requests k allows at now.
func (k *bucket) level(now time.Time) float64 {
	return min(demandBurst, k.tokens+float64(now.Sub(k.at))/float64(demandEvery))
}
