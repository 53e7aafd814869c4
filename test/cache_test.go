package test

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// These tests check what the kernel keeps (docs/design.md, "What the
// kernel keeps") through real mounts of both kinds: the broker embedded,
// and a session mount of a broker serving its socket.

// bothModes runs f against an embedded mount and a session mount, side by
// side, each with settings added to its [broker] table.
func bothModes(t *testing.T, settings string, f func(t *testing.T, s *stack)) {
	for _, mode := range []string{"embedded", "session"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var s *stack
			if mode == "embedded" {
				s = newStackWith(t, 5*time.Second, settings)
			} else {
				s = newClientStackWith(t, settings)
			}
			f(t, s)
		})
	}
}

// readAt reads f from its start, as a program that keeps a file
// descriptor open reads it again.
func readAt(f *os.File) (string, error) {
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, 0)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return string(buf[:n]), err
}

// TestTokenNeverServedPastRefreshAt: with a 6 s lifetime and a 2 s margin
// (1.5 s: a quarter of the lifetime), a reader loop over 30 s sees each
// new token soon after the old one's refresh_at at the latest, and never
// a token the provider no longer accepts.
func TestTokenNeverServedPastRefreshAt(t *testing.T) {
	bothModes(t, `refresh_margin = "2s"`, func(t *testing.T, s *stack) {
		s.p.SetLifetime(6 * time.Second)
		s.signIn(t)
		const margin = 1500 * time.Millisecond
		// The broker's refresh_at counts from when it got the token, a
		// little after the provider issued it.
		const bound = 250 * time.Millisecond
		var tokens []string
		seen := map[string]bool{}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			start := time.Now()
			got, err := s.read()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !s.p.Accepts(got) {
				t.Fatalf("read a token the provider no longer accepts")
			}
			exp, _ := s.p.Expiry(got)
			if late := start.Sub(exp.Add(-margin)); late > bound {
				t.Fatalf("read a token %v after its refresh_at", late)
			}
			if !seen[got] {
				seen[got] = true
				tokens = append(tokens, got)
			}
		}
		if len(tokens) < 5 {
			t.Errorf("saw %d tokens in 30 s; want one every 4.5 s or so", len(tokens))
		}
	})
}

// TestChangesReachTheNextRead: a sign-in, a sign-out, a revocation found
// on refresh and a reload that removes the integration are each seen by
// the very next read, however warm the kernel's caches, including a read
// through a file descriptor opened before the change.
func TestChangesReachTheNextRead(t *testing.T) {
	bothModes(t, "", func(t *testing.T, s *stack) {
		uid := os.Getuid()
		warm := func(want string) *os.File {
			t.Helper()
			for range 3 {
				if got, err := s.read(); err != nil || got != want {
					t.Fatalf("read = %q, %v; want the signed-in token", got, err)
				}
			}
			f, err := os.Open(s.path("access_token"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			if got, err := readAt(f); err != nil || got != want {
				t.Fatalf("read of a held file = %q, %v", got, err)
			}
			return f
		}
		check := func(what string, held *os.File, heldErr, err error, want string) {
			t.Helper()
			if _, e := readAt(held); !errors.Is(e, heldErr) {
				t.Errorf("%s: the held file reads %v; want %v", what, e, heldErr)
			}
			got, e := s.read()
			if err != nil && !errors.Is(e, err) || err == nil && (e != nil || got != want) {
				t.Errorf("%s: the next open reads %q, %v; want %q, %v", what, got, e, want, err)
			}
		}

		first, _ := s.signIn(t)
		held := warm(first)
		second, _ := s.signIn(t)
		check("sign-in as someone else", held, syscall.ESTALE, nil, second)

		held = warm(second)
		if _, err := s.b.Forget(uid, "Test"); err != nil {
			t.Fatal(err)
		}
		check("sign-out", held, syscall.ENOKEY, syscall.ENOKEY, "")

		// The broker finds the revocation when it refreshes: move its
		// clock (not the kernel's) past the token's hand-out time and ask
		// for the token as 'oauthfs token' would.
		third, _ := s.signIn(t)
		held = warm(third)
		s.p.SetMode(localprovider.InvalidGrant)
		s.clock.Advance(58 * time.Minute)
		if _, err := s.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrExpired) {
			t.Fatalf("refresh against a revoked grant = %v; want ErrExpired", err)
		}
		check("revocation", held, syscall.EKEYEXPIRED, syscall.EKEYEXPIRED, "")

		s.p.SetMode(localprovider.OK)
		fourth, _ := s.signIn(t)
		held = warm(fourth)
		cfg, err := config.Parse("c.toml", []byte(configText(s.p, 2*time.Second, "Other")))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.b.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		check("reload without it", held, syscall.ENOENT, syscall.ENOENT, "")
	})
}

// TestBusyTokenRefreshedAhead: readers of a busy integration never wait
// for the token endpoint (no read takes 50 ms), because its token is
// refreshed before anyone would have to; an integration nobody reads is
// not refreshed at all.
func TestBusyTokenRefreshedAhead(t *testing.T) {
	bothModes(t, "", func(t *testing.T, s *stack) {
		s.p.SetLifetime(4 * time.Second)
		s.signIn(t)
		a, rt, exp := s.p.Grant()
		if err := s.b.Put(os.Getuid(), "Other", credential.Tokens{Access: []byte(a), Refresh: []byte(rt), Expiry: exp}); err != nil {
			t.Fatal(err)
		}
		var reads, slow atomic.Int64
		var worst atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(10 * time.Second)
		for range 2 {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					start := time.Now()
					if _, err := s.read(); err != nil {
						t.Errorf("read: %v", err)
						return
					}
					el := time.Since(start)
					reads.Add(1)
					if el > 50*time.Millisecond {
						slow.Add(1)
					}
					if int64(el) > worst.Load() {
						worst.Store(int64(el))
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		wg.Wait()
		if n := s.p.Refreshes(); n < 2 {
			t.Errorf("refreshes in 2.5 lifetimes = %d; want at least 2", n)
		}
		if slow.Load() != 0 {
			t.Errorf("%d of %d reads took over 50 ms (the slowest %v); want none", slow.Load(), reads.Load(), time.Duration(worst.Load()))
		}
		if !s.p.AcceptsRefresh(rt) {
			t.Errorf("the integration nobody read was refreshed")
		}
	})
}

// TestOutageFailsFastAndRecovers: while the provider fails, a reader of an
// expired token gets EIO at once (the one that starts an attempt waits at
// most a second), attempts come about once a second, and the first read
// 2 s after the provider is back gets a fresh token.
func TestOutageFailsFastAndRecovers(t *testing.T) {
	bothModes(t, "", func(t *testing.T, s *stack) {
		s.put(t, -time.Second) // expired
		s.p.SetMode(localprovider.ServerError)
		before := s.p.Requests()
		start := time.Now()
		for time.Since(start) < 3*time.Second {
			t0 := time.Now()
			_, err := s.read()
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read during the outage = %v; want EIO", err)
			}
			if el := time.Since(t0); el > 1500*time.Millisecond {
				t.Errorf("a read during the outage took %v; want at most about a second", el)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if n := s.p.Requests() - before; n < 2 || n > 5 {
			t.Errorf("%d attempts in 3 s of reading; want about one a second", n)
		}
		s.p.SetMode(localprovider.OK)
		time.Sleep(2 * time.Second)
		got, err := s.read()
		if err != nil || !s.p.Issued(got) {
			t.Errorf("the first read 2 s after the provider came back = %q, %v; want a fresh token\n%s", got, err, s.logs.String())
		}
	})
}
