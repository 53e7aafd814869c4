package signin

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/config"
)

// FuzzCallback feeds the query of the sign-in callback.
func FuzzCallback(f *testing.F) {
	for _, s := range []string{"", "state=x&code=y", "error=access_denied%1b[2J&state=", "state=%ff&code=%00", "code=a&code=b&state=c"} {
		f.Add(s)
	}
	cfg, err := config.Parse("f.toml", []byte("[broker]\nstate_dir = \"\"\ncallback_url = \"http://127.0.0.1:9/callback\"\n[[integration]]\nname = \"Test\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauth_url = \"http://127.0.0.1:1/a\"\ntoken_url = \"http://127.0.0.1:1/t\"\n"))
	if err != nil {
		f.Fatal(err)
	}
	b, err := broker.New(cfg, broker.Options{})
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(b, cfg.Settings.CallbackURL, nil)
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	si, _ := s.Start(uid, "Test")
	f.Add("state=" + strings.TrimPrefix(si.URL[strings.Index(si.URL, "?"):], "?state="))
	f.Fuzz(func(t *testing.T, q string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/callback", nil).WithContext(context.Background()))
		r := httptest.NewRequest("GET", "/callback", nil)
		r.URL.RawQuery = q
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code == http.StatusOK || w.Code >= 500 && w.Code != http.StatusBadGateway {
			t.Fatalf("callback?%s = %d; want a refusal", q, w.Code)
		}
		if bytes.ContainsAny(w.Body.Bytes(), "\x1b\x07") {
			t.Fatalf("callback?%s page holds control characters", q)
		}
	})
}
