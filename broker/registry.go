package broker

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/provider"
)

// registry holds the configured integrations, each as the provider client
// that owns its client secret. It is safe for concurrent use.
type registry struct {
	http     *http.Client           // shared by every provider client
	dir      *provider.Directory    // the issuers' metadata, shared by every provider client
	callback string                 // the redirect URI of sign-ins
	observe  func(provider.Request) // nil: token requests are not counted
	now      func() time.Time       // the broker's clock

	mu     sync.RWMutex // guards the maps
	byGUID map[string]*provider.Client
	byName map[string]*provider.Client
}

// find returns the integration with guid (any case) or name id.
func (r *registry) find(id string) (*provider.Client, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if p, ok := r.byGUID[strings.ToLower(id)]; ok {
		return p, nil
	}
	if p, ok := r.byName[id]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("broker: %q: %w", printable.String(id, 64), credential.ErrNotFound)
}

// all returns every integration, in no particular order.
func (r *registry) all() []*provider.Client {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*provider.Client, 0, len(r.byGUID))
	for _, p := range r.byGUID {
		out = append(out, p)
	}
	return out
}

// replace installs the integrations of cfg, reading every client secret
// first: when one cannot be read, nothing changes. It reports how many
// integrations were added and removed.
func (r *registry) replace(cfg *config.Config, timeout time.Duration) (added, removed int, err error) {
	byGUID := map[string]*provider.Client{}
	byName := map[string]*provider.Client{}
	for _, ic := range cfg.Integrations {
		p, err := provider.New(ic, provider.Options{Callback: r.callback, Timeout: timeout, HTTP: r.http, Observe: r.observe, Directory: r.dir, Now: r.now})
		if err != nil {
			return 0, 0, fmt.Errorf("broker: %w", err)
		}
		byGUID[ic.GUID.String()] = p
		byName[ic.Name] = p
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for g := range byGUID {
		if r.byGUID[g] == nil {
			added++
		}
	}
	for g := range r.byGUID {
		if byGUID[g] == nil {
			removed++
		}
	}
	r.byGUID, r.byName = byGUID, byName
	return added, removed, nil
}
