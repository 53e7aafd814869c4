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

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/store"
)

// persistent builds a broker with a store in dir on provider p.
func persistent(t *testing.T, p *localprovider.Provider, dir string) (*Broker, error) {
	return persistentAt(t, p.URL, dir)
}

// persistentAt builds a broker with a store in dir on the provider at url.
func persistentAt(t *testing.T, url, dir string) (*Broker, error) {
	t.Helper()
	return persistentCfg(t, url, dir, t.TempDir())
}

// persistentCfg is persistentAt with the config file written in cfgDir.
func persistentCfg(t *testing.T, url, dir, cfgDir string) (*Broker, error) {
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
	cfg, err := config.Parse(filepath.Join(cfgDir, "c.toml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenFile(*cfg.Settings.StateDir, cfg.Settings.KeyFile)
	if err != nil {
		return nil, err
	}
	return New(cfg, Options{Store: st})
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
	if err := b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp, Scopes: []string{"read", "write"}}); err != nil {
		t.Fatal(err)
	}

	for _, f := range []string{"key", recordFile(t, b, "")} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode())
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "1000")} {
		if st, _ := os.Stat(d); st.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v; want 0700", d, st.Mode().Perm())
		}
	}
	raw, _ := os.ReadFile(recordFile(t, b, dir))
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
	if m.Status != credential.StatusSignedIn || strings.Join(m.GrantedScopes, ",") != "read,write" {
		t.Errorf("meta after restart = %+v", m)
	}
	if _, err := b2.Token(context.Background(), uid+1, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("another user after restart = %v; want ErrNotSignedIn", err)
	}

	// A rotated refresh token is what the next process uses.
	p.SetLifetime(time.Second)
	b2.Put(uid, "Test", credential.Tokens{Access: []byte("x"), Refresh: []byte(r), Expiry: time.Now().Add(-time.Second)})
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
	if _, err := mustPersistent(t, p, dir).Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("after sign-out and restart = %v; want ErrNotSignedIn", err)
	}
}

func TestStoreExpiredStateIsPersisted(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	dir := t.TempDir()
	b := mustPersistent(t, p, dir)
	a, r, _ := p.Grant()
	b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(-time.Minute)})
	p.SetMode(localprovider.InvalidGrant)
	if _, err := b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrExpired) {
		t.Fatalf("Token = %v", err)
	}
	m, _ := mustPersistent(t, p, dir).Integration(uid, "Test")
	if m.Status != credential.StatusExpired || m.Error == nil {
		t.Errorf("meta after restart = %+v; want expired with a reason", m)
	}
}

func TestStoreMemoryOnlyWritesNothing(t *testing.T) {
	f := newFixture(t, time.Second) // state_dir = ""
	f.signIn(t)
	if f.b.store != nil { // New without a store keeps credentials in memory
		t.Errorf("memory-only broker has a store")
	}
}

// recordFile returns the store file of uid's credentials for "Test",
// under dir.
func recordFile(t *testing.T, b *Broker, dir string) string {
	t.Helper()
	m, err := b.Integration(uid, "Test")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "1000", m.GUID+".cred")
}

