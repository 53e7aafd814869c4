package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/pgtest"
)

func TestMigrate(t *testing.T) {
	dir := t.TempDir()
	f := mustOpen(t, dir)
	pg := openPG(t, pgtest.Shared(t), filepath.Join(dir, "key"))
	names := map[int]string{1000: "alice", 1001: "bob"}
	name := func(uid int) (string, bool) { n, ok := names[uid]; return n, ok }

	f.Save(context.Background(), User{UID: 1000}, pgRecord(t, guidA, "alice-file-a", "r1"))
	f.Save(context.Background(), User{UID: 1000}, pgRecord(t, guidB, "alice-file-b", "r2"))
	f.Save(context.Background(), User{UID: 1001}, pgRecord(t, guidA, "bob-file", "r3"))
	// The database already holds a newer grant of bob's, and an older
	// one of alice's.
	older := pgRecord(t, guidB, "alice-db-old", "r4")
	older.Access, _ = credential.NewToken([]byte("alice-db-old"), time.Now().Add(time.Hour), time.Now().Add(-time.Hour))
	pg.Save(context.Background(), User{Name: "alice"}, older)
	time.Sleep(10 * time.Millisecond)
	pg.Save(context.Background(), User{Name: "bob"}, pgRecord(t, guidA, "bob-db-new", "r5"))

	moved, err := Migrate(context.Background(), f, pg, name)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, m := range moved {
		kept[m.User+"/"+m.GUID] = m.Kept
	}
	if len(moved) != 3 || kept["alice/"+guidA] || kept["alice/"+guidB] || !kept["bob/"+guidA] {
		t.Errorf("Migrate = %+v; want 3 records, bob's kept", moved)
	}
	for _, tc := range []struct{ user, guid, want string }{
		{"alice", guidA, "alice-file-a"}, {"alice", guidB, "alice-file-b"}, {"bob", guidA, "bob-db-new"},
	} {
		r, err := pg.Get(context.Background(), User{Name: tc.user}, tc.guid)
		if err != nil || r == nil || read(t, r.Access) != tc.want {
			t.Errorf("%s %s in the database = %v, %v; want %s", tc.user, tc.guid, r, err, tc.want)
		}
	}
	// Running it again changes nothing.
	again, _ := Migrate(context.Background(), f, pg, name)
	for _, m := range again {
		if !m.Kept {
			t.Errorf("a second Migrate overwrote %+v", m)
		}
	}
	delete(names, 1001)
	if _, err := Migrate(context.Background(), f, pg, name); err == nil {
		t.Error("Migrate of a uid without a name succeeded")
	}
}
