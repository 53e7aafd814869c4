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

// Fuzz targets for every parser that takes outside input. Their seed
// corpora live in testdata/fuzz; 'make fuzz' runs each for a minute, and
// 'make test' briefly.

// FuzzParseCredentials feeds session API bodies (PUT .../credentials).
func FuzzParseCredentials(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"a","refresh_token":"r","expires_in":3600,"scope":"read write"}`,
		`{"access_token":"a\/b\u00e9"}`, `{"ACCESS_TOKEN":"x"}`, `{"access_token":"x"}junk`,
		`{"access_token":5}`, `{"access_token":"x","expires_in":-1}`, `[]`, `null`, `{"access_token":"x","expires_in":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cr, err := parseCredentials(body)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("parseCredentials(%q) = %v; want ErrBadRequest", body, err)
			}
			return
		}
		if len(cr.c.AccessToken) == 0 || len(cr.c.AccessToken) > maxTokenLen || cr.expiresIn < 0 {
			t.Fatalf("parseCredentials(%q) accepted %d bytes, expires_in %d", body, len(cr.c.AccessToken), cr.expiresIn)
		}
	})
}

// FuzzDecodeRecord feeds the plaintext of a store record (what an AEAD
// opened: a key holder's file, or a bug).
func FuzzDecodeRecord(f *testing.F) {
	r := record{status: credential.StatusSignedIn, scopes: []string{"read"}, lastErr: "e", account: "a"}
	if err := r.seal([]byte("access"), []byte("refresh")); err != nil {
		f.Fatal(err)
	}
	good, err := encodeRecord(r)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), good.Bytes()...))
	good.Destroy()
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := decodeRecord(p)
		if err != nil {
			return
		}
		once, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		defer once.Destroy()
		// Scopes are normalised on the way in; after that a record
		// survives decode and encode unchanged.
		r2, err := decodeRecord(once.Bytes())
		if err != nil {
			t.Fatalf("an encoded record does not decode: %v", err)
		}
		twice, err := encodeRecord(r2)
		if err != nil {
			t.Fatal(err)
		}
		defer twice.Destroy()
		if !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("decode then encode changed the record:\n%x\n%x", once.Bytes(), twice.Bytes())
		}
	})
}

// FuzzDecodeV1 feeds the first store format, read once on migration.
func FuzzDecodeV1(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 1, 0, 2, 'a', 'b'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		decodeV1(p)
	})
}

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
		for _, in := range b.integrations {
			in.cfg = &config.Integration{Name: "Test", GUID: in.cfg.GUID, ClientID: "c", TokenURL: srv.URL, AuthStyle: config.AuthStyleBasic}
		}
		b.Put(uid, "Test", Credentials{AccessToken: []byte("old"), RefreshToken: []byte("CANARY-rt"), Expiry: time.Now().Add(-time.Minute)})
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

// FuzzCallback feeds the query of the sign-in callback.
func FuzzCallback(f *testing.F) {
	for _, s := range []string{"", "state=x&code=y", "error=access_denied%1b[2J&state=", "state=%ff&code=%00", "code=a&code=b&state=c"} {
		f.Add(s)
	}
	cfg, err := config.Parse("f.toml", []byte("[broker]\nstate_dir = \"\"\ncallback_url = \"http://127.0.0.1:9/callback\"\n[[integration]]\nname = \"Test\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauth_url = \"http://127.0.0.1:1/a\"\ntoken_url = \"http://127.0.0.1:1/t\"\n"))
	if err != nil {
		f.Fatal(err)
	}
	b, err := New(cfg, Options{})
	if err != nil {
		f.Fatal(err)
	}
	h := b.SignInHandler()
	si, _ := b.StartSignIn(uid, "Test")
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
