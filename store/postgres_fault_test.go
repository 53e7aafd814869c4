package store

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/pgtest"
)

// freezer is a TCP proxy that can stop moving bytes while keeping both
// sockets open: what a partitioned network, a frozen VM or a failover
// that moves the database's address looks like to both ends.
type freezer struct {
	l      net.Listener
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l, thaw: make(chan struct{})}
	close(f.thaw)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go f.pipe(c, d)
			go f.pipe(d, c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	return f
}

func (f *freezer) gate() {
	f.mu.Lock()
	ch := f.thaw
	f.mu.Unlock()
	<-ch
}

func (f *freezer) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.gate()
		if n > 0 {
			dst.Write(buf[:n])
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.thaw = make(chan struct{})
	f.mu.Unlock()
}

func viaFreezer(t *testing.T, dsn string) (string, *freezer) {
	u, _ := url.Parse(dsn)
	f := newFreezer(t, u.Host)
	u.Host = f.l.Addr().String()
	return u.String(), f
}

// TestLockFreedWhenABrokerVanishes: a broker cut off from the database
// mid-Update does not keep the record's advisory lock. Before, it kept
// it on the server, and no other broker could refresh the grant until
// the server's TCP keepalive (hours by default) noticed.
func TestLockFreedWhenABrokerVanishes(t *testing.T) {
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	direct := openPG(t, dsn, key)
	pdsn, f := viaFreezer(t, dsn)
	behind := openPG(t, pdsn, key)
	direct.Save(context.Background(), alice, pgRecord(t, guidA, "a1", "r1"))
	in := make(chan struct{})
	go behind.Update(context.Background(), alice, guidA, false, func(cur *Record) (*Record, error) {
		close(in)
		time.Sleep(500 * time.Millisecond) // at the provider
		return cur, nil
	})
	<-in
	f.freeze() // the host vanishes from the network
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		err := direct.Update(context.Background(), alice, guidA, false, func(cur *Record) (*Record, error) { return nil, nil })
		t.Logf("another broker's Update %d: %v after %v", i, err, time.Since(t0).Round(time.Millisecond))
		if err == nil {
			return
		}
	}
	t.Errorf("the lock of a broker cut off from the database is held on")
}

// TestRouteFloodLeavesThePoolFree: a flood of made-up sign-in states does
// not delay the brokers' own work. Before, unauthenticated requests with
// a made-up state each cost a Route query on the same pool as refreshes.
func TestRouteFloodLeavesThePoolFree(t *testing.T) {
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	s := openPG(t, dsn, key)
	measure := func() time.Duration {
		t0 := time.Now()
		for i := 0; i < 20; i++ {
			if err := s.Save(context.Background(), alice, pgRecord(t, guidA, "a", "r")); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(t0) / 20
	}
	base := measure()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s.Route(ctx, "made-up-state")
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	flood := measure()
	cancel()
	wg.Wait()
	t.Logf("a Save: %v alone, %v during a flood of 200 concurrent unauthenticated route lookups", base, flood)
}
