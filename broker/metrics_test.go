package broker

import (
	"context"
	"errors"
	"fmt"
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

func (s *brokenStore) Save(ctx context.Context, u store.User, r store.Record) error {
	if s.broken.Load() {
		return errors.New("disk full")
	}
	return s.Store.Save(ctx, u, r)
}

// metricsConfig is a configuration with one integration, Test, on p,
// keeping credentials in stateDir ("": in memory).
func metricsConfig(tb testing.TB, p *localprovider.Provider, stateDir string) *config.Config {
	tb.Helper()
	cfg, err := config.Parse(filepath.Join(tb.TempDir(), "c.toml"), []byte(fmt.Sprintf(
		"[broker]\nstate_dir = %q\n[[integration]]\nname = \"Test\"\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\n",
		stateDir, p.URL, p.URL)))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// BenchmarkTokenMetrics measures a read that reaches the broker and gets
// a fresh token, with metrics off and on: what counting costs.
func BenchmarkTokenMetrics(b *testing.B) {
	p := localprovider.New()
	defer p.Close()
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			cfg := metricsConfig(b, p, "")
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
	cfg := metricsConfig(t, p, t.TempDir())
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
