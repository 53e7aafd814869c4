package provider

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

func TestAccountName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"sub":"abc","email":"alice@example.com"}`, "alice@example.com"},
		{`{"login":"octocat","id":1}`, "octocat"},
		{`{"sub":"248289761001"}`, "248289761001"},
		{`{"email":"a\u001b[2J@x"}`, "a [2J@x"},
		{`{"id":5}`, ""},
		{`not json`, ""},
	} {
		if got := accountName([]byte(tc.in)); got != tc.want {
			t.Errorf("accountName(%s) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestObserve checks that every refresh is reported to Options.Observe
// with the outcome the broker acts on.
func TestObserve(t *testing.T) {
	p := localprovider.New()
	defer p.Close()
	var (
		mu  sync.Mutex
		got []Request
	)
	c := deviceClient(t, p, "basic", "")
	c.observe = func(r Request) { mu.Lock(); got = append(got, r); mu.Unlock() }
	for _, tc := range []struct {
		name string
		mode localprovider.Mode
		want string
	}{
		{"ok", localprovider.OK, OutcomeOK},
		{"invalid_grant", localprovider.InvalidGrant, OutcomeInvalidGrant},
		{"HTTP 500", localprovider.ServerError, OutcomeTransient},
		{"an HTML page", localprovider.HTML, OutcomeTransient},
		{"invalid_client", localprovider.Unauthorized, OutcomeTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.SetMode(tc.mode)
			_, rt, _ := p.Grant()
			enc, err := secmem.Seal([]byte(rt))
			if err != nil {
				t.Fatal(err)
			}
			a, err := c.Refresh(context.Background(), enc)
			if a != nil {
				a.Wipe()
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("observed %d requests, want 1", len(got))
			}
			r := got[0]
			got = nil
			if r.Integration != "Dev" || r.Grant != "refresh_token" || r.Outcome != tc.want || r.Duration <= 0 {
				t.Errorf("observed %+v (err %v), want outcome %s", r, err, tc.want)
			}
			if Outcome(err) != tc.want {
				t.Errorf("Outcome(%v) = %s, want %s", err, Outcome(err), tc.want)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, OutcomeOK},
		{NewError(400, "invalid_grant", ""), OutcomeInvalidGrant},
		{fmt.Errorf("wrapped: %w", NewError(400, "invalid_grant", "")), OutcomeInvalidGrant},
		{NewError(400, "access_denied", ""), OutcomeInvalidGrant},
		{NewError(400, "expired_token", ""), OutcomeInvalidGrant},
		{NewError(401, "invalid_client", ""), OutcomeTransient},
		{NewError(500, "", ""), OutcomeTransient},
		{errors.New("token endpoint unreachable"), OutcomeTransient},
	} {
		if got := Outcome(tc.err); got != tc.want {
			t.Errorf("Outcome(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
