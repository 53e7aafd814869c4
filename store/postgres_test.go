package store

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/awnumar/memguard"
	"github.com/jackc/pgx/v5"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testWriter logs to t.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

const (
	guidA = "0b6f2f0e-8c3a-5b8e-9d3e-1a2b3c4d5e6f"
	guidB = "1c7a3f1f-9d4b-5c9f-8e4f-2b3c4d5e6f70"
)

var alice = User{UID: 1000, Name: "alice"}

// openPG opens a store on dsn with the key file key.
func openPG(t *testing.T, dsn, key string) *Postgres {
	t.Helper()
	s, err := OpenPostgres(context.Background(), dsn, PostgresOptions{KeyFile: key, Timeout: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// pgRecord is a signed-in record with the given tokens.
func pgRecord(t *testing.T, guid, access, refresh string) Record {
	t.Helper()
	tok, err := credential.NewToken([]byte(access), time.Now().Add(time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return Record{GUID: guid, Access: tok, Refresh: memguard.NewEnclave([]byte(refresh)), Scopes: []string{"read"}, Status: credential.StatusSignedIn, Account: "octocat"}
}

func refreshOf(t *testing.T, r Record) string {
	t.Helper()
	b, err := r.Refresh.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Destroy()
	return string(b.Bytes())
}

func TestPostgresRecords(t *testing.T) {
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	s := openPG(t, dsn, key)
	if err := s.Save(context.Background(), alice, pgRecord(t, guidA, "CANARY-at-1", "CANARY-rt-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(context.Background(), User{UID: 1001, Name: "bob"}, pgRecord(t, guidA, "bob-at", "bob-rt")); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Load(context.Background(), alice)
	if err != nil || len(recs) != 1 || read(t, recs[0].Access) != "CANARY-at-1" || refreshOf(t, recs[0]) != "CANARY-rt-1" ||
		recs[0].Account != "octocat" || recs[0].Status != credential.StatusSignedIn {
		t.Fatalf("Load = %+v, %v", recs, err)
	}
	// Users are keyed by name: the same name on another host (another
	// uid) is the same user.
	r, err := s.Get(context.Background(), User{UID: 5000, Name: "alice"}, guidA)
	if err != nil || r == nil || read(t, r.Access) != "CANARY-at-1" {
		t.Fatalf("Get by name = %+v, %v", r, err)
	}
	if r, err := s.Get(context.Background(), alice, guidB); r != nil || err != nil {
		t.Errorf("Get of nothing = %+v, %v; want nil, nil", r, err)
	}
	// The database holds ciphertext only.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var all []byte
	rows, _ := conn.Query(context.Background(), `SELECT user_name || guid::text || encode(sealed, 'escape') FROM oauthfs_credentials`)
	for rows.Next() {
		var x string
		rows.Scan(&x)
		all = append(all, x...)
	}
	if bytes.Contains(all, []byte("CANARY")) || bytes.Contains(all, []byte("octocat")) {
		t.Error("the database holds a token or an account name in clear")
	}
	// A row copied to another user does not open, and is not overwritten.
	if _, err := conn.Exec(context.Background(), `UPDATE oauthfs_credentials SET sealed = (SELECT sealed FROM oauthfs_credentials WHERE user_name = 'alice') WHERE user_name = 'bob'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background(), User{UID: 1001, Name: "bob"}); !errors.Is(err, ErrUnusable) {
		t.Errorf("Load of a row copied from another user = %v; want ErrUnusable", err)
	}
	s.Save(context.Background(), alice, pgRecord(t, guidB, "at-b", "CANARY-rt-b"))
	if r, err := s.Take(context.Background(), alice, guidB); err != nil || r == nil || refreshOf(t, *r) != "CANARY-rt-b" {
		t.Errorf("Take = %+v, %v; want the stored record", r, err)
	}
	if r, err := s.Take(context.Background(), alice, guidB); err != nil || r != nil {
		t.Errorf("Take of nothing = %+v, %v; want nil, nil", r, err)
	}
	if err := s.Remove(context.Background(), alice, guidA); err != nil {
		t.Fatal(err)
	}
	if recs, err := s.Load(context.Background(), alice); err != nil || len(recs) != 0 {
		t.Errorf("Load after Remove = %d records, %v", len(recs), err)
	}
	if _, err := s.Load(context.Background(), User{UID: 7}); !errors.Is(err, ErrUnusable) {
		t.Errorf("Load of a user without a name = %v; want ErrUnusable", err)
	}
}

func TestPostgresKeyAndSchema(t *testing.T) {
	dsn := pgtest.Shared(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	// Brokers that start at once on an empty database take turns.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := OpenPostgres(context.Background(), dsn, PostgresOptions{KeyFile: key, Timeout: 5 * time.Second})
			if err == nil {
				s.Close()
			} else if !strings.Contains(err.Error(), "key_file") { // two may both create the key file
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent open: %v", err)
	}
	s := openPG(t, dsn, key)
	if err := s.Save(context.Background(), alice, pgRecord(t, guidA, "a", "r")); err != nil {
		t.Fatal(err)
	}
	t.Run("another key", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "key")
		os.WriteFile(other, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
		_, err := OpenPostgres(context.Background(), dsn, PostgresOptions{KeyFile: other})
		if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), "same key_file") {
			t.Errorf("open with another key = %v", err)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		_, err := OpenPostgres(context.Background(), dsn, PostgresOptions{KeyFile: filepath.Join(t.TempDir(), "key")})
		if !errors.Is(err, ErrKeyMissing) {
			t.Errorf("open without the key file = %v; want ErrKeyMissing", err)
		}
	})
	t.Run("newer schema", func(t *testing.T) {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		conn.Exec(context.Background(), `UPDATE oauthfs_schema SET version = 99`)
		defer conn.Exec(context.Background(), `UPDATE oauthfs_schema SET version = 1`)
		if _, err := OpenPostgres(context.Background(), dsn, PostgresOptions{KeyFile: key}); err == nil || !strings.Contains(err.Error(), "upgrade oauthfs") {
			t.Errorf("open of a newer schema = %v", err)
		}
	})
	t.Run("bad dsn", func(t *testing.T) {
		_, err := OpenPostgres(context.Background(), "postgres://u:CANARY-password@127.0.0.1:1/x?sslmode=nonsense", PostgresOptions{KeyFile: key})
		if err == nil || strings.Contains(err.Error(), "CANARY") {
			t.Errorf("open of a bad dsn = %v; want an error without the password", err)
		}
	})
}

// TestPostgresUpdate: updates of one record from many stores (brokers)
// at once run one at a time, each on the record the one before it
// committed.
func TestPostgresUpdate(t *testing.T) {
	dsn := pgtest.Shared(t)
	key := filepath.Join(t.TempDir(), "key")
	a := openPG(t, dsn, key)
	b := openPG(t, dsn, key)
	if err := a.Save(context.Background(), alice, pgRecord(t, guidA, "at-0", "0")); err != nil {
		t.Fatal(err)
	}
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*Postgres{a, b}[i%2]
			err := s.Update(context.Background(), alice, guidA, false, func(cur *Record) (*Record, error) {
				if n := inside.Add(1); n > most.Load() {
					most.Store(n)
				}
				defer inside.Add(-1)
				time.Sleep(5 * time.Millisecond)
				n := len(refreshOf(t, *cur))
				next := pgRecord(t, guidA, "at", strings.Repeat("x", n+1))
				return &next, nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	r, _ := a.Get(context.Background(), alice, guidA)
	if got := len(refreshOf(t, *r)); got != 21 || most.Load() != 1 {
		t.Errorf("after 20 updates the counter is %d (want 21), %d ran at once (want 1)", got, most.Load())
	}
	// An error commits nothing.
	a.Update(context.Background(), alice, guidA, false, func(*Record) (*Record, error) {
		next := pgRecord(t, guidA, "at", "lost")
		return &next, errors.New("no")
	})
	if r, _ := a.Get(context.Background(), alice, guidA); refreshOf(t, *r) == "lost" {
		t.Error("an update that failed was committed")
	}
}

// TestPostgresWatch: a store hears the changes the others commit, not its
// own, and after the database was down it says everything may have
// changed.
func TestPostgresWatch(t *testing.T) {
	c := pgtest.Own(t)
	if err := c.CreateDB("w"); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "key")
	a := openPG(t, c.DSN("w"), key)
	b := openPG(t, c.DSN("w"), key)
	got := make(chan Change, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Watch(ctx, func(ch Change) { got <- ch })
	// Wait until a's LISTEN is up: b's changes are heard.
	for deadline := time.Now().Add(10 * time.Second); ; {
		b.Remove(context.Background(), alice, "00000000-0000-5000-8000-000000000000")
		select {
		case <-got:
		case <-time.After(200 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			t.Fatal("a heard nothing within 10 s")
		}
		break
	}
	time.Sleep(300 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	next := func() Change {
		t.Helper()
		select {
		case ch := <-got:
			return ch
		case <-time.After(10 * time.Second):
			t.Fatal("no change heard within 10 s")
			return Change{}
		}
	}
	a.Save(context.Background(), alice, pgRecord(t, guidA, "a", "r"))
	b.Save(context.Background(), alice, pgRecord(t, guidB, "b", "r"))
	if ch := next(); ch != (Change{User: "alice", GUID: guidB}) {
		t.Errorf("heard %+v; want b's save of %s (and not a's own)", ch, guidB)
	}
	b.Update(context.Background(), alice, guidB, true, func(cur *Record) (*Record, error) {
		r := pgRecord(t, guidB, "b2", "r2")
		return &r, nil
	})
	if ch := next(); ch != (Change{User: "alice", GUID: guidB, Refresh: true}) {
		t.Errorf("heard %+v; want a refresh", ch)
	}
	// A sign-in over a signed-in grant may be another account: not a
	// refresh, so the others drop what they keep of the old one.
	b.Update(context.Background(), alice, guidB, false, func(cur *Record) (*Record, error) {
		r := pgRecord(t, guidB, "b3", "r3")
		return &r, nil
	})
	if ch := next(); ch != (Change{User: "alice", GUID: guidB}) {
		t.Errorf("heard %+v; want a change that is not a refresh", ch)
	}
	b.Remove(context.Background(), alice, guidB)
	if ch := next(); ch != (Change{User: "alice", GUID: guidB}) {
		t.Errorf("heard %+v; want the removal", ch)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if ch := next(); ch != (Change{}) {
		t.Errorf("after the database came back heard %+v; want Change{} (anything may have changed)", ch)
	}
	b.Save(context.Background(), alice, pgRecord(t, guidB, "b3", "r3"))
	if ch := next(); ch.GUID != guidB {
		t.Errorf("after reconnecting heard %+v", ch)
	}
	if recs, err := a.Load(context.Background(), alice); err != nil || len(recs) != 2 {
		t.Errorf("Load after the database came back = %d, %v", len(recs), err)
	}
}

// TestPostgresRoutes: a route names its owner until it expires, and only
// a hash of its secret is stored.
func TestPostgresRoutes(t *testing.T) {
	dsn := pgtest.Shared(t)
	s := openPG(t, dsn, filepath.Join(t.TempDir(), "key"))
	ctx := context.Background()
	if err := s.AddRoute(ctx, "CANARY-state", "http://10.0.0.5:8400", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	s.AddRoute(ctx, "old-state", "http://10.0.0.6:8400", time.Now().Add(-time.Second))
	if o, err := s.Route(ctx, "CANARY-state"); err != nil || o != "http://10.0.0.5:8400" {
		t.Errorf("Route = %q, %v", o, err)
	}
	for _, secret := range []string{"old-state", "unknown"} {
		if o, err := s.Route(ctx, secret); err != nil || o != "" {
			t.Errorf("Route(%s) = %q, %v; want none", secret, o, err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var all string
	conn.QueryRow(ctx, `SELECT string_agg(encode(secret_hash, 'escape') || owner, ',') FROM oauthfs_routes`).Scan(&all)
	if strings.Contains(all, "CANARY") {
		t.Error("the routes table holds a secret in clear")
	}
}

// TestPostgresNotificationsSealed: a role that may only connect to the
// database can LISTEN and NOTIFY on the brokers' channel. What it hears
// names no user and no integration, and what it sends is ignored: it can
// neither make a broker drop every credential it holds nor make it read a
// user's record again.
func TestPostgresNotificationsSealed(t *testing.T) {
	c := pgtest.Own(t)
	if err := c.CreateDB("oauthfs"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Psql("oauthfs", `CREATE ROLE snoop LOGIN; GRANT CONNECT ON DATABASE oauthfs TO snoop`); err != nil {
		t.Fatal(err)
	}
	dsn := c.DSN("oauthfs")
	key := filepath.Join(t.TempDir(), "key")
	writer, reader := openPG(t, dsn, key), openPG(t, dsn, key)
	changes := make(chan Change, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reader.Watch(ctx, func(ch Change) { changes <- ch })

	snoop, err := pgx.Connect(context.Background(), strings.Replace(dsn, "//"+pgtest.User+"@", "//snoop@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer snoop.Close(context.Background())
	if _, err := snoop.Exec(context.Background(), `LISTEN `+pgChannel); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the reader's LISTEN is up (a missed forgery would pass the test)
	forgeries := []string{`{"o":"snoop","u":""}`, `{"o":"snoop","u":"alice","g":"` + guidA + `"}`, "garbage"}
	for _, f := range forgeries {
		if _, err := snoop.Exec(context.Background(), `SELECT pg_notify($1, $2)`, pgChannel, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := writer.Save(context.Background(), alice, pgRecord(t, guidA, "at", "rt")); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-changes:
		if ch != (Change{User: "alice", GUID: guidA}) {
			t.Errorf("the reader heard %+v; want alice's save only", ch)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader heard nothing of a save")
	}
	select {
	case ch := <-changes:
		t.Errorf("the reader also heard %+v", ch)
	case <-time.After(500 * time.Millisecond):
	}
	if n := reader.Forged(); n != int64(len(forgeries)) {
		t.Errorf("Forged() = %d; want %d", n, len(forgeries))
	}
	// What the snoop heard: its own forgeries, and the save, which must
	// name neither the user nor the integration.
	heard := 0
	for heard < len(forgeries)+1 {
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := snoop.WaitForNotification(wctx)
		wcancel()
		if err != nil {
			t.Fatalf("the snoop heard %d notifications: %v", heard, err)
		}
		heard++
		if slices.Contains(forgeries, n.Payload) {
			continue
		}
		if strings.Contains(n.Payload, "alice") || strings.Contains(n.Payload, guidA) {
			t.Errorf("a notification names the user or the integration in clear: %q", n.Payload)
		}
	}
}
