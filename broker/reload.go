package broker

import (
	"fmt"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/config"
)

// Reload replaces the integrations with those of cfg. Integrations that
// remain (same guid) keep every user's credentials; added ones appear;
// removed ones vanish from every session. Credentials of a removed
// integration stay in the store, unreachable, and come back if it is
// configured again with the same guid. When a client secret cannot be
// read, nothing changes and the error says why.
//
// The [broker] table is not reloaded; changes to refresh_margin,
// request_timeout and callback_url are reported in ignored and need a
// restart (host.Host.Reload adds listen, metrics_listen and audit_log).
func (b *Broker) Reload(cfg *config.Config) (ignored []string, err error) {
	if err := b.audit.Reopen(); err != nil { // log rotation
		b.log.Error("could not reopen the audit log; it goes on in the old file", "err", err)
	}
	added, removed, err := b.reg.replace(cfg, b.timeout)
	if err != nil {
		b.audit.Record(audit.Event{Event: "reload", Result: "failed", Reason: err.Error()})
		return nil, fmt.Errorf("%w; the old configuration stays in force", err)
	}
	b.audit.Record(audit.Event{Event: "reload", Result: "ok", Reason: fmt.Sprintf("%d integrations, %d added, %d removed", len(cfg.Integrations), added, removed)})
	if cfg.Settings.RefreshMargin != b.margin {
		ignored = append(ignored, "refresh_margin")
	}
	if cfg.Settings.RequestTimeout != b.timeout {
		ignored = append(ignored, "request_timeout")
	}
	if cfg.Settings.CallbackURL != b.reg.callback {
		ignored = append(ignored, "callback_url")
	}
	b.log.Info("configuration reloaded", "integrations", len(cfg.Integrations), "added", added, "removed", removed)
	b.publish(-1, EventReload, "")
	return ignored, nil
}
