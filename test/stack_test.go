package test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/testutil"
	"github.com/oauthfs/oauthfs/internal/unixsock"
	"github.com/oauthfs/oauthfs/session"
)

// stack is a broker in this process, with the integrations "Test" and
// "Other" on a test provider, mounted through FUSE: with the broker
// embedded (newStack), or as a session mount over the broker's socket
// (newClientStack).
type stack struct {
	dir   string
	b     *broker.Broker
	p     *localprovider.Provider
	guid  string // of "Test"
	clock *testutil.Clock
	logs  *testutil.SyncBuffer

	// Embedded mounts only: tells the filesystem the clock moved.
	jumps chan chan struct{}

	// Session mounts only: the socket's server and the mount's client,
	// and how many connections the server accepted.
	srv     *session.Server
	socket  string
	c       *client.Cached
	accepts atomic.Int64
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// jumpSource is an embedded broker's session with one addition for tests
// that move the broker's clock: the kernel may keep a token until its
// refresh time by the real clock, so a jump forward must drop what it
// keeps, as a change does.
type jumpSource struct {
	*fusetest.Watched
	jumps chan chan struct{}
}

func (j jumpSource) Watch(ctx context.Context, f func(credential.Change)) {
	go j.Watched.Watch(ctx, f)
	for {
		select {
		case done := <-j.jumps:
			f(credential.Change{Revoke: true})
			close(done)
		case <-ctx.Done():
			return
		}
	}
}

// advance moves the broker's clock forward by d and drops what the
// kernel keeps of the mount.
func (s *stack) advance(t *testing.T, d time.Duration) {
	t.Helper()
	s.clock.Advance(d)
	if s.jumps == nil {
		return
	}
	done := make(chan struct{})
	select {
	case s.jumps <- done:
	case <-time.After(10 * time.Second):
		t.Fatal("the mount does not watch its source")
	}
	<-done
}

// configText is a memory-only configuration with the integrations names
// on p.
func configText(p *localprovider.Provider, timeout time.Duration, names ...string) string {
	return configTextWith(p, timeout, "", names...)
}

// configTextWith is configText with more lines for the [broker] table.
func configTextWith(p *localprovider.Provider, timeout time.Duration, settings string, names ...string) string {
	s := fmt.Sprintf("[broker]\nstate_dir = \"\"\nrequest_timeout = %q\n%s\n", timeout, settings)
	for _, n := range names {
		s += fmt.Sprintf("[[integration]]\nname = %q\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\n", n, p.URL, p.URL)
	}
	return s
}

// newBrokerStack is the part of a stack that both kinds share: the
// provider and the broker, not yet mounted.
func newBrokerStack(t *testing.T, timeout time.Duration, settings string) *stack {
	t.Helper()
	fusetest.Require(t)
	p := localprovider.New()
	t.Cleanup(p.Close)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "config.toml"), []byte(configTextWith(p, timeout, settings, "Test", "Other")))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{p: p, clock: &testutil.Clock{}, logs: &testutil.SyncBuffer{}, guid: cfg.Integrations[0].GUID.String()}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if s.b, err = broker.New(cfg, broker.Options{Now: s.clock.Now, Logger: log}); err != nil {
		t.Fatal(err)
	}
	return s
}

// newStack mounts the broker embedded, with request_timeout timeout.
func newStack(t *testing.T, timeout time.Duration) *stack {
	t.Helper()
	return newStackWith(t, timeout, "")
}

// newStackWith is newStack with more lines for the [broker] table.
func newStackWith(t *testing.T, timeout time.Duration, settings string) *stack {
	t.Helper()
	s := newBrokerStack(t, timeout, settings)
	uid := os.Getuid()
	s.jumps = make(chan chan struct{})
	src := jumpSource{fusetest.NewWatched(broker.Source{B: s.b, UID: uid}), s.jumps}
	root := fusefs.NewRoot(fusefs.Options{Source: src, UID: uint32(uid), GID: uint32(os.Getgid()),
		Timeout: timeout + 2*time.Second, Logger: slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Context: t.Context()})
	s.dir = fusetest.Mount(t, root)
	src.Wait(t)
	return s
}

// newClientStack serves the broker's socket and mounts a caching client
// of it, as a session mount does.
func newClientStack(t *testing.T) *stack {
	t.Helper()
	return newClientStackWith(t, "")
}

// newClientStackWith is newClientStack with more lines for the [broker]
// table.
func newClientStackWith(t *testing.T, settings string) *stack {
	t.Helper()
	s := newBrokerStack(t, 2*time.Second, settings)
	s.socket = filepath.Join(t.TempDir(), "broker.sock")
	s.serve(t)
	s.c = client.NewCached(client.NewClient(s.socket, 5*time.Second), nil)
	uid := os.Getuid()
	s.dir = fusetest.Mount(t, fusefs.NewRoot(fusefs.Options{Source: s.c, UID: uint32(uid), GID: uint32(os.Getgid()), Timeout: 7 * time.Second, Context: t.Context()}))
	waitFor(t, s.c.Live)
	return s
}

// serve (re)starts the socket server.
func (s *stack) serve(t *testing.T) {
	l, err := unixsock.Listen(s.socket, 0o600, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = &session.Server{B: s.b, Owner: -1}
	go s.srv.Serve(countingListener{l, &s.accepts})
	t.Cleanup(func() { s.srv.Close() })
}

func (s *stack) read() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, s.guid, "access_token"))
	return string(b), err
}

func (s *stack) put(t *testing.T, lifetime time.Duration) string {
	t.Helper()
	a, r, _ := s.p.Grant()
	if err := s.b.Put(os.Getuid(), "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: time.Now().Add(lifetime)}); err != nil {
		t.Fatal(err)
	}
	return a
}

func (s *stack) signIn(t *testing.T) (access, refresh string) {
	t.Helper()
	a, r, exp := s.p.Grant()
	if err := s.b.Put(os.Getuid(), "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	return a, r
}

func (s *stack) path(name string) string { return filepath.Join(s.dir, s.guid, name) }

func (s *stack) meta(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(s.path("meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("meta.json = %s: %v", raw, err)
	}
	return m
}
