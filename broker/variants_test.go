package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/pgtest"
	"github.com/oauthfs/oauthfs/provider"
)

// variantCfg is a configuration with one integration, I0, with a
// variant "narrow" (scope read) and one "api" for a resource.
func variantCfg(t *testing.T, p *localprovider.Provider) *config.Config {
	t.Helper()
	dir := t.TempDir()
	src := fmt.Sprintf(`[broker]
state_dir = %q
request_timeout = "5s"
[[integration]]
name = "I0"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "%s/authorize"
token_url = "%s/token"
[[integration.token]]
name = "narrow"
scopes = ["read"]
[[integration.token]]
name = "api"
resource = "https://api.example.test"
`, dir, p.URL, p.URL)
	cfg, err := config.Parse(filepath.Join(dir, "c.toml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestVariantRefusalsAndTheGrant: a provider's refusal of a variant's
// resource fails that read and keeps the grant; invalid_grant on a
// variant's refresh ends the whole grant, as on the main token's.
func TestVariantRefusalsAndTheGrant(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	p.SetResources("https://other.example.test") // not the variant's
	b, err := New(variantCfg(t, p), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, r, exp := p.Grant()
	if err := b.Put(uid, "I0", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	_, err = b.TokenFor(context.Background(), uid, "I0", TokenRequest{Variant: "api"})
	if !errors.Is(err, credential.ErrUnavailable) || !strings.Contains(err.Error(), "invalid_target") {
		t.Errorf("a refused resource = %v; want ErrUnavailable naming invalid_target", err)
	}
	if tok, err := b.Token(context.Background(), uid, "I0"); err != nil || read(t, tok) != a {
		t.Errorf("the main token after the refusal = %v; want it kept", err)
	}
	if tok, err := b.TokenFor(context.Background(), uid, "I0", TokenRequest{Variant: "narrow"}); err != nil || p.ScopeOf(read(t, tok)) != "read" {
		t.Errorf("the narrow variant = %v; want a token with scope read", err)
	}
	if _, err := b.TokenFor(context.Background(), uid, "I0", TokenRequest{Variant: "nope"}); !errors.Is(err, credential.ErrNotFound) {
		t.Errorf("an unknown variant = %v; want ErrNotFound", err)
	}
	p.SetMode(localprovider.InvalidGrant)
	if _, err := b.TokenFor(context.Background(), uid, "I0", TokenRequest{Variant: "narrow", Force: true}); !errors.Is(err, credential.ErrExpired) {
		t.Errorf("invalid_grant on a variant = %v; want ErrExpired", err)
	}
	if _, err := b.Token(context.Background(), uid, "I0"); !errors.Is(err, credential.ErrExpired) {
		t.Errorf("the main token after invalid_grant on a variant = %v; want ErrExpired: the refresh token is the grant's", err)
	}
}

// TestClusterVariantsShareTheRotation: in a cluster with strict
// rotation, a variant obtained on host A commits the rotated refresh
// token, and host B's variant and main refreshes use it: no refresh token
// is ever sent twice.
func TestClusterVariantsShareTheRotation(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	p.SetRotate(true)
	p.SetResources("https://api.example.test")
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	cfg := variantCfg(t, p)
	a, _ := clusterHost(t, dsn, key, cfg, "A")
	b, _ := clusterHost(t, dsn, key, cfg, "B")
	me := os.Getuid()
	at, rt, _ := p.Grant()
	if err := a.Put(me, "I0", credential.Tokens{Access: []byte(at), Refresh: []byte(rt), Expiry: time.Now().Add(3 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		host    *Broker
		name    string
		variant string
	}{{a, "A", "api"}, {b, "B", "narrow"}, {b, "B", "api"}, {a, "A", "narrow"}} {
		tok, err := step.host.TokenFor(context.Background(), me, "I0", TokenRequest{Variant: step.variant})
		if err != nil || !p.Issued(read(t, tok)) {
			t.Fatalf("%s's %s token: %v", step.name, step.variant, err)
		}
	}
	time.Sleep(3 * time.Second) // the main token expires
	for _, h := range []*Broker{b, a} {
		if tok, err := h.Token(context.Background(), me, "I0"); err != nil || !p.Issued(read(t, tok)) || read(t, tok) == at {
			t.Errorf("the main token after the variants' rotations: %v; want a new one", err)
		}
	}
	if p.Reuses() != 0 {
		t.Errorf("%d refresh tokens were sent again; want none", p.Reuses())
	}
	if n := p.Refreshes(); n != 5 {
		t.Errorf("%d refreshes; want 5: two variants on each host, and one main token for both", n)
	}
}

// TestTokensAskedForOutright: an ad-hoc token is kept like a variant's
// (asking again makes no request), at most maxAdhoc of them per grant;
// forced refreshes and new targets are bounded per user (demandBurst,
// then one per demandEvery), while other users and tokens read as due
// are not held back.
func TestTokensAskedForOutright(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	cfg := variantCfg(t, p)
	b, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var skew time.Duration
	b.now = func() time.Time { return time.Now().Add(skew) }
	for _, u := range []int{uid, uid + 1} {
		a, r, exp := p.Grant()
		if err := b.Put(u, "I0", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	narrow := TokenRequest{Target: provider.Target{Scopes: []string{"read"}}}
	first, err := b.TokenFor(ctx, uid, "I0", narrow)
	if err != nil {
		t.Fatal(err)
	}
	n := p.Requests()
	again, err := b.TokenFor(ctx, uid, "I0", TokenRequest{Target: provider.Target{Scopes: []string{"read", "read"}}})
	if err != nil || again != first || p.Requests() != n {
		t.Errorf("the same ad-hoc target again: %v, same token %v, %d requests; want the kept token and no request", err, again == first, p.Requests()-n)
	}

	// A target the provider refused is asked for outright again.
	refused := TokenRequest{Target: provider.Target{Scopes: []string{"read"}}}
	p.SetResources() // nothing: every resource refused
	refused.Target.Resource = "https://api.example.test"
	if _, err := b.TokenFor(ctx, uid, "I0", refused); err == nil {
		t.Fatal("a refused target gave a token")
	}

	// Spend what is left of the burst on forced refreshes.
	spent := 2 // the ad-hoc token and the refused one above
	for ; spent < demandBurst; spent++ {
		if _, err := b.TokenFor(ctx, uid, "I0", TokenRequest{Force: true}); err != nil {
			t.Fatalf("forced refresh %d: %v", spent, err)
		}
	}
	n = p.Requests()
	for _, req := range []TokenRequest{{Force: true}, {Variant: "narrow", Force: true}, {MinValid: 1000 * time.Hour}, {Target: provider.Target{Scopes: []string{"write"}}}, refused} {
		_, err := b.TokenFor(ctx, uid, "I0", req)
		if !errors.Is(err, ErrTooManyRequests) || !errors.Is(err, credential.ErrUnavailable) || !strings.Contains(err.Error(), "try again in") {
			t.Errorf("%+v past the bound = %v; want ErrTooManyRequests saying when to try again", req, err)
		}
	}
	a, r, exp := p.Grant()
	if err := b.Import(uid, "I0", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp}); !errors.Is(err, ErrTooManyRequests) {
		t.Errorf("an import past the bound = %v; want ErrTooManyRequests (an import starts a grant with nothing kept)", err)
	}
	if p.Requests() != n {
		t.Errorf("%d requests past the bound; want none", p.Requests()-n)
	}
	// Not held back: the main token, a variant read for the first time,
	// the kept ad-hoc token, and another user.
	for _, c := range []struct {
		uid int
		req TokenRequest
	}{{uid, TokenRequest{}}, {uid, TokenRequest{Variant: "narrow"}}, {uid, narrow}, {uid + 1, TokenRequest{Force: true}}} {
		if _, err := b.TokenFor(ctx, c.uid, "I0", c.req); err != nil {
			t.Errorf("uid %d, %+v past uid %d's bound = %v; want a token", c.uid, c.req, uid, err)
		}
	}
	skew += demandEvery
	if _, err := b.TokenFor(ctx, uid, "I0", TokenRequest{Force: true}); err != nil {
		t.Errorf("a forced refresh %v later = %v; want one more allowed", demandEvery, err)
	}

	// At most maxAdhoc ad-hoc tokens are kept per grant.
	var scopes []string
	for i := range maxAdhoc + 3 {
		scopes = append(scopes, fmt.Sprint("api.s", i))
	}
	a, r, exp = p.Grant()
	if err := b.Put(uid+2, "I0", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp, Scopes: scopes}); err != nil {
		t.Fatal(err)
	}
	for i := range maxAdhoc + 3 {
		if _, err := b.TokenFor(ctx, uid+2, "I0", TokenRequest{Target: provider.Target{Scopes: []string{fmt.Sprint("api.s", i)}}}); err != nil {
			t.Fatalf("ad-hoc target %d: %v", i, err)
		}
	}
	b.mu.Lock()
	kept := 0
	for name := range b.users[uid+2][cfg.Integrations[0].GUID.String()].variants {
		if strings.HasPrefix(name, "\x00") {
			kept++
		}
	}
	b.mu.Unlock()
	if kept != maxAdhoc {
		t.Errorf("%d ad-hoc tokens kept after %d targets; want %d", kept, maxAdhoc+3, maxAdhoc)
	}
}
