package broker

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/metrics"
	"github.com/oauthfs/oauthfs/store"
)

// brokenStore is a store whose writes fail while broken is set.
type brokenStore struct {
	store.Store
	broken atomic.Bool
}

func (s *brokenStore) Save(u store.User, r store.Record) error {
	if s.broken.Load() {
		return errors.New("disk full")
	}
	return s.Store.Save(u, r)
}

// BenchmarkTokenMetrics measures a read that reaches the broker and gets
// a fresh token, with metrics off and on: what counting costs.
func BenchmarkTokenMetrics(b *testing.B) {
	p := localprovider.New()
	defer p.Close()
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			cfg, err := config.Parse(filepath.Join(b.TempDir(), "c.toml"), []byte(`
[broker]
state_dir = ""
[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "`+p.URL+`/authorize"
token_url = "`+p.URL+`/token"
`))
			if err != nil {
				b.Fatal(err)
			}
			var m *metrics.Metrics
			if on {
				m = metrics.New("bench")
			}
			br, err := New(cfg, Options{Metrics: m})
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			a, r, _ := p.Grant()
			if err := br.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(time.Hour)}); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := br.Token(ctx, uid, "Test"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMetricsStoreWrites checks that store writes and their failures
// are counted, and that users signed in follow sign-ins.
func TestMetricsStoreWrites(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "c.toml"), []byte(`
[broker]
state_dir = "`+t.TempDir()+`"
[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "`+p.URL+`/authorize"
token_url = "`+p.URL+`/token"
`))
	if err != nil {
		t.Fatal(err)
	}
	f, err := store.OpenFile(*cfg.Settings.StateDir, cfg.Settings.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	st := &brokenStore{Store: f}
	m := metrics.New("test")
	b, err := New(cfg, Options{Store: st, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Body)
		return string(body)
	}
	put := func() error {
		a, r, _ := p.Grant()
		return b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(time.Hour)})
	}
	if err := put(); err != nil {
		t.Fatal(err)
	}
	st.broken.Store(true)
	if err := put(); err == nil {
		t.Fatal("Put with a broken store succeeded")
	}
	text := scrape()
	for _, want := range []string{
		`oauthfs_store_writes_total{outcome="ok"} 1`,
		`oauthfs_store_writes_total{outcome="failed"} 1`,
		`oauthfs_users_signed_in{integration="Test"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
}
