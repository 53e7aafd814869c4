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
