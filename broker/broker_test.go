package broker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

const uid = 1000

type fixture struct {
	b     *Broker
	p     *localprovider.Provider
	clock *testutil.Clock
	logs  *testutil.SyncBuffer
}

func newFixture(t *testing.T, timeout time.Duration) *fixture {
	t.Helper()
	p := localprovider.New()
	t.Cleanup(p.Close)
	src := `
[broker]
state_dir = ""
request_timeout = "` + timeout.String() + `"
[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "` + p.URL + `/authorize"
token_url = "` + p.TokenURL() + `"
scopes = ["read"]
`
	cfg, err := config.Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{p: p, clock: &testutil.Clock{}, logs: &testutil.SyncBuffer{}}
	f.b, err = New(cfg, Options{
		Now:    f.clock.Now,
		Logger: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// signIn stores a fresh grant from the provider and returns it.
func (f *fixture) signIn(t *testing.T) (access, refresh string) {
	t.Helper()
	a, r, exp := f.p.Grant()
	if err := f.b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Refresh: []byte(r), Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	return a, r
}

func read(t *testing.T, tok *credential.Token) string {
	t.Helper()
	buf := make([]byte, tok.Len()+10)
	n, err := tok.ReadAt(buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotFoundAndNotSignedIn(t *testing.T) {
	f := newFixture(t, time.Second)
	if _, err := f.b.Token(context.Background(), uid, "nope"); !errors.Is(err, credential.ErrNotFound) {
		t.Errorf("Token(nope) = %v; want ErrNotFound", err)
	}
	_, err := f.b.Token(context.Background(), uid, "Test")
	// The library states the fact; advice is the command line's to give.
	if !errors.Is(err, credential.ErrNotSignedIn) || !strings.Contains(err.Error(), "Test") || strings.Contains(err.Error(), "oauthfs login") {
		t.Errorf("Token(Test) = %v; want ErrNotSignedIn naming Test, without advice", err)
	}
	m, _ := f.b.Integration(uid, "Test")
	if m.Status != credential.StatusNotSignedIn || m.Authenticated {
		t.Errorf("meta = %+v; want not_signed_in", m)
	}
}

func TestMargin(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		advance  time.Duration
		refresh  bool
	}{
		{"fresh", time.Hour, 0, false},
		{"outside 5m margin", time.Hour, 54 * time.Minute, false},
		{"inside 5m margin", time.Hour, 56 * time.Minute, true},
		{"short token, outside quarter", 8 * time.Minute, 5*time.Minute + 50*time.Second, false},
		{"short token, inside quarter", 8 * time.Minute, 6*time.Minute + 10*time.Second, true},
		{"expired", time.Hour, 2 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Second)
			f.p.SetLifetime(tc.lifetime)
			first, _ := f.signIn(t)
			f.clock.Advance(tc.advance)
			tok, err := f.b.Token(context.Background(), uid, "Test")
			if err != nil {
				t.Fatal(err)
			}
			got := read(t, tok)
			if refreshed := got != first; refreshed != tc.refresh || f.p.Requests() != map[bool]int{false: 0, true: 1}[tc.refresh] {
				t.Errorf("refreshed = %v with %d requests; want %v", refreshed, f.p.Requests(), tc.refresh)
			}
			if tc.refresh && !f.p.Issued(got) {
				t.Errorf("Token = a token the provider did not issue")
			}
		})
	}
}

func TestConcurrentReadersShareOneRefresh(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.signIn(t)
	f.clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	got := make([]string, 200)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := f.b.Token(context.Background(), uid, "Test")
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = read(t, tok)
		}()
	}
	wg.Wait()
	if n := f.p.Requests(); n != 1 {
		t.Errorf("token endpoint requests = %d; want 1", n)
	}
	for _, g := range got {
		if g != got[0] {
			t.Fatalf("readers got different tokens")
		}
	}
}

