package broker

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/store"
)

// quirkBroker is a broker on the real clock with one integration, Test,
// on a local provider that behaves with q; extra lines go into the
// integration's table, and st (may be nil) keeps credentials.
func quirkBroker(t *testing.T, p *localprovider.Provider, q localprovider.Quirks, extra string, st store.Store) *Broker {
	t.Helper()
	p.SetQuirks(q)
	src := `
[broker]
state_dir = ""
request_timeout = "3s"
[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "` + p.URL + `/authorize"
token_url = "` + p.TokenURL() + `"
` + extra
	cfg, err := config.Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// signInWith stores a fresh grant of p for Test, as a sign-in does.
func signInWith(t *testing.T, b *Broker, p *localprovider.Provider) string {
	t.Helper()
	a, r, exp := p.Grant()
	if err := b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestProviderQuirks proves the broker against the behaviours of real
// providers that its presets and settings account for (docs/design.md,
// "Providers' quirks"), each a switch of the local provider.
func TestProviderQuirks(t *testing.T) {
	ctx := context.Background()

	t.Run("Microsoft Entra: rotation leaves the old refresh token valid", func(t *testing.T) {
		p := localprovider.New()
		defer p.Close()
		p.SetLifetime(2 * time.Second)
		b := quirkBroker(t, p, localprovider.Quirks{KeepOldRefresh: true}, "", nil)
		signInWith(t, b, p)
		for range 3 {
			time.Sleep(1800 * time.Millisecond) // past the hand-out time
			tok, err := b.Token(ctx, uid, "Test")
			if err != nil || !p.Accepts(read(t, tok)) {
				t.Fatalf("Token after a rotation = %v; want a token the provider accepts", err)
			}
		}
		if n := p.Reuses(); n != 0 {
			t.Errorf("the broker sent a rotated refresh token again %d times; want never", n)
		}
	})

	t.Run("GitHub App: a refresh ends the old access token at once", func(t *testing.T) {
		p := localprovider.New()
		defer p.Close()
		p.SetLifetime(4 * time.Second) // refreshed ahead at 2 s, 0.5 s before its hand-out time
		b := quirkBroker(t, p, localprovider.Quirks{RefreshEndsAccess: true}, "refresh_revokes_access = true\n", nil)
		first := signInWith(t, b, p)
		if _, err := b.Token(ctx, uid, "Test"); err != nil { // read: refreshed ahead
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); p.Refreshes() == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no refresh ahead")
			}
		}
		tok, _ := b.Peek(uid, guidOfBroker(t, b))
		if tok == nil || read(t, tok) == first || !p.Accepts(read(t, tok)) {
			t.Errorf("Peek right after the refresh ahead = the old token or none; want the new one (the provider ended the old)")
		}
	})

	t.Run("no expires_in, no refresh token: a token that never expires", func(t *testing.T) {
		p := localprovider.New()
		defer p.Close()
		b := quirkBroker(t, p, localprovider.Quirks{NoExpiresIn: true}, "", nil)
		a, r, _ := p.Grant()
		if err := b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r)}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if tok, err := b.Token(ctx, uid, "Test"); err != nil || read(t, tok) != a {
				t.Fatalf("Token = %v; want the stored token", err)
			}
		}
		m, _ := b.Integration(uid, "Test")
		if m.Expiry != nil || m.Status != credential.StatusSignedIn || p.Requests() != 0 {
			t.Errorf("meta expiry %v, status %s, %d token requests; want no expiry, signed in, none", m.Expiry, m.Status, p.Requests())
		}
	})

	t.Run("Salesforce: no expires_in, an assumed lifetime", func(t *testing.T) {
		p := localprovider.New()
		defer p.Close()
		b := quirkBroker(t, p, localprovider.Quirks{NoExpiresIn: true}, "assumed_lifetime = \"2s\"\n", nil)
		a, r, _ := p.Grant()
		if err := b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(-time.Second)}); err != nil {
			t.Fatal(err)
		}
		tok, err := b.Token(ctx, uid, "Test") // refreshed: the answer has no expires_in
		if err != nil {
			t.Fatal(err)
		}
		if life := tok.Expiry().Sub(tok.Obtained()); life != 2*time.Second {
			t.Errorf("a refreshed token without expires_in lives %v; want the assumed 2s", life)
		}
		time.Sleep(1800 * time.Millisecond)
		if next, err := b.Token(ctx, uid, "Test"); err != nil || next.Equal(tok) || p.Refreshes() != 2 {
			t.Errorf("after its assumed lifetime: %v, %d refreshes; want it refreshed again", err, p.Refreshes())
		}
	})

	t.Run("Okta, Auth0: reuse of a rotated refresh token revokes the family; never sent twice, across a restart", func(t *testing.T) {
		p := localprovider.New()
		defer p.Close()
		p.SetLifetime(time.Second)
		p.SetRotateGrace(true)
		dir := t.TempDir()
		open := func() store.Store {
			st, err := store.OpenFile(filepath.Join(dir, "state"), filepath.Join(dir, "key"))
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		q := localprovider.Quirks{ReuseRevokesFamily: true}
		b := quirkBroker(t, p, q, "", open())
		signInWith(t, b, p)
		refresh := func(b *Broker) {
			for range 3 {
				time.Sleep(900 * time.Millisecond)
				if tok, err := b.Token(ctx, uid, "Test"); err != nil || !p.Accepts(read(t, tok)) {
					t.Fatalf("Token = %v; want a token the provider accepts", err)
				}
			}
		}
		refresh(b)
		b.Close() // a restart: the next broker loads what was saved
		refresh(quirkBroker(t, p, q, "", open()))
		if n := p.Reuses(); n != 0 {
			t.Errorf("the broker sent a rotated refresh token again %d times; want never", n)
		}
	})

	t.Run("rate limited: Retry-After is honoured", func(t *testing.T) {
		p := localprovider.New()
		defer p.Close()
		b := quirkBroker(t, p, localprovider.Quirks{RateLimit: 1, RetryAfter: 3}, "", nil)
		a, r, _ := p.Grant()
		if err := b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(-time.Second)}); err != nil {
			t.Fatal(err)
		}
		p.Requests() // the first request passes, the second is limited
		if _, err := b.Token(ctx, uid, "Test"); err != nil {
			t.Fatal(err)
		}
		a2, r2, _ := p.Grant()
		b.Put(uid, "Test", credential.Tokens{Access: []byte(a2), Refresh: []byte(r2), Expiry: time.Now().Add(-time.Second)})
		if _, err := b.Token(ctx, uid, "Test"); !errors.Is(err, credential.ErrUnavailable) || !strings.Contains(err.Error(), "429") {
			t.Fatalf("Token when rate limited = %v; want unavailable, naming the 429", err)
		}
		before := p.Requests()
		for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			b.Token(ctx, uid, "Test")
		}
		if n := p.Requests() - before; n != 0 {
			t.Errorf("%d token requests within the provider's Retry-After of 3 s; want none", n)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := b.Token(ctx, uid, "Test"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no token after the Retry-After passed")
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("DPoP: a clear error", func(t *testing.T) {
		p := localprovider.New()
		defer p.Close()
		b := quirkBroker(t, p, localprovider.Quirks{DPoP: true}, "", nil)
		a, r, _ := p.Grant()
		b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(-time.Second)})
		_, err := b.Token(ctx, uid, "Test")
		m, _ := b.Integration(uid, "Test")
		if err == nil || !strings.Contains(err.Error(), "requires DPoP") || m.Error == nil || !strings.Contains(*m.Error, "DPoP (RFC 9449") {
			t.Errorf("Token = %v, meta error %v; want both to name DPoP as unsupported", err, m.Error)
		}
	})
}

// guidOfBroker returns the guid of Test.
func guidOfBroker(t *testing.T, b *Broker) string {
	t.Helper()
	in, err := b.Integration(uid, "Test")
	if err != nil {
		t.Fatal(err)
	}
	return in.GUID
}
