package store

import (
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

// TestRecordExtras: an access token's ID token and type survive the
// codec, and a record without them is written as earlier versions wrote
// it (so an older broker of a cluster still reads it).
func TestRecordExtras(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name      string
		typ       string
		id        string
		wantExtra bool
	}{
		{"plain bearer", "", "", false},
		{"bearer spelt lowercase", "bearer", "", false},
		{"an ID token", "Bearer", "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDB9.c2ln", true},
		{"another type", "DPoP", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var id []byte
			if tc.id != "" {
				id = []byte(tc.id)
			}
			access, err := credential.NewAccess([]byte("at-canary"), now.Add(time.Hour), now, tc.typ, []string{"read"}, id, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := Record{GUID: "00000000-0000-0000-0000-000000000001", Access: access, Scopes: []string{"read"}, Status: credential.StatusSignedIn}
			buf, err := encodeRecord(r)
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Destroy()
			base := 1 + 8 + 8 + 4 + len("at-canary") + 4 + 2 + len("read") + 2 + 2
			if got := buf.Size() > base; got != tc.wantExtra {
				t.Errorf("encoded %d bytes (base %d); want extras written: %v", buf.Size(), base, tc.wantExtra)
			}
			back, err := decodeRecord(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if back.Access.Type() != access.Type() || !back.Access.Equal(access) {
				t.Errorf("decoded type %q; want %q, and the same token", back.Access.Type(), access.Type())
			}
			switch got := back.Access.ID(); {
			case tc.id == "" && got != nil:
				t.Errorf("decoded an ID token from a record without one")
			case tc.id != "" && (got == nil || !got.Equal(access.ID())):
				t.Errorf("the ID token did not survive")
			case tc.id != "" && !got.Expiry().Equal(time.Unix(1_800_003_600, 0)):
				t.Errorf("ID token expiry %v; want its exp claim", got.Expiry())
			}
		})
	}
}
