package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/broker/api"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// persistent builds a broker with a store in dir on provider p.
func persistent(t *testing.T, p *localprovider.Provider, dir string) (*Broker, error) {
	return persistentAt(t, p.URL, dir)
}

// persistentAt builds a broker with a store in dir on the provider at url.
func persistentAt(t *testing.T, url, dir string) (*Broker, error) {
	t.Helper()
	src := fmt.Sprintf(`
[broker]
state_dir = %q
[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "%s/authorize"
token_url = "%s/token"
`, dir, url, url)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "c.toml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return New(cfg, Options{})
}

func mustPersistent(t *testing.T, p *localprovider.Provider, dir string) *Broker {
	t.Helper()
	b, err := persistent(t, p, dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStoreRoundTrip(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	p.SetPrefix("CANARYstore")
	dir := filepath.Join(t.TempDir(), "state")
	b := mustPersistent(t, p, dir)
	a, r, exp := p.Grant()
	if err := b.Put(uid, "Test", Credentials{AccessToken: []byte(a), RefreshToken: []byte(r), Expiry: exp, Scopes: []string{"read", "write"}}); err != nil {
		t.Fatal(err)
	}

	for _, f := range []string{"key", "1000.store"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode())
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("state_dir mode %v; want 0700", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "1000.store"))
	if bytes.Contains(raw, []byte("CANARYstore")) {
		t.Errorf("the store file holds a token in clear")
	}

	b2 := mustPersistent(t, p, dir)
	tok, err := b2.Token(context.Background(), uid, "Test")
	if err != nil || read(t, tok) != a {
		t.Fatalf("after restart Token = %v; want the stored token", err)
	}
	if !tok.Expiry().Equal(exp) && tok.Expiry().Sub(exp).Abs() > time.Millisecond {
		t.Errorf("expiry = %v; want %v", tok.Expiry(), exp)
	}
	m, _ := b2.Integration(uid, "Test")
	if m.Status != api.StatusSignedIn || strings.Join(m.GrantedScopes, ",") != "read,write" {
		t.Errorf("meta after restart = %+v", m)
	}
	if _, err := b2.Token(context.Background(), uid+1, "Test"); !errors.Is(err, api.ErrNotSignedIn) {
		t.Errorf("another user after restart = %v; want ErrNotSignedIn", err)
	}

	// A rotated refresh token is what the next process uses.
	p.SetLifetime(time.Second)
	b2.Put(uid, "Test", Credentials{AccessToken: []byte("x"), RefreshToken: []byte(r), Expiry: time.Now().Add(-time.Second)})
	_, err = b2.Token(context.Background(), uid, "Test")
	if err != nil || p.AcceptsRefresh(r) {
		t.Fatalf("refresh = %v; want a rotation", err)
	}
	b3 := mustPersistent(t, p, dir)
	b3.now = func() time.Time { return time.Now().Add(time.Hour) }
	if _, err := b3.Token(context.Background(), uid, "Test"); err != nil {
		t.Errorf("refresh with the persisted rotated token = %v", err)
	}

	// Sign-out is persisted.
	b3.Forget(uid, "Test")
	if _, err := mustPersistent(t, p, dir).Token(context.Background(), uid, "Test"); !errors.Is(err, api.ErrNotSignedIn) {
		t.Errorf("after sign-out and restart = %v; want ErrNotSignedIn", err)
	}
}

func TestStoreExpiredStateIsPersisted(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	dir := t.TempDir()
	b := mustPersistent(t, p, dir)
	a, r, _ := p.Grant()
	b.Put(uid, "Test", Credentials{AccessToken: []byte(a), RefreshToken: []byte(r), Expiry: time.Now().Add(-time.Minute)})
	p.SetMode(localprovider.InvalidGrant)
	if _, err := b.Token(context.Background(), uid, "Test"); !errors.Is(err, api.ErrExpired) {
		t.Fatalf("Token = %v", err)
	}
	m, _ := mustPersistent(t, p, dir).Integration(uid, "Test")
	if m.Status != api.StatusExpired || m.Error == nil {
		t.Errorf("meta after restart = %+v; want expired with a reason", m)
	}
}

func TestStoreMemoryOnlyWritesNothing(t *testing.T) {
	f := newFixture(t, time.Second) // state_dir = ""
	f.signIn(t)
	if f.b.store != nil {
		t.Errorf("memory-only broker has a store")
	}
}

func TestStoreDamage(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"truncated", func(t *testing.T, dir string) {
			f := filepath.Join(dir, "1000.store")
			b, _ := os.ReadFile(f)
			os.WriteFile(f, b[:len(b)/2], 0o600)
		}, "does not open"},
		{"too short", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, "1000.store"), []byte("OAU"), 0o600) }, "truncated or not an oauthfs store"},
		{"flipped byte", func(t *testing.T, dir string) {
			f := filepath.Join(dir, "1000.store")
			b, _ := os.ReadFile(f)
			b[len(b)-3] ^= 0xff
			os.WriteFile(f, b, 0o600)
		}, "does not open"},
		{"other key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
		}, "sealed with another key"},
		{"other user's file", func(t *testing.T, dir string) {
			os.Rename(filepath.Join(dir, "1000.store"), filepath.Join(dir, "1000.store.bak"))
			b, _ := os.ReadFile(filepath.Join(dir, "1000.store.bak"))
			os.WriteFile(filepath.Join(dir, "1000.store"), b, 0o600)
			os.Rename(filepath.Join(dir, "1000.store"), filepath.Join(dir, "1001.store"))
			os.Rename(filepath.Join(dir, "1000.store.bak"), filepath.Join(dir, "1000.store"))
		}, "does not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := mustPersistent(t, p, dir)
			a, r, exp := p.Grant()
			b.Put(uid, "Test", Credentials{AccessToken: []byte(a), RefreshToken: []byte(r), Expiry: exp})
			b.Put(uid+1, "Test", Credentials{AccessToken: []byte(a), RefreshToken: []byte(r), Expiry: exp})
			tc.damage(t, dir)
			victim := filepath.Join(dir, "1000.store")
			if tc.name == "other user's file" {
				victim = filepath.Join(dir, "1001.store")
			}
			before, _ := os.ReadFile(victim)

			b2 := mustPersistent(t, p, dir)
			vuid := uid
			if tc.name == "other user's file" {
				vuid = uid + 1
			}
			err := b2.Load(vuid)
			if !errors.Is(err, ErrStore) || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v; want ErrStore naming %s and %q", err, victim, tc.want)
			}
			if _, err := b2.Token(context.Background(), vuid, "Test"); !errors.Is(err, ErrStore) || !errors.Is(err, api.ErrUnavailable) {
				t.Errorf("Token = %v; want the store error (EIO)", err)
			}
			if err := b2.Put(vuid, "Test", Credentials{AccessToken: []byte("new")}); !errors.Is(err, ErrStore) {
				t.Errorf("Put = %v; want it refused", err)
			}
			if _, err := b2.Forget(vuid, "Test"); !errors.Is(err, ErrStore) {
				t.Errorf("Forget = %v; want it refused", err)
			}
			m, _ := b2.Integration(vuid, "Test")
			if m.Status != api.StatusError || m.Error == nil || !strings.Contains(*m.Error, victim) {
				t.Errorf("meta = %+v; want status error naming the file", m)
			}
			if after, _ := os.ReadFile(victim); !bytes.Equal(before, after) {
				t.Errorf("the damaged store file was changed")
			}
		})
	}
}

