package signin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/provider"
)

// maxDeviceLife bounds how long a device sign-in stays pending, whatever
// the provider says its codes last.
const maxDeviceLife = 30 * time.Minute

// One user may start at most maxDeviceStarts device sign-ins in any
// deviceWindow: each start is a request to the provider with the
// integration's client credentials, which a provider may throttle for
// everyone.
const (
	maxDeviceStarts = 10
	deviceWindow    = time.Minute
)

// DeviceLink is a started device sign-in (RFC 8628): the page to open on
// any device, the code to enter (or check) there, and how to wait.
type DeviceLink struct {
	ID                      string    `json:"login_id"`
	VerificationURI         string    `json:"verification_uri"`
	VerificationURIComplete string    `json:"verification_uri_complete,omitempty"`
	UserCode                string    `json:"user_code"`
	Expires                 time.Time `json:"expires"`
	Name                    string    `json:"name"`
	GUID                    string    `json:"guid"`
}

// StartDevice begins a device sign-in to the integration with guid or
// name id for user uid: the broker asks the provider for a user code and
// then polls its token endpoint until the user approves or denies it
// elsewhere, the code expires, or the sign-in is cancelled. Wait and
// Cancel work on it as on any sign-in. It needs no callback_url: nothing
// comes back to the broker's web server.
func (t *Table) StartDevice(ctx context.Context, uid int, id string) (*DeviceLink, error) {
	in, err := t.k.Provider(id)
	if err != nil {
		return nil, err
	}
	if err := in.Ready(ctx); err != nil {
		return nil, fmt.Errorf("signin: %w: %w", err, credential.ErrUnavailable)
	}
	cfg := in.Config()
	if cfg.DeviceAuthURL == "" {
		return nil, fmt.Errorf("signin: %s has no device_auth_url; set it in its [[integration]] table (the provider presets github, gitlab, google and microsoft have one): %w", cfg.Name, credential.ErrSignIn)
	}
	// The slot is taken before the provider is asked, so that one user's
	// concurrent starts stay within the bounds.
	t.mu.Lock()
	err = t.roomLocked(uid, t.k.Now())
	if err == nil {
		err = t.deviceRateLocked(uid, t.k.Now())
	}
	if err == nil {
		t.pending[uid]++
		t.total++
	}
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	release := func() {
		t.mu.Lock()
		t.releaseLocked(uid)
		t.mu.Unlock()
	}
	d, err := in.StartDevice(ctx)
	switch {
	case errors.Is(err, provider.ErrNoDeviceAuth):
		release()
		return nil, fmt.Errorf("signin: %s has no device_auth_url: %w", cfg.Name, credential.ErrSignIn)
	case err != nil:
		release()
		return nil, fmt.Errorf("signin: %s: %w: %w", cfg.Name, err, credential.ErrSignIn)
	}
	now := t.k.Now()
	expires := now.Add(maxDeviceLife)
	if !d.Expiry.IsZero() && d.Expiry.Before(expires) {
		expires = d.Expiry
	}
	// Not the request's context: the polling outlives the request that
	// started it, until the code expires or the sign-in is cancelled.
	poll, cancel := context.WithTimeout(context.Background(), expires.Sub(now))
	s := &signin{
		id: randomID(16), uid: uid, user: userName(uid), in: in, expires: expires,
		done:   make(chan struct{}),
		cancel: cancel,
		result: Result{Status: Pending, Name: cfg.Name, GUID: cfg.GUID.String()},
	}
	t.mu.Lock()
	t.byLogin[s.id] = s // in the slot taken above
	t.mu.Unlock()
	t.log.Info("device sign-in started", "uid", uid, "integration", cfg.Name, "guid", cfg.GUID.String())
	go t.pollDevice(poll, s, d)
	return &DeviceLink{ID: s.id, VerificationURI: d.VerificationURI, VerificationURIComplete: d.VerificationURIComplete,
		UserCode: d.UserCode, Expires: expires, Name: cfg.Name, GUID: cfg.GUID.String()}, nil
}

// deviceRateLocked refuses a device sign-in beyond maxDeviceStarts in
// deviceWindow for uid, and counts this one. Callers hold t.mu.
func (t *Table) deviceRateLocked(uid int, now time.Time) error {
	recent := t.deviceStarts[uid][:0]
	for _, at := range t.deviceStarts[uid] {
		if now.Sub(at) < deviceWindow {
			recent = append(recent, at)
		}
	}
	if len(recent) >= maxDeviceStarts {
		t.deviceStarts[uid] = recent
		return fmt.Errorf("signin: uid %d started %d device sign-ins in the last %v, the most one user may; wait a minute: %w",
			uid, len(recent), deviceWindow, credential.ErrSignIn)
	}
	t.deviceStarts[uid] = append(recent, now)
	for u, starts := range t.deviceStarts { // bounded by the users who start any
		if u != uid && len(starts) > 0 && now.Sub(starts[len(starts)-1]) >= deviceWindow {
			delete(t.deviceStarts, u)
		}
	}
	return nil
}

// pollDevice waits for the provider's answer to device sign-in s and
// stores its tokens for the user who started it.
func (t *Table) pollDevice(ctx context.Context, s *signin, d *provider.Device) {
	defer s.cancel()
	in, uid, name := s.in, s.uid, s.in.Config().Name
	ans, err := in.PollDevice(ctx, d)
	if err != nil {
		msg := "the provider refused the sign-in: " + err.Error()
		var pe *provider.Error
		switch {
		case errors.As(err, &pe) && pe.Code == "access_denied":
			msg = "the sign-in was denied at the provider"
		case errors.As(err, &pe) && pe.Code == "expired_token", errors.Is(err, context.DeadlineExceeded):
			msg = "the code expired before the sign-in was approved; start again"
		case errors.Is(err, context.Canceled):
			return // cancelled: already ended
		}
		t.finish(s, Failed, msg)
		t.log.Warn("device sign-in failed", "uid", uid, "integration", name, "err", err)
		return
	}
	scopes := ans.Scopes
	if scopes == nil {
		scopes = in.Config().Scopes // RFC 6749 §5.1
	}
	tokens := credential.Tokens{Access: ans.Access, Refresh: ans.Refresh, Expiry: ans.Expiry, Obtained: ans.Obtained, Scopes: scopes, Account: ans.Account,
		IDToken: ans.IDToken, TokenType: ans.TokenType}
	t.mu.Lock()
	ended := s.ended
	t.mu.Unlock()
	if ended { // cancelled as the answer came
		ans.Wipe()
		return
	}
	if err := t.k.Put(uid, in.Config().GUID.String(), tokens); err != nil { // wipes the tokens
		t.finish(s, Failed, "the tokens could not be saved: "+err.Error())
		return
	}
	t.mu.Lock()
	s.result.Account, s.scopes = ans.Account, scopes
	t.finishLocked(s, SignedIn, "")
	t.mu.Unlock()
	t.log.Info("signed in", "uid", uid, "integration", name, "guid", in.Config().GUID.String(), "account", ans.Account, "device", true)
}
