package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
)

// FuzzTokenResponse feeds token endpoint answers to a refresh: whatever
// the provider sends, the broker answers with a sentinel error or a token,
// and never quotes the body.
func FuzzTokenResponse(f *testing.F) {
	for _, s := range []struct {
		status int
		body   string
	}{
		{200, `{"access_token":"a","token_type":"Bearer","expires_in":60,"refresh_token":"r","scope":"x"}`},
		{200, `{"access_token":"a","expires_in":9300000000}`},
		{400, `{"error":"invalid_grant","error_description":"gone"}`},
		{400, `{"error":"` + strings.Repeat("e", 1000) + `"}`},
		{500, `<html>down</html>`},
		{200, `{"access_token":`},
		{307, ``},
		{200, `access_token=a&expires_in=60`},
	} {
		f.Add(s.status, []byte(s.body))
	}
	cfg, err := config.Parse("f.toml", []byte("[broker]\nstate_dir = \"\"\nrequest_timeout = \"2s\"\n[[integration]]\nname = \"Test\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauth_url = \"http://127.0.0.1:1/a\"\ntoken_url = \"http://127.0.0.1:1/t\"\n"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 599 {
			return
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if bytes.HasPrefix(body, []byte("access_token=")) {
				w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
			} else {
				w.Header().Set("Content-Type", "application/json")
			}
			w.WriteHeader(status)
			w.Write(body)
		}))
		defer srv.Close()
		b, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		setTokenURL(b, srv.URL)
		b.Put(uid, "Test", credential.Tokens{Access: []byte("old"), Refresh: []byte("CANARY-rt"), Expiry: time.Now().Add(-time.Minute)})
		tok, err := b.Token(context.Background(), uid, "Test")
		if err == nil {
			if tok.Len() == 0 {
				t.Fatal("an empty token was handed out")
			}
			return
		}
		if !errors.Is(err, credential.ErrUnavailable) && !errors.Is(err, credential.ErrExpired) {
			t.Fatalf("Token = %v; want ErrUnavailable or ErrExpired", err)
		}
		m, _ := b.Integration(uid, "Test")
		for _, s := range []string{err.Error(), fmt.Sprint(m.Error)} {
			if len(body) > 40 && strings.Contains(s, string(body)) || strings.Contains(s, "CANARY") || len(s) > 1000 {
				t.Fatalf("an error quotes the answer or a secret: %q", s)
			}
		}
	})
}
