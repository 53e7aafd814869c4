package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/localprovider"
)

func TestRefreshOnRead(t *testing.T) {
	s := newStack(t, 5*time.Second)
	first, rt := s.signIn(t)
	got, err := os.ReadFile(s.path("access_token"))
	if err != nil || string(got) != first {
		t.Fatalf("read = %q, %v; want the stored token", got, err)
	}
	s.advance(t, 2*time.Hour)
	out, err := exec.Command("cat", filepath.Join(s.dir, "by-name", "Test", "access_token")).Output()
	if err != nil || string(out) == first || !s.p.Issued(string(out)) {
		t.Fatalf("cat after expiry = %q, %v; want a new token from the provider", out, err)
	}
	if s.p.AcceptsRefresh(rt) {
		t.Errorf("the rotated-away refresh token is still accepted")
	}
	exp, _ := os.ReadFile(s.path("expiry"))
	if _, err := time.Parse(time.RFC3339, string(exp)); err != nil || !strings.HasSuffix(string(exp), "Z") {
		t.Errorf("expiry = %q; want RFC 3339 UTC", exp)
	}
	if m := s.meta(t); m["status"] != "signed_in" || m["authenticated"] != true || m["expiry"] != string(exp) {
		t.Errorf("meta = %v", m)
	}
}

func TestConcurrentReadersAtExpiry(t *testing.T) {
	s := newStack(t, 10*time.Second)
	s.signIn(t)
	s.p.SetSlowDelay(100 * time.Millisecond) // keep the refresh in flight while readers pile up
	s.p.SetMode(localprovider.Slow)
	s.advance(t, 2*time.Hour)
	const readers = 200
	var wg sync.WaitGroup
	results := make([]string, readers)
	errs := make([]error, readers)
	start := make(chan struct{})
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			b, err := os.ReadFile(s.path("access_token"))
			results[i], errs[i] = string(b), err
		}()
	}
	close(start)
	wg.Wait()
	for i := range results {
		if errs[i] != nil || results[i] != results[0] || !s.p.Issued(results[i]) {
			t.Fatalf("reader %d: %q, %v; want the one refreshed token", i, results[i], errs[i])
		}
	}
	if n := s.p.Requests(); n != 1 {
		t.Errorf("token endpoint requests = %d; want exactly 1", n)
	}
}

func TestErrnoTable(t *testing.T) {
	for _, tc := range []struct {
		name       string
		signIn     bool
		mode       localprovider.Mode
		advance    time.Duration
		want       syscall.Errno // 0: the cached token is served
		wantStatus string
		wantError  string
	}{
		{"never signed in", false, localprovider.OK, 0, syscall.ENOKEY, "not_signed_in", ""},
		{"invalid_grant", true, localprovider.InvalidGrant, 2 * time.Hour, syscall.EKEYEXPIRED, "expired", "sign in again"},
		{"500, expired", true, localprovider.ServerError, 2 * time.Hour, syscall.EIO, "error", "HTTP 500"},
		{"html, expired", true, localprovider.HTML, 2 * time.Hour, syscall.EIO, "error", "malformed"},
		{"truncated, expired", true, localprovider.Truncated, 2 * time.Hour, syscall.EIO, "error", "malformed"},
		{"unreachable, expired", true, -1, 2 * time.Hour, syscall.EIO, "error", "unreachable"},
		{"500, still valid", true, localprovider.ServerError, 58 * time.Minute, 0, "error", "HTTP 500"},
		{"slow, still valid", true, localprovider.Slow, 58 * time.Minute, 0, "error", "did not answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, 500*time.Millisecond)
			var first string
			if tc.signIn {
				first, _ = s.signIn(t)
			}
			if tc.mode == -1 {
				s.p.Close()
			} else {
				s.p.SetMode(tc.mode)
			}
			s.advance(t, tc.advance)
			got, err := os.ReadFile(s.path("access_token"))
			if tc.want == 0 {
				if err != nil || string(got) != first {
					t.Errorf("read = %q, %v; want the cached token", got, err)
				}
			} else if !errors.Is(err, tc.want) {
				t.Errorf("read = %q, %v; want %v", got, err, tc.want)
			}
			m := s.meta(t)
			if m["status"] != tc.wantStatus {
				t.Errorf("meta status = %v; want %s", m["status"], tc.wantStatus)
			}
			if e, _ := m["error"].(string); !strings.Contains(e, tc.wantError) || (tc.wantError == "") != (m["error"] == nil) {
				t.Errorf("meta error = %v; want %q", m["error"], tc.wantError)
			}
		})
	}
}

func TestReadNeverHangsPastTimeout(t *testing.T) {
	s := newStack(t, 500*time.Millisecond)
	s.signIn(t)
	s.p.SetMode(localprovider.Slow) // 30 s
	s.advance(t, 2*time.Hour)
	start := time.Now()
	_, err := os.ReadFile(s.path("access_token"))
	if el := time.Since(start); !errors.Is(err, syscall.EIO) || el > 5*time.Second {
		t.Errorf("read = %v after %v; want EIO within the request timeout plus slack", err, el)
	}
}

func TestTransientFailureLosesNothing(t *testing.T) {
	s := newStack(t, 500*time.Millisecond)
	s.signIn(t)
	s.advance(t, 2*time.Hour)
	for _, m := range []localprovider.Mode{localprovider.ServerError, localprovider.HTML, localprovider.Truncated, localprovider.Huge} {
		s.p.SetMode(m)
		s.advance(t, time.Minute) // past the backoff, so each mode is tried
		if _, err := os.ReadFile(s.path("access_token")); !errors.Is(err, syscall.EIO) {
			t.Errorf("mode %d: read = %v; want EIO", m, err)
		}
	}
	s.p.SetMode(localprovider.OK)
	s.advance(t, time.Minute) // past the backoff
	got, err := os.ReadFile(s.path("access_token"))
	if err != nil || !s.p.Issued(string(got)) {
		t.Errorf("after recovery: %q, %v; want a fresh token", got, err)
	}
	if m := s.meta(t); m["status"] != "signed_in" || m["error"] != nil {
		t.Errorf("meta after recovery = %v", m)
	}
}

func TestSignOutSeenAtNextOpen(t *testing.T) {
	s := newStack(t, time.Second)
	s.signIn(t)
	f, err := os.Open(s.path("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.b.Forget(os.Getuid(), "Test")
	if _, err := os.ReadFile(s.path("access_token")); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("open after sign-out = %v; want ENOKEY", err)
	}
}

func TestLogsHoldNoSecretsThroughTheMount(t *testing.T) {
	s := newStack(t, 300*time.Millisecond)
	s.p.SetPrefix("CANARY7f3a")
	s.signIn(t)
	for _, m := range []localprovider.Mode{localprovider.OK, localprovider.ServerError, localprovider.Truncated, localprovider.Slow, localprovider.InvalidGrant} {
		s.p.SetMode(m)
		s.advance(t, 2*time.Hour)
		os.ReadFile(s.path("access_token"))
		os.ReadFile(s.path("meta.json"))
		os.ReadFile(filepath.Join(s.dir, "integrations.json"))
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "level=DEBUG") || !strings.Contains(logs, "refreshed") {
		t.Fatalf("debug logs missing:\n%s", logs)
	}
	for _, secret := range []string{"CANARY7f3a", "test-secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q", secret)
		}
	}
}
