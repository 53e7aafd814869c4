package broker

// Cluster tests with faults injected at the provider and in the database:
// two brokers on one database, driven through their Go API. Each comment
// says what went wrong before the code it proves.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/pgtest"
	"github.com/oauthfs/oauthfs/store"
)

type tw struct{ t *testing.T }

func (w tw) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func clusterCfg(t *testing.T, p *localprovider.Provider, n int) *config.Config {
	dir := t.TempDir()
	src := fmt.Sprintf("[broker]\nstate_dir = %q\nrequest_timeout = \"5s\"\n", dir)
	for i := 0; i < n; i++ {
		src += fmt.Sprintf("[[integration]]\nname = \"I%d\"\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\n", i, p.URL, p.URL)
	}
	cfg, err := config.Parse(filepath.Join(dir, "c.toml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// clusterHost is one broker of a cluster on dsn, with its own store (origin).
func clusterHost(t *testing.T, dsn, key string, cfg *config.Config, name string) (*Broker, *store.Postgres) {
	lg := slog.New(slog.NewTextHandler(tw{t}, nil)).With("host", name)
	pg, err := store.OpenPostgres(context.Background(), dsn, store.PostgresOptions{KeyFile: key, Timeout: 5 * time.Second, Log: lg})
	if err != nil {
		t.Fatal(err)
	}
	br, err := New(cfg, Options{Store: pg, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close(); pg.Close() })
	return br, pg
}

func storedRefresh(t *testing.T, pg *store.Postgres, uid int, name, guid string) (string, *store.Record) {
	r, err := pg.Get(context.Background(), store.User{UID: uid, Name: name}, guid)
	if err != nil {
		t.Fatal(err)
	}
	if r == nil || r.Refresh == nil {
		return "", r
	}
	b, err := r.Refresh.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Destroy()
	return string(b.Bytes()), r
}

// putDue signs user uid in to integration name of b with a refresh token
// p accepts and an access token due for a refresh.
func putDue(tb testing.TB, b *Broker, p *localprovider.Provider, uid int, name string) {
	tb.Helper()
	_, rt, _ := p.Grant()
	if err := b.Put(uid, name, credential.Tokens{Access: []byte("old"), Refresh: []byte(rt), Expiry: time.Now().Add(-time.Second)}); err != nil {
		tb.Fatal(err)
	}
}

func meName(t *testing.T, b *Broker) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.storeUserLocked(os.Getuid()).Name
}

// TestRotatedTokenSurvivesReconnect: a rotated refresh token is kept when
// the LISTEN connection drops during the refresh. Before: a LISTEN
// connection that drops (pg_terminate_backend, an idle-connection
// killer, a DB failover) while a refresh is at the provider: the
// reconnect's Change{} drops the user's grants, the refresh's answer is
// not committed, and the rotated refresh token is lost for the cluster.
func TestRotatedTokenSurvivesReconnect(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	p.SetRotate(true)
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	cfg := clusterCfg(t, p, 1)
	br, pg := clusterHost(t, dsn, key, cfg, "A")
	me := os.Getuid()
	g := cfg.Integrations[0].GUID.String()
	putDue(t, br, p, me, "I0")
	time.Sleep(500 * time.Millisecond) // LISTEN up
	p.SetSlowDelay(2500 * time.Millisecond)
	p.SetMode(localprovider.Slow)
	done := make(chan error, 1)
	go func() { _, err := br.Token(context.Background(), me, "I0"); done <- err }()
	time.Sleep(300 * time.Millisecond)
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'LISTEN oauthfs_changes' AND datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	t.Logf("terminated %d LISTEN backends", n)
	err = <-done
	t.Logf("reader got err=%v", err)
	p.SetMode(localprovider.OK)
	srt, _ := storedRefresh(t, pg, me, meName(t, br), g)
	t.Logf("provider accepts the stored refresh token: %v (refreshes so far %d)", p.AcceptsRefresh(srt), p.Refreshes())
	_, err = br.Token(context.Background(), me, "I0")
	t.Logf("next read: err=%v", err)
	if !p.AcceptsRefresh(srt) {
		t.Errorf("the database holds a refresh token the provider no longer accepts (rotated one was discarded)")
	}
}

// TestSignOutWinsOverAConcurrentRefresh: a sign-out stays signed out.
// Before: a sign-out on host A while host B refreshed the same grant: B's
// commit re-inserts the row that A deleted, and A (told by B's
// notification) is signed in again.
func TestSignOutWinsOverAConcurrentRefresh(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	p.SetRotate(true)
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	cfg := clusterCfg(t, p, 2)
	a, pgA := clusterHost(t, dsn, key, cfg, "A")
	b, _ := clusterHost(t, dsn, key, cfg, "B")
	me := os.Getuid()
	g := cfg.Integrations[0].GUID.String()
	putDue(t, a, p, me, "I0")
	time.Sleep(500 * time.Millisecond)
	if _, err := b.Integration(me, "I0"); err != nil { // B loads it
		t.Fatal(err)
	}
	// A session of the user on B that is slow to acknowledge (up to
	// AckTimeout = 2 s is allowed): B's Watch goroutine waits on it.
	if _, err := b.Subscribe(me); err != nil {
		t.Fatal(err)
	}
	p.SetSlowDelay(2 * time.Second)
	p.SetMode(localprovider.Slow)
	done := make(chan error, 1)
	go func() { _, err := b.Token(context.Background(), me, "I0"); done <- err }()
	time.Sleep(200 * time.Millisecond)
	if err := a.Put(me, "I1", credential.Tokens{Access: []byte("other"), Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	res, err := a.Logout(context.Background(), me, "I0")
	t.Logf("logout on A: %+v err=%v after %v", res, err, time.Since(t0))
	if _, err := a.Token(context.Background(), me, "I0"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Fatalf("right after logout A reads err=%v", err)
	}
	err = <-done
	t.Logf("B's reader: err=%v", err)
	time.Sleep(500 * time.Millisecond)
	_, rec := storedRefresh(t, pgA, me, meName(t, a), g)
	tok, err := a.Token(context.Background(), me, "I0")
	t.Logf("after B's refresh: row present=%v; A reads token=%v err=%v", rec != nil, tok != nil, err)
	if rec != nil || err == nil {
		t.Errorf("signed out on A, yet the database holds the grant again and A serves a token")
	}
}

// slowLoad delays each Load of a store, for
// TestLoadAfterSignOutIsNotAStaleOne: before, a load that started before
// another host's sign-out was joined (singleflight) by a caller that came
// after the change, and the stale records were installed.
type slowLoad struct {
	*store.Postgres
	mu    sync.Mutex
	delay time.Duration
}

func (s *slowLoad) Load(ctx context.Context, u store.User) ([]store.Record, error) {
	r, err := s.Postgres.Load(ctx, u)
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	time.Sleep(d)
	return r, err
}

func TestLoadAfterSignOutIsNotAStaleOne(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	cfg := clusterCfg(t, p, 1)
	a, _ := clusterHost(t, dsn, key, cfg, "A")
	pgB, err := store.OpenPostgres(context.Background(), dsn, store.PostgresOptions{KeyFile: key, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pgB.Close()
	sl := &slowLoad{Postgres: pgB, delay: time.Second}
	b, err := New(cfg, Options{Store: sl})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	me := os.Getuid()
	if err := a.Put(me, "I0", credential.Tokens{Access: []byte("at"), Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	go b.Token(context.Background(), me, "I0") // load 1: reads the row, then is slow
	time.Sleep(200 * time.Millisecond)
	if _, err := a.Logout(context.Background(), me, "I0"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)               // B heard it (gen++)
	_, err = b.Token(context.Background(), me, "I0") // joins load 1
	t.Logf("B reads after A's logout: err=%v", err)
	time.Sleep(1500 * time.Millisecond)
	_, err = b.Token(context.Background(), me, "I0")
	t.Logf("B reads later: err=%v", err)
	if err == nil {
		t.Errorf("B serves a token signed out on A (stale load installed)")
	}
}

// TestSlowRefreshesLeaveThePoolFree: slow providers hold up no database
// work. Before, refreshes held a pool connection while the provider answered: with
// pgxpool's default of max(4, NumCPU) connections, four slow refreshes
// hold up every other database operation of the host (a sign-out here, a
// first load, the notifications of other hosts).
func TestSlowRefreshesLeaveThePoolFree(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	p.SetRotate(true)
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	cfg := clusterCfg(t, p, 5)
	a, _ := clusterHost(t, dsn, key, cfg, "A")
	me := os.Getuid()
	for i := 0; i < 5; i++ {
		putDue(t, a, p, me, fmt.Sprintf("I%d", i))
	}
	p.SetSlowDelay(4 * time.Second)
	p.SetMode(localprovider.Slow)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); a.Token(context.Background(), me, fmt.Sprintf("I%d", i)) }()
	}
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	_, err := a.Logout(context.Background(), me, "I4")
	t.Logf("logout of an unrelated integration took %v, err=%v", time.Since(t0), err)
	wg.Wait()
	if time.Since(t0) > 0 && err != nil {
		t.Errorf("logout failed while refreshes held the pool: %v", err)
	}
}

// TestSlowWatcherHoldsUpNoOtherUser: one user's slow session mount does not
// delay another user's changes. Before, B's Watch goroutine applied
// changes one at a time and publish waited for
// acks (up to AckTimeout): a slow session of user "nobody" on B delays
// root's sign-out on A reaching root's sessions on B.
func TestSlowWatcherHoldsUpNoOtherUser(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	cfg := clusterCfg(t, p, 1)
	a, _ := clusterHost(t, dsn, key, cfg, "A")
	b, _ := clusterHost(t, dsn, key, cfg, "B")
	me, other := os.Getuid(), 65534
	for _, u := range []int{me, other} {
		if err := a.Put(u, "I0", credential.Tokens{Access: []byte("at"), Expiry: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	b.Token(context.Background(), me, "I0")
	b.Integration(other, "I0")
	if _, err := b.Subscribe(other); err != nil { // never acknowledges
		t.Fatal(err)
	}
	a.Put(other, "I0", credential.Tokens{Access: []byte("at2"), Expiry: time.Now().Add(time.Hour)})
	time.Sleep(100 * time.Millisecond)
	if _, err := a.Logout(context.Background(), me, "I0"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for {
		if _, err := b.Token(context.Background(), me, "I0"); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := time.Since(t0)
	t.Logf("B served root's token for %v after root's logout on A returned", d)
	if d > time.Second {
		t.Errorf("another user's slow session delayed the sign-out past 1 s")
	}
}
