package fusefs

import (
	"context"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

// Source is where the filesystem gets integrations and tokens: a broker,
// seen by the one user who owns the mount (an embedded broker's session,
// or a client of a remote one). Implementations must be safe for
// concurrent use by multiple goroutines and must honour ctx cancellation.
type Source interface {
	// Integrations lists every integration, sorted by name, without any
	// network call to a provider.
	Integrations(ctx context.Context) ([]credential.Integration, error)
	// Integration describes one integration by guid, without any network
	// call to a provider.
	Integration(ctx context.Context, guid string) (credential.Integration, error)
	// Token returns a valid access token, refreshing it first when needed,
	// and until when the kernel may keep it (its refresh time; the zero
	// time: not at all): the integration's main token, or, when variant
	// is not "", its token variant of that name.
	Token(ctx context.Context, guid, variant string) (*credential.Token, time.Time, error)
	// Peek returns the token Token would return now without any network
	// call, and until when it may be kept; nil when there is none or it
	// is due for a refresh.
	Peek(guid, variant string) (*credential.Token, time.Time)
	// Touch says that a read of guid's current main token reached the
	// filesystem (the kernel serves the others from its cache), so that a
	// busy token can be refreshed ahead of time. It must not block.
	Touch(guid string)
	// Watch calls f with every change until ctx ends. The source treats a
	// change as done only once f has returned: f drops what the kernel
	// caches.
	Watch(ctx context.Context, f func(credential.Change))
}
