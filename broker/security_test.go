package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// The tests in this file each reproduce a problem a security review found
// and show that it is gone.

// TestTokenEndpointRedirectIsNotFollowed: a token endpoint that answers
// 307 to another host must not get the refresh token (or the secret) sent
// there.
func TestTokenEndpointRedirectIsNotFollowed(t *testing.T) {
	var got atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		http.Error(w, "gotcha", 500)
	}))
	defer evil.Close()
	f := newFixture(t, time.Second)
	f.signIn(t)
	f.p.SetRedirect(evil.URL + "/steal")
	f.p.SetMode(localprovider.Redirect)
	f.clock.Advance(2 * time.Hour)
	_, err := f.b.Token(context.Background(), uid, "Test")
	if !errors.Is(err, credential.ErrUnavailable) || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("Token = %v; want ErrUnavailable naming the redirect", err)
	}
	if n := got.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests; want none", n)
	}
}

// TestAuthStyleIsNeverRetried: the client secret goes where auth_style
// says, once; a refusal is not retried with the secret in the other place.
func TestAuthStyleIsNeverRetried(t *testing.T) {
	for _, style := range []string{"", "basic", "post"} {
		t.Run("auth_style="+style, func(t *testing.T) {
			p := localprovider.New()
			defer p.Close()
			line := ""
			if style != "" {
				line = fmt.Sprintf("auth_style = %q\n", style)
			}
			cfg, err := config.Parse("t.toml", []byte(fmt.Sprintf("[broker]\nstate_dir = \"\"\n[[integration]]\nname = \"Test\"\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\n%s", p.URL, p.URL, line)))
			if err != nil {
				t.Fatal(err)
			}
			b, err := New(cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			_, rt, _ := p.Grant()
			b.Put(uid, "Test", credential.Tokens{Access: []byte("old"), Refresh: []byte(rt), Expiry: time.Now().Add(-time.Minute)})
			want := style
			if want == "" {
				want = "basic"
			}
			p.SetMode(localprovider.Unauthorized)
			if _, err := b.Token(context.Background(), uid, "Test"); err == nil {
				t.Fatal("Token succeeded against a provider that refuses the client")
			}
			if got := strings.Join(p.AuthStyles(), ","); got != want {
				t.Errorf("token requests authenticated as %q; want one, %q, never retried another way", got, want)
			}
		})
	}
}

// TestHugeProviderErrorIsBounded: a 70 KB error code in a 400 answer is
// cut where it enters, so it neither floods the log nor breaks saving.
func TestHugeProviderErrorIsBounded(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	b := mustPersistent(t, p, t.TempDir())
	var logs strings.Builder
	_, rt, _ := p.Grant()
	b.Put(uid, "Test", credential.Tokens{Access: []byte("old"), Refresh: []byte(rt), Expiry: time.Now().Add(-time.Minute)})
	p.SetMode(localprovider.HugeError)
	if _, err := b.Token(context.Background(), uid, "Test"); !errors.Is(err, credential.ErrUnavailable) {
		t.Fatalf("Token = %v; want ErrUnavailable", err)
	} else {
		logs.WriteString(err.Error())
	}
	m, _ := b.Integration(uid, "Test")
	if m.Error == nil || len(*m.Error) > 400 {
		t.Errorf("meta error = %v; want a bounded reason", m.Error)
	} else {
		logs.WriteString(*m.Error)
	}
	if strings.Contains(logs.String(), strings.Repeat("e", 100)) || strings.Contains(logs.String(), strings.Repeat("d", 300)) {
		t.Errorf("the provider's huge error reached the error or meta.json: %d bytes", logs.Len())
	}
	// Saving still works, for this credential and for a new one.
	p.SetMode(localprovider.OK)
	if err := b.Put(uid, "Test", credential.Tokens{Access: []byte("new")}); err != nil {
		t.Errorf("Put after the huge error = %v", err)
	}
	b.mu.Lock()
	b.users[uid][m.GUID].lastErr = strings.Repeat("x", 100<<10) // the encoder clips, never fails
	b.mu.Unlock()
	if err := b.persist(uid, m.GUID); err != nil {
		t.Errorf("persist with a 100 KB error = %v", err)
	}
}

// TestProviderTextIsCleaned: control and bidi characters from a provider
// never reach meta.json.
func TestProviderTextIsCleaned(t *testing.T) {
	f := newFixture(t, time.Second)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error":"temporarily_unavailable\u001b[2J","error_description":"back soon\u001b]0;pwned\u0007\u202e"}`)
	}))
	defer evil.Close()
	f.signIn(t)
	setTokenURL(f.b, evil.URL)
	f.clock.Advance(2 * time.Hour)
	f.b.Token(context.Background(), uid, "Test")
	m, _ := f.b.Integration(uid, "Test")
	if m.Error == nil || strings.ContainsAny(*m.Error, "\x1b\x07\u202e") || !strings.Contains(*m.Error, "back soon") {
		t.Errorf("meta error = %q; want the reason without control characters", *m.Error)
	}
}