func TestRotation(t *testing.T) {
	for _, rotate := range []bool{true, false} {
		t.Run(map[bool]string{true: "rotate", false: "keep"}[rotate], func(t *testing.T) {
			f := newFixture(t, time.Second)
			f.p.SetRotate(rotate)
			_, rt := f.signIn(t)
			for i := 0; i < 3; i++ {
				f.clock.Advance(2 * time.Hour)
				if _, err := f.b.Token(context.Background(), uid, "Test"); err != nil {
					t.Fatalf("refresh %d: %v", i, err)
				}
			}
			if f.p.AcceptsRefresh(rt) == rotate {
				t.Errorf("provider accepts the first refresh token = %v; want %v", !rotate, !rotate)
			}
			if f.p.Refreshes() != 3 {
				t.Errorf("refreshes = %d; want 3", f.p.Refreshes())
			}
			m, _ := f.b.Integration(uid, "Test")
			if m.Status != credential.StatusSignedIn || strings.Join(m.GrantedScopes, " ") != "read write" || m.Expiry == nil {
				t.Errorf("meta = %+v; want signed_in with granted scopes and expiry", m)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mode       localprovider.Mode
		wantErr    error
		wantStatus credential.Status
		wantMsg    string
		timeout    time.Duration
	}{
		{"invalid_grant", localprovider.InvalidGrant, credential.ErrExpired, credential.StatusExpired, "sign in again", 0},
		{"500", localprovider.ServerError, credential.ErrUnavailable, credential.StatusError, "HTTP 500", 0},
		{"html", localprovider.HTML, credential.ErrUnavailable, credential.StatusError, "malformed", 0},
		{"truncated", localprovider.Truncated, credential.ErrUnavailable, credential.StatusError, "malformed", 0},
		{"huge", localprovider.Huge, credential.ErrUnavailable, credential.StatusError, "malformed", 5 * time.Second},
		{"slow", localprovider.Slow, credential.ErrUnavailable, credential.StatusError, "did not answer within 300ms", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.timeout == 0 {
				tc.timeout = 300 * time.Millisecond
			}
			f := newFixture(t, tc.timeout)
			first, rt := f.signIn(t)

			// Inside the margin but not expired: a transient failure
			// serves the cached token; invalid_grant does not.
			f.p.SetMode(tc.mode)
			f.clock.Advance(58 * time.Minute)
			start := time.Now()
			tok, err := f.b.Token(context.Background(), uid, "Test")
			if el := time.Since(start); el > tc.timeout+5*time.Second {
				t.Errorf("Token took %v; want bounded by the request timeout", el)
			}
			if tc.wantErr == credential.ErrExpired {
				if !errors.Is(err, credential.ErrExpired) {
					t.Fatalf("Token = %v; want ErrExpired", err)
				}
			} else if err != nil || read(t, tok) != first {
				t.Fatalf("Token = %v; want the cached token", err)
			}
			m, _ := f.b.Integration(uid, "Test")
			if m.Status != tc.wantStatus || m.Error == nil || !strings.Contains(*m.Error, tc.wantMsg) {
				t.Errorf("meta = %+v; want status %s, error containing %q", m, tc.wantStatus, tc.wantMsg)
			}

			// Expired: the error is the sentinel.
			f.clock.Advance(time.Hour)
			if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Token after expiry = %v; want %v mentioning %q", err, tc.wantErr, tc.wantMsg)
			}

			// A transient failure loses nothing: once the provider is
			// back and the next attempt is due, the stored refresh token
			// still works.
			f.p.SetMode(localprovider.OK)
			f.clock.Advance(retryInterval)
			tok, err = f.b.Token(context.Background(), uid, "Test")
			if tc.wantErr == credential.ErrExpired {
				if !errors.Is(err, credential.ErrExpired) {
					t.Errorf("Token after invalid_grant = %v; want ErrExpired until sign-in", err)
				}
				return
			}
			if err != nil || !f.p.Issued(read(t, tok)) || f.p.AcceptsRefresh(rt) {
				t.Errorf("Token after recovery = %v; want a fresh token from the kept refresh token", err)
			}
			if m, _ := f.b.Integration(uid, "Test"); m.Status != credential.StatusSignedIn || m.Error != nil {
				t.Errorf("meta after recovery = %+v; want signed_in, no error", m)
			}
		})
	}
}

func TestNoRefreshToken(t *testing.T) {
	f := newFixture(t, time.Second)
	a, _, exp := f.p.Grant()
	if err := f.b.Put(uid, "Test", credential.Tokens{Access: []byte(a), Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(58 * time.Minute)
	if tok, err := f.b.Token(context.Background(), uid, "Test"); err != nil || read(t, tok) != a {
		t.Errorf("Token inside margin = %v; want the cached token", err)
	}
	f.clock.Advance(time.Hour)
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrExpired) {
		t.Errorf("Token after expiry = %v; want ErrExpired", err)
	}
	if f.p.Requests() != 0 {
		t.Errorf("requests = %d; want 0", f.p.Requests())
	}
}

func TestNoExpiry(t *testing.T) {
	f := newFixture(t, time.Second)
	a, _, _ := f.p.Grant()
	f.b.Put(uid, "Test", credential.Tokens{Access: []byte(a)})
	f.clock.Advance(100 * 24 * time.Hour)
	tok, err := f.b.Token(context.Background(), uid, "Test")
	if err != nil || read(t, tok) != a || !tok.Expiry().IsZero() {
		t.Errorf("Token = %v; want the never-expiring token", err)
	}
	if m, _ := f.b.Integration(uid, "Test"); m.Expiry != nil {
		t.Errorf("meta expiry = %v; want null", *m.Expiry)
	}
}

func TestCallerCancelDoesNotCancelRefresh(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.signIn(t)
	f.p.SetMode(localprovider.Slow)
	f.p.SetSlowDelay(300 * time.Millisecond)
	f.clock.Advance(2 * time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.b.Token(ctx, uid, "Test"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token = %v; want the caller's deadline", err)
	}
	// The shared refresh finishes for the next reader.
	tok, err := f.b.Token(context.Background(), uid, "Test")
	if err != nil || !f.p.Issued(read(t, tok)) || f.p.Refreshes() != 1 {
		t.Errorf("Token = %v, refreshes %d; want one completed refresh", err, f.p.Refreshes())
	}
}

func TestSignOutDuringRefresh(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.signIn(t)
	f.p.SetMode(localprovider.Slow)
	f.p.SetSlowDelay(200 * time.Millisecond)
	f.clock.Advance(2 * time.Hour)
	errc := make(chan error)
	go func() { _, err := f.b.Token(context.Background(), uid, "Test"); errc <- err }()
	for f.p.Requests() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if had, err := f.b.Forget(uid, "Test"); !had || err != nil {
		t.Fatalf("Forget = %v, %v", had, err)
	}
	if err := <-errc; !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("Token racing a sign-out = %v; want ErrNotSignedIn", err)
	}
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("Token after sign-out = %v; want ErrNotSignedIn", err)
	}
}

func TestUsersAreSeparate(t *testing.T) {
	f := newFixture(t, time.Second)
	f.signIn(t)
	if _, err := f.b.Token(context.Background(), uid+1, "Test"); !errors.Is(err, credential.ErrNotSignedIn) {
		t.Errorf("other user's Token = %v; want ErrNotSignedIn", err)
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	f := newFixture(t, 300*time.Millisecond)
	f.p.SetPrefix("CANARY")
	f.signIn(t)
	for _, m := range []localprovider.Mode{localprovider.OK, localprovider.ServerError, localprovider.Slow, localprovider.InvalidGrant} {
		f.p.SetMode(m)
		f.clock.Advance(2 * time.Hour)
		f.b.Token(context.Background(), uid, "Test")
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "refreshed") || !strings.Contains(logs, "refresh rejected") {
		t.Fatalf("logs lack the expected events:\n%s", logs)
	}
	for _, s := range []string{"CANARY", "test-secret"} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q:\n%s", s, logs)
		}
	}
}

