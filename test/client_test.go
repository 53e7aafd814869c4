package test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

func TestClientMountServesFromCache(t *testing.T) {
	s := newClientStack(t)
	a := s.put(t, time.Hour)
	for i := 0; i < 20; i++ {
		if got, err := s.read(); err != nil || got != a {
			t.Fatalf("read %d = %q, %v", i, got, err)
		}
	}
	if s.p.Requests() != 0 {
		t.Errorf("token endpoint requests = %d; want 0", s.p.Requests())
	}
}

// TestClientMountSeesChangesAtOnce: every sign-out, sign-in and reload is
// seen by the very next open, however warm the cache.
func TestClientMountSeesChangesAtOnce(t *testing.T) {
	s := newClientStack(t)
	c := client.NewClient(s.socket, 5*time.Second)
	for i := 0; i < 30; i++ {
		a := s.put(t, time.Hour)
		if got, err := s.read(); err != nil || got != a {
			t.Fatalf("round %d: read after sign-in = %q, %v; want the new token", i, got, err)
		}
		s.read() // the cache is warm now
		if _, err := c.Logout(context.Background(), "Test"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.read(); !errors.Is(err, syscall.ENOKEY) {
			t.Fatalf("round %d: the next open after logout = %v; want ENOKEY", i, err)
		}
	}
}

func TestClientMountSeesReload(t *testing.T) {
	s := newClientStack(t)
	a := s.put(t, time.Hour)
	s.read()
	reload := func(names ...string) {
		t.Helper()
		cfg, err := config.Parse("c.toml", []byte(configText(s.p, 2*time.Second, names...)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.b.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	reload("Test", "Other", "Added")
	if _, err := os.Stat(filepath.Join(s.dir, "by-name", "Added", "meta.json")); err != nil {
		t.Errorf("added integration: %v", err)
	}
	reload("Test", "Added")
	if _, err := os.ReadFile(filepath.Join(s.dir, "by-name", "Other", "access_token")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("removed integration: %v; want ENOENT", err)
	}
	if got, err := s.read(); err != nil || got != a {
		t.Errorf("the remaining integration's token after reloads = %q, %v", got, err)
	}
	reload("Added")
	if _, err := s.read(); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("read of a removed integration = %v; want ENOENT", err)
	}
	reload("Test", "Added")
	if got, err := s.read(); err != nil || got != a {
		t.Errorf("re-added integration: %q, %v; want its credentials back", got, err)
	}
}

func TestClientMountSurvivesBrokerOutage(t *testing.T) {
	s := newClientStack(t)
	a := s.put(t, time.Hour)
	s.read()
	s.srv.Close()
	os.Remove(s.socket)
	waitFor(t, func() bool { return !s.c.Live() })
	start := time.Now()
	if _, err := s.read(); !errors.Is(err, syscall.EIO) {
		t.Errorf("read with the broker gone = %v; want EIO", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("read took %v with the broker gone", el)
	}
	if _, err := os.ReadDir(s.dir); !errors.Is(err, syscall.EIO) {
		t.Errorf("ls with the broker gone = %v; want EIO (the mount stays up)", err)
	}
	s.serve(t)
	waitFor(t, s.c.Live)
	if got, err := s.read(); err != nil || got != a {
		t.Errorf("after the broker came back: %q, %v", got, err)
	}
}

func TestClientMountConcurrentReadersOneRefresh(t *testing.T) {
	s := newClientStack(t)
	s.p.SetSlowDelay(100 * time.Millisecond)
	s.p.SetMode(localprovider.Slow)
	s.put(t, -time.Second) // already expired
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.read(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := s.p.Requests(); n != 1 {
		t.Errorf("token endpoint requests = %d; want 1", n)
	}
}

func TestSocketRefusesNonBrokers(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "other.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go http.Serve(l, http.NotFoundHandler()) // some other HTTP service
	_, err = client.NewClient(sock, time.Second).Integrations(context.Background())
	if err == nil || !errors.Is(err, errUnavailable()) || !containsAll(err.Error(), "does not answer like an oauthfs broker") {
		t.Errorf("Integrations from a non-broker = %v", err)
	}
}

func errUnavailable() error { return credential.ErrUnavailable }

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// TestClientMountKeepsWhatARefreshGaveIt: the mount that asked for a
// token the broker had to refresh keeps the new one; the broker's
// "updated" event about that refresh does not make it ask again.
func TestClientMountKeepsWhatARefreshGaveIt(t *testing.T) {
	s := newClientStack(t)
	a, r, _ := s.p.Grant()
	if err := s.b.Put(os.Getuid(), "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	s.meta(t) // the mount's connection for the broker's other answers is open
	before := s.accepts.Load()
	first, err := s.read() // refreshed on read, through the socket
	if err != nil || first == a || s.p.Refreshes() != 1 {
		t.Fatalf("read of a due token = %q, %v after %d refreshes; want a refreshed token", first, err, s.p.Refreshes())
	}
	time.Sleep(300 * time.Millisecond) // the updated event has arrived
	for range 5 {
		if got, err := s.read(); err != nil || got != first {
			t.Fatalf("read = %q, %v; want the refreshed token", got, err)
		}
	}
	if n := s.accepts.Load() - before; n != 1 {
		t.Errorf("%d connections to the broker for a refresh and six reads of its token; want one (the mount keeps the new token)", n)
	}
}