func TestStoreKeyFile(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	t.Run("missing key with stores present", func(t *testing.T) {
		dir := t.TempDir()
		b := mustPersistent(t, p, dir)
		b.Put(uid, "Test", Credentials{AccessToken: []byte("a")})
		os.Remove(filepath.Join(dir, "key"))
		_, err := persistent(t, p, dir)
		if !errors.Is(err, ErrStore) || !strings.Contains(err.Error(), "key_file") || !strings.Contains(err.Error(), "restore the key file") {
			t.Errorf("New = %v; want a refusal naming key_file", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "key")); err == nil {
			t.Errorf("a new key was created over existing stores")
		}
	})
	for _, tc := range []struct{ name, content, want string }{
		{"short", "abcd\n", "want 64 hex digits"},
		{"not hex", strings.Repeat("zz", 32) + "\n", "want 64 hex digits"},
		{"trailing junk", strings.Repeat("ab", 32) + "x", "want 64 hex digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "key"), []byte(tc.content), 0o600)
			_, err := persistent(t, p, dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Join(dir, "key")) {
				t.Errorf("New = %v; want %q naming the key file", err, tc.want)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, "key"), 0o700) // a directory cannot be read as a key
		if _, err := persistent(t, p, dir); err == nil || !strings.Contains(err.Error(), "key_file") {
			t.Errorf("New = %v; want a key_file error", err)
		}
	})
}
