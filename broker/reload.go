package broker

import (
	"fmt"

	"github.com/oauthfs/oauthfs/internal/secmem"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
)

// Reload replaces the integrations with those of cfg. Integrations that
// remain (same guid) keep every user's credentials; added ones appear;
// removed ones vanish from every session. Credentials of a removed
// integration stay in the store, unreachable, and come back if it is
// configured again with the same guid. When a client secret cannot be
// read, nothing changes and the error says why.
//
// The [broker] table (socket, listen, state_dir, margins and timeouts) is
// not reloaded; changes there are reported in Ignored and need a restart.
func (b *Broker) Reload(cfg *config.Config) (ignored []string, err error) {
	ints := map[string]*integration{}
	byName := map[string]*integration{}
	for _, ic := range cfg.Integrations {
		s, err := ic.Secret()
		if err != nil {
			return nil, fmt.Errorf("broker: reload refused, the old configuration stays in force: %w", err)
		}
		sec, err := secmem.Seal(s)
		if err != nil {
			return nil, fmt.Errorf("broker: reload refused, the old configuration stays in force: %w", err)
		}
		in := &integration{cfg: ic, secret: sec}
		ints[ic.GUID.String()] = in
		byName[ic.Name] = in
	}
	b.mu.Lock()
	added, removed := 0, 0
	for g := range ints {
		if b.integrations[g] == nil {
			added++
		}
	}
	for g := range b.integrations {
		if ints[g] == nil {
			removed++
		}
	}
	b.integrations, b.byName = ints, byName
	b.mu.Unlock()
	if cfg.Settings.RefreshMargin != b.margin {
		ignored = append(ignored, "refresh_margin")
	}
	if cfg.Settings.RequestTimeout != b.timeout {
		ignored = append(ignored, "request_timeout")
	}
	if cfg.Settings.CallbackURL != b.callbackURL() {
		ignored = append(ignored, "callback_url")
	}
	b.log.Info("configuration reloaded", "integrations", len(ints), "added", added, "removed", removed)
	b.publish(-1, credential.EventReload, "")
	return ignored, nil
}
