package session

import (
	"errors"
	"testing"

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
			if !errors.Is(err, credential.ErrBadRequest) {
				t.Fatalf("parseCredentials(%q) = %v; want ErrBadRequest", body, err)
			}
			return
		}
		if len(cr.c.Access) == 0 || len(cr.c.Access) > credential.MaxTokenLen || cr.expiresIn < 0 {
			t.Fatalf("parseCredentials(%q) accepted %d bytes, expires_in %d", body, len(cr.c.Access), cr.expiresIn)
		}
	})
}