// TestOutageRules checks that nobody waits on a known outage: after a
// failure a valid cached token is served at once while one attempt a
// second retries in the background, an expired one fails at once, and the
// first read once the provider is back gets a fresh token.
func TestOutageRules(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.p.SetLifetime(20 * time.Second) // margin: a quarter, 5 s
	first, _ := f.signIn(t)
	f.p.SetMode(localprovider.ServerError)
	f.clock.Advance(16 * time.Second) // inside the margin, still valid
	for i := range 5 {
		tok, err := f.b.Token(context.Background(), uid, "Test")
		if err != nil || read(t, tok) != first {
			t.Fatalf("Token #%d = %v; want the cached token", i, err)
		}
	}
	if n := f.p.Requests(); n != 1 {
		t.Errorf("requests within a second of a failure = %d; want 1", n)
	}

	// A second later a read starts one attempt in the background and
	// still gets the cached token at once.
	f.clock.Advance(retryInterval)
	if tok, err := f.b.Token(context.Background(), uid, "Test"); err != nil || read(t, tok) != first {
		t.Fatalf("Token with an attempt due = %v; want the cached token", err)
	}
	waitUntil(t, "the background attempt", func() bool { return f.p.Requests() == 2 && !f.attempting() })

	// Expired: the read that starts an attempt waits for it (briefly),
	// the next one fails at once without a request.
	f.clock.Advance(4 * time.Second)
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrUnavailable) || !strings.Contains(err.Error(), "HTTP 500") {
		t.Errorf("Token after expiry = %v; want ErrUnavailable with the provider's error", err)
	}
	before := f.p.Requests()
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrUnavailable) || !strings.Contains(err.Error(), "HTTP 500") {
		t.Errorf("Token right after a failure = %v; want ErrUnavailable with the last error", err)
	}
	if f.p.Requests() != before {
		t.Errorf("a request was made within a second of the last failure")
	}

	// A slow provider: the triggering reader waits at most triggerWait.
	f.p.SetMode(localprovider.Slow)
	f.p.SetSlowDelay(3 * time.Second)
	f.clock.Advance(retryInterval)
	start := time.Now()
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrUnavailable) {
		t.Errorf("Token with a slow provider = %v; want ErrUnavailable", err)
	}
	if el := time.Since(start); el > triggerWait+2*time.Second {
		t.Errorf("Token waited %v for a slow provider; want about %v", el, triggerWait)
	}
	waitUntil(t, "the slow attempt", func() bool { return !f.attempting() })

	// Recovery: the first read after the provider is back and an attempt
	// is due gets a fresh token.
	f.p.SetMode(localprovider.OK)
	f.clock.Advance(retryInterval)
	if tok, err := f.b.Token(context.Background(), uid, "Test"); err != nil || !f.p.Issued(read(t, tok)) {
		t.Errorf("Token after recovery = %v; want a fresh token", err)
	}
}

