package session

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/api"
	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/unixsock"
)

const uid = 1000

func newBroker(t *testing.T) *broker.Broker {
	t.Helper()
	cfg, err := config.Parse("test.toml", []byte(`
[broker]
state_dir = ""
[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "http://127.0.0.1:1/authorize"
token_url = "http://127.0.0.1:1/token"
`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(cfg, broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServerRefusesUnknownPeers(t *testing.T) {
	b := newBroker(t)
	for _, tc := range []struct {
		name  string
		owner int
		ctx   context.Context
		code  int
		want  string
	}{
		{"no peer credentials", -1, context.Background(), 403, "credentials could not be read"},
		{"not the owner", uid, unixsock.WithPeer(context.Background(), uid+1, 0), 403, "serves uid 1000 only"},
		{"the owner", uid, unixsock.WithPeer(context.Background(), uid, 0), 200, `"name": "Test"`},
		{"any user of the daemon", -1, unixsock.WithPeer(context.Background(), uid+7, 0), 200, `"status": "not_signed_in"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{B: b, Owner: tc.owner}
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, api.PathIntegrations, nil).WithContext(tc.ctx))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
				t.Errorf("GET %s = %d %s; want %d with %q", api.PathIntegrations, w.Code, w.Body, tc.code, tc.want)
			}
		})
	}
}

// TestEveryErrorCodeHasAClientMeaning: each code the server can answer
// with maps back to a sentinel in the client, so that the command line
// gives the right exit code.
func TestEveryErrorCodeHasAClientMeaning(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range api.ErrorCodes {
		if seen[c.Code] {
			t.Errorf("code %q appears twice", c.Code)
		}
		seen[c.Code] = true
		if api.Meaning(c.Code) == nil {
			t.Errorf("the server can answer %q, which the client does not map to a sentinel", c.Code)
		}
		if c.Status < 400 {
			t.Errorf("code %q has status %d; want an error status", c.Code, c.Status)
		}
	}
	for _, e := range errorIs {
		if !seen[e.code] {
			t.Errorf("the server answers %q, which api.ErrorCodes does not list", e.code)
		}
	}
	if got := codeOf(errors.New("anything else")).Code; got != "unavailable" {
		t.Errorf("codeOf(an unknown error) = %q; want unavailable", got)
	}
}

// TestAPIDocMatchesTheProtocol: docs/api.md's error table and endpoint
// headings list exactly what protocol.go declares.
func TestAPIDocMatchesTheProtocol(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (\\d+) \\|").FindAllStringSubmatch(string(doc), -1) {
		documented = append(documented, m[1]+" "+m[2])
	}
	var declared []string
	for _, c := range api.ErrorCodes {
		declared = append(declared, c.Code+" "+strconv.Itoa(c.Status))
	}
	slices.Sort(documented)
	slices.Sort(declared)
	if !slices.Equal(documented, declared) {
		t.Errorf("docs/api.md's error table = %v; package api declares %v", documented, declared)
	}
	for _, r := range (&Server{}).routes() {
		p := strings.ReplaceAll(r.pattern, "{login}", "{login_id}")
		if !strings.Contains(string(doc), "### `"+p) {
			t.Errorf("docs/api.md has no section for %s", p)
		}
	}
	for _, k := range api.CredentialsKeys {
		if !strings.Contains(string(doc), `"`+k+`"`) {
			t.Errorf("docs/api.md does not show the key %s", k)
		}
	}
}

// TestTokenAnswersAreBoundedPerUser: a user whose token answers already
// hold their share of locked memory (answers nobody reads) is refused
// another, saying why; another user's answer is not held back, and an
// answer reserves exactly what it writes.
func TestTokenAnswersAreBoundedPerUser(t *testing.T) {
	b := newBroker(t)
	defer b.Close()
	for _, u := range []int{uid, uid + 1} {
		if err := b.Put(u, "Test", credential.Tokens{Access: []byte("tok-" + strconv.Itoa(u)), Expiry: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{B: b, Owner: -1}
	get := func(u int) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/integrations/Test/token", nil).WithContext(unixsock.WithPeer(context.Background(), u, 0)))
		return w
	}
	if w := get(uid); w.Code != 200 || !strings.Contains(w.Body.String(), `"access_token":"tok-1000"`) {
		t.Fatalf("a token answer = %d %s", w.Code, w.Body)
	}
	if n := len(s.answers.held); n != 0 {
		t.Errorf("%d users hold answer pages after their answers were written; want none", n)
	}
	s.answers.take(uid, answerPagesPerUser, answerPagesPerUser) // answers nobody reads
	if w := get(uid); w.Code == 200 || !strings.Contains(w.Body.String(), "token answers being written") {
		t.Errorf("an answer past the user's share = %d %s; want a refusal saying why", w.Code, w.Body)
	}
	if w := get(uid + 1); w.Code != 200 || !strings.Contains(w.Body.String(), "tok-1001") {
		t.Errorf("another user's answer = %d %s; want the token", w.Code, w.Body)
	}
}