func TestStoreDamage(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir, file string)
		want   string
	}{
		{"truncated", func(t *testing.T, dir, f string) {
			b, _ := os.ReadFile(f)
			os.WriteFile(f, b[:len(b)/2], 0o600)
		}, "does not open"},
		{"too short", func(t *testing.T, dir, f string) { os.WriteFile(f, []byte("OAU"), 0o600) }, "truncated or not an oauthfs store"},
		{"flipped byte", func(t *testing.T, dir, f string) {
			b, _ := os.ReadFile(f)
			b[len(b)-3] ^= 0xff
			os.WriteFile(f, b, 0o600)
		}, "does not open"},
		{"other key", func(t *testing.T, dir, f string) {
			os.WriteFile(filepath.Join(dir, "key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
		}, "sealed with another key"},
		{"other user's file", func(t *testing.T, dir, f string) {
			b, _ := os.ReadFile(f)
			os.WriteFile(strings.Replace(f, "/1000/", "/1001/", 1), b, 0o600)
		}, "does not open"},
		{"other integration's file", func(t *testing.T, dir, f string) {
			b, _ := os.ReadFile(f)
			os.Remove(f)
			os.WriteFile(filepath.Join(filepath.Dir(f), "11111111-2222-4333-8444-555555555555.cred"), b, 0o600)
		}, "does not open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := mustPersistent(t, p, dir)
			a, r, exp := p.Grant()
			b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp})
			b.Put(uid+1, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp})
			file := recordFile(t, b, dir)
			tc.damage(t, dir, file)
			victim := file
			switch tc.name {
			case "other user's file":
				victim = strings.Replace(file, "/1000/", "/1001/", 1)
			case "other integration's file":
				victim = filepath.Join(filepath.Dir(file), "11111111-2222-4333-8444-555555555555.cred")
			}
			before, _ := os.ReadFile(victim)

			b2 := mustPersistent(t, p, dir)
			vuid := uid
			if tc.name == "other user's file" {
				vuid = uid + 1
			}
			err := b2.Load(vuid)
			if !errors.Is(err, store.ErrUnusable) || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v; want store.ErrUnusable naming %s and %q", err, victim, tc.want)
			}
			if _, err := b2.Token(context.Background(), vuid, "Test"); !errors.Is(err, store.ErrUnusable) || !errors.Is(err, credential.ErrUnavailable) {
				t.Errorf("Token = %v; want the store error (EIO)", err)
			}
			if err := b2.Put(vuid, "Test", credential.Tokens{Access: []byte("new")}); !errors.Is(err, store.ErrUnusable) {
				t.Errorf("Put = %v; want it refused", err)
			}
			if _, err := b2.Forget(vuid, "Test"); !errors.Is(err, store.ErrUnusable) {
				t.Errorf("Forget = %v; want it refused", err)
			}
			m, _ := b2.Integration(vuid, "Test")
			if m.Status != credential.StatusError || m.Error == nil || !strings.Contains(*m.Error, victim) {
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
		b.Put(uid, "Test", credential.Tokens{Access: []byte("a")})
		os.Remove(filepath.Join(dir, "key"))
		_, err := persistent(t, p, dir)
		if !errors.Is(err, store.ErrKeyMissing) || !strings.Contains(err.Error(), "key_file") || !strings.Contains(err.Error(), "is missing") {
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

// TestStoreSaveTouchesOneRecord shows that a save does not depend on the
// other credentials a user holds: it writes its own file only.
func TestStoreSaveTouchesOneRecord(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	dir := t.TempDir()
	b := manyIntegrations(t, p, dir, 50)
	for i := 0; i < 50; i++ {
		if err := b.Put(uid, fmt.Sprintf("I%d", i), credential.Tokens{Access: []byte(fmt.Sprintf("at-%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]time.Time{}
	files, _ := filepath.Glob(filepath.Join(dir, "1000", "*.cred"))
	for _, f := range files {
		st, _ := os.Stat(f)
		before[f] = st.ModTime()
	}
	time.Sleep(20 * time.Millisecond)
	if err := b.Put(uid, "I7", credential.Tokens{Access: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	changed := 0
	for _, f := range files {
		if st, _ := os.Stat(f); !st.ModTime().Equal(before[f]) {
			changed++
		}
	}
	if len(files) != 50 || changed != 1 {
		t.Errorf("%d record files, %d changed by one save; want 50 and 1", len(files), changed)
	}
}

// manyIntegrations builds a persistent broker with n integrations I0..In-1.
func manyIntegrations(t testing.TB, p *localprovider.Provider, dir string, n int) *Broker {
	t.Helper()
	var src strings.Builder
	fmt.Fprintf(&src, "[broker]\nstate_dir = %q\n", dir)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&src, "[[integration]]\nname = \"I%d\"\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\n", i, p.URL, p.URL)
	}
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "c.toml"), []byte(src.String()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenFile(dir, filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkSave measures a save (an import) and a refresh for a user who
// holds 10, 1,000 or 5,000 credentials: the cost must not grow with them.
func BenchmarkSave(b *testing.B) {
	p := localprovider.New()
	defer p.Close()
	p.SetRotate(true)
	for _, n := range []int{10, 1000, 5000} {
		dir := b.TempDir()
		br := manyIntegrations(b, p, dir, n)
		for i := 0; i < n; i++ {
			if err := br.Put(uid, fmt.Sprintf("I%d", i), credential.Tokens{Access: []byte("at"), Expiry: time.Now().Add(time.Hour)}); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("put/creds=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := br.Put(uid, "I1", credential.Tokens{Access: []byte("at-new")}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("refresh/creds=%d", n), func(b *testing.B) {
			putDue(b, br, p, uid, "I2")
			i2, _ := br.Provider("I2")
			g := i2.Config().GUID.String()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				br.mu.Lock()
				br.users[uid][g].access = nil // due now
				br.mu.Unlock()
				if _, err := br.Token(context.Background(), uid, "I2"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