// TestOutageReaderJoinsTheAttempt: during an outage, a reader that comes
// while an attempt is under way (a read the kernel restarted after a
// signal, say) waits for it like the reader that started it, instead of
// failing at once.
func TestOutageReaderJoinsTheAttempt(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.p.SetLifetime(20 * time.Second)
	f.signIn(t)
	f.p.SetMode(localprovider.ServerError)
	f.clock.Advance(21 * time.Second) // expired
	if _, err := f.b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrUnavailable) {
		t.Fatalf("Token in the outage = %v; want ErrUnavailable", err)
	}
	f.p.SetMode(localprovider.Slow) // back, but slow to answer
	f.p.SetSlowDelay(500 * time.Millisecond)
	f.clock.Advance(retryInterval)
	first := make(chan error, 1)
	go func() {
		_, err := f.b.Token(context.Background(), uid, "Test")
		first <- err
	}()
	waitUntil(t, "the attempt", f.attempting)
	tok, err := f.b.Token(context.Background(), uid, "Test")
	if err != nil || !f.p.Issued(read(t, tok)) {
		t.Errorf("a reader during the attempt = %v; want the attempt's token", err)
	}
	if err := <-first; err != nil {
		t.Errorf("the reader that started the attempt = %v", err)
	}
	if n := f.p.Refreshes(); n != 1 {
		t.Errorf("%d refreshes; want the one attempt", n)
	}
}