// TestExpiresInIsClamped: a huge expires_in must not overflow into the
// past.
func TestExpiresInIsClamped(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		in   int64
		want time.Time
	}{
		{0, time.Time{}},
		{-5, time.Time{}},
		{3600, now.Add(time.Hour)},
		{9300000000, now.Add(credential.MaxLifetime)},
		{1 << 62, now.Add(credential.MaxLifetime)},
	} {
		if got := credential.ExpiryFrom(tc.in, now); !got.Equal(tc.want) {
			t.Errorf("expiryFrom(%d) = %v; want %v", tc.in, got, tc.want)
		}
	}
}

// TestUnackedStreamsCannotStallChanges: sessions that never acknowledge
// hold a change up for AckTimeout at most, all together, and are dropped.
func TestUnackedStreamsCannotStallChanges(t *testing.T) {
	f := newFixture(t, time.Second)
	var subs []*Subscription
	for i := 0; i < 3; i++ {
		s, err := f.b.Subscribe(uid)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		f.signIn(t)
		done <- time.Since(start)
	}()
	select {
	case took := <-done:
		if took > 2*AckTimeout {
			t.Errorf("Put took %v with silent sessions; want at most about %v", took, AckTimeout)
		}
	case <-time.After(10 * AckTimeout):
		t.Fatal("Put hangs on sessions that never acknowledge")
	}
	for i, s := range subs {
		select {
		case <-s.Dead():
		default:
			t.Errorf("silent session %d was not dropped", i)
		}
	}
	// The next change does not wait at all.
	start := time.Now()
	f.signIn(t)
	if took := time.Since(start); took > AckTimeout/2 {
		t.Errorf("a change with no live session took %v", took)
	}
}

// TestStreamSeqIsPerStream: a stream's sequence numbers count its own
// events, so they say nothing about other users' activity.
func TestStreamSeqIsPerStream(t *testing.T) {
	f := newFixture(t, time.Second)
	mine, _ := f.b.Subscribe(uid)
	theirs, _ := f.b.Subscribe(uid + 1)
	go func() {
		for ev := range theirs.C {
			theirs.Ack(ev.Seq)
		}
	}()
	for i := 0; i < 5; i++ {
		f.b.Put(uid+1, "Test", credential.Tokens{Access: []byte("x")})
	}
	first := make(chan uint64, 1)
	go func() {
		ev := <-mine.C
		mine.Ack(ev.Seq)
		first <- ev.Seq
	}()
	f.signIn(t)
	if seq := <-first; seq != 1 {
		t.Errorf("my first event has seq %d; want 1 whatever others did", seq)
	}
}

// TestStreamsPerUserAreCapped: one user cannot open event streams without
// bound.
func TestStreamsPerUserAreCapped(t *testing.T) {
	f := newFixture(t, time.Second)
	var last *Subscription
	for i := 0; i < maxStreamsPerUser; i++ {
		s, err := f.b.Subscribe(uid)
		if err != nil {
			t.Fatalf("Subscribe #%d = %v", i+1, err)
		}
		last = s
	}
	if _, err := f.b.Subscribe(uid); !errors.Is(err, errTooManyStreams) {
		t.Errorf("Subscribe past the cap = %v; want errTooManyStreams", err)
	}
	if _, err := f.b.Subscribe(uid + 1); err != nil {
		t.Errorf("another user's Subscribe = %v", err)
	}
	f.b.Unsubscribe(last)
	if _, err := f.b.Subscribe(uid); err != nil {
		t.Errorf("Subscribe after one ended = %v", err)
	}
}

// setTokenURL points every integration of b at the token endpoint u.
func setTokenURL(b *Broker, u string) {
	for _, p := range b.reg.all() {
		p.Config().TokenURL = u
	}
}