// attempting reports whether a refresh is on its way.
func (f *fixture) attempting() bool {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	for _, cr := range f.b.users[uid] {
		return cr.attempting
	}
	return false
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRefreshAhead checks that a token that was read is refreshed in the
// background before its refresh time, so that a reader then finds a fresh
// one without waiting, and that a token nobody read is left alone.
func TestRefreshAhead(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.p.SetLifetime(2 * time.Second) // margin 0.5 s, ahead 0.25 s before that
	f.signIn(t)
	sub, err := f.b.Subscribe(uid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.b.Unsubscribe(sub)
	tok, err := f.b.Token(context.Background(), uid, "Test")
	if err != nil {
		t.Fatal(err)
	}
	refreshAt := f.b.RefreshAt(tok)
	waitUntil(t, "the refresh ahead", func() bool { return f.p.Refreshes() == 1 })
	if now := f.b.Now(); !now.Before(refreshAt) {
		t.Errorf("refreshed ahead at %v; want before the refresh time %v", now, refreshAt)
	}
	select {
	case ev := <-sub.C:
		if ev.Kind != EventUpdated || ev.Change().GUID == "" {
			t.Errorf("event = %+v; want %q for the integration", ev, EventUpdated)
		}
	case <-time.After(5 * time.Second):
		t.Error("no event after the refresh ahead")
	}
	// The token read before is handed out until its own hand-out time,
	// then the new one.
	if cur, until := f.b.Peek(uid, guidOf(t, f)); !cur.Equal(tok) || !until.After(f.b.Now()) {
		t.Errorf("Peek right after the refresh ahead = %v, %v; want the token it replaced, until its hand-out time", cur, until)
	}
	time.Sleep(time.Until(refreshAt.Add(-credential.HandOverSlack(tok))) + 20*time.Millisecond)
	fresh, until := f.b.Peek(uid, guidOf(t, f))
	if fresh == nil || fresh.Equal(tok) || !f.p.Issued(read(t, fresh)) || !until.After(f.b.Now()) {
		t.Fatalf("Peek after the replaced token's hand-out time = %v, %v; want the new token and a time to keep it", fresh, until)
	}

	// Nobody reads the new token: it is not refreshed ahead, and once it
	// is due Peek has nothing to offer.
	time.Sleep(time.Until(f.b.RefreshAt(fresh)) + 100*time.Millisecond)
	if n := f.p.Refreshes(); n != 1 {
		t.Errorf("refreshes of a token nobody read = %d; want none after the first", n-1)
	}
	if tok, until := f.b.Peek(uid, guidOf(t, f)); tok != nil || !until.IsZero() {
		t.Errorf("Peek of a due token = %v, %v; want nothing", tok, until)
	}
}

// guidOf returns the guid of the fixture's one integration.
func guidOf(t *testing.T, f *fixture) string {
	t.Helper()
	in, err := f.b.Integration(uid, "Test")
	if err != nil {
		t.Fatal(err)
	}
	return in.GUID
}

// TestSlowNameLookupHoldsUpNobodyElse: looking up a user's name (LDAP or
// SSSD behind NSS, which can take seconds) happens without the broker's
// lock, so other users' reads go on meanwhile; a failed lookup is not
// tried again at once.
func TestSlowNameLookupHoldsUpNobodyElse(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.signIn(t) // uid's credentials are loaded
	release := make(chan struct{})
	var lookups atomic.Int32
	f.b.mu.Lock()
	f.b.lookupName = func(u int) (string, error) {
		if u == uid+1 {
			lookups.Add(1)
			<-release // a directory that does not answer
			return "", errors.New("directory down")
		}
		return "alice", nil
	}
	f.b.mu.Unlock()
	done := make(chan struct{})
	go func() { f.b.Integrations(uid + 1); close(done) }() // waits on the lookup
	for lookups.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if _, err := f.b.Token(context.Background(), uid, "Test"); err != nil || time.Since(start) > time.Second {
		t.Errorf("another user's read during a slow name lookup = %v after %v; want it at once", err, time.Since(start))
	}
	close(release)
	<-done
	f.b.Integrations(uid + 1)
	if n := lookups.Load(); n != 1 {
		t.Errorf("a failed lookup was tried %d times within its retry time; want once", n)
	}
}
