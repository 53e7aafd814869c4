package fusefs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/internal/fusetest"
)

const (
	gA = "a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d"
	gB = "0b6f1e0c-9d4c-4c1e-8f7a-3f1d2e4c5b6a"
)

// fakeBroker serves fixed tokens and errors, and pushes changes to the
// filesystem like a broker's event stream; it is safe for concurrent use.
type fakeBroker struct {
	mu     sync.Mutex
	list   []credential.Integration
	tokens map[string]string // by guid, or guid/variant
	ids    map[string]string // ID tokens, by guid
	expiry map[string]time.Time
	errs   map[string]error
	keep   time.Duration // how long the kernel may keep a token; 0: not at all
	due    time.Time     // if set, gA's refresh time: keep runs until then
	next   string        // gA's token from due on, kept for an hour
	block  bool          // Token waits for ctx to end
	peekNo bool          // Peek offers nothing, so lookups call Token
	// The next Token and Integration calls sleep this long.
	tokenDelay, integDelay time.Duration
	made                   map[string]*credential.Token

	peeks, touches, calls atomic.Int64
	changes               chan fakeChange
	watching              chan struct{} // closed once the filesystem watches
	watchOnce             sync.Once
}

type fakeChange struct {
	c    credential.Change
	done chan struct{}
}

func newFake() *fakeBroker {
	return &fakeBroker{
		list: []credential.Integration{
			{GUID: gA, Name: "GitHub", Status: credential.StatusSignedIn, Authenticated: true, Scopes: []string{"repo"}, Tokens: []credential.TokenVariant{{Name: "graph", Resource: "https://graph.example.test"}}},
			{GUID: gB, Name: "Google Drive", Status: credential.StatusNotSignedIn, Scopes: []string{}},
		},
		tokens:   map[string]string{gA: "gho_token_A", gA + "/graph": "graph_token_A"},
		ids:      map[string]string{gA: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.sig_A"},
		expiry:   map[string]time.Time{gA: time.Date(2026, 11, 27, 10, 15, 0, 0, time.UTC)},
		errs:     map[string]error{gB: credential.ErrNotSignedIn},
		keep:     time.Hour,
		made:     map[string]*credential.Token{},
		changes:  make(chan fakeChange),
		watching: make(chan struct{}),
	}
}

func (f *fakeBroker) Integrations(context.Context) ([]credential.Integration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]credential.Integration(nil), f.list...), nil
}

// Integration answers with what it finds now, after integDelay (as an
// answer that takes long to arrive).
func (f *fakeBroker) Integration(_ context.Context, id string) (credential.Integration, error) {
	f.mu.Lock()
	d := f.integDelay
	f.integDelay = 0
	in, err := f.integrationLocked(id)
	f.mu.Unlock()
	time.Sleep(d)
	return in, err
}

func (f *fakeBroker) integrationLocked(id string) (credential.Integration, error) {
	for _, in := range f.list {
		if in.GUID == id || in.Name == id {
			return in, nil
		}
	}
	return credential.Integration{}, fmt.Errorf("fake: %q: %w", id, credential.ErrNotFound)
}

// tokenLocked returns guid's current token (or its variant's), the same
// one until set changes something.
func (f *fakeBroker) tokenLocked(guid, variant string) (*credential.Token, error) {
	if err := f.errs[guid]; err != nil {
		return nil, err
	}
	key := guid
	if variant != "" {
		key += "/" + variant
		if _, ok := f.tokens[key]; !ok {
			return nil, fmt.Errorf("fake: no variant %q: %w", variant, credential.ErrNotFound)
		}
	}
	if t := f.made[key]; t != nil {
		return t, nil
	}
	var id []byte
	if f.ids[key] != "" {
		id = []byte(f.ids[key])
	}
	t, err := credential.NewAccess([]byte(f.tokens[key]), f.expiry[guid], time.Date(2026, 11, 27, 9, 15, 0, 0, time.UTC), "", []string{"repo"}, id, nil)
	if err != nil {
		return nil, err
	}
	f.made[key] = t
	return t, nil
}

func (f *fakeBroker) Token(ctx context.Context, guid, variant string) (*credential.Token, time.Time, error) {
	f.calls.Add(1)
	if _, err := f.Integration(ctx, guid); err != nil {
		return nil, time.Time{}, err
	}
	f.mu.Lock()
	block, d := f.block, f.tokenDelay
	f.tokenDelay = 0
	f.mu.Unlock()
	time.Sleep(d)
	if block {
		<-ctx.Done()
		return nil, time.Time{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tickLocked()
	t, err := f.tokenLocked(guid, variant)
	return t, f.untilLocked(), err
}

// tickLocked hands out the next token once the current one is due, a
// hand-over slack before its refresh time, as a broker does.
func (f *fakeBroker) tickLocked() {
	if !f.due.IsZero() && !time.Now().Before(f.due.Add(-time.Second)) {
		f.tokens[gA], f.due, f.keep = f.next, time.Time{}, time.Hour
		clear(f.made)
	}
}

// untilLocked is until when the kernel may keep the token: the zero time
// for not at all.
func (f *fakeBroker) untilLocked() time.Time {
	if !f.due.IsZero() {
		return f.due
	}
	if f.keep <= 0 {
		return time.Time{}
	}
	return time.Now().Add(f.keep)
}

func (f *fakeBroker) Peek(guid, variant string) (*credential.Token, time.Time) {
	f.peeks.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tickLocked()
	until := f.untilLocked()
	if !time.Now().Before(until) || f.block || f.peekNo {
		return nil, time.Time{}
	}
	t, err := f.tokenLocked(guid, variant)
	if err != nil {
		return nil, time.Time{}
	}
	return t, until
}

func (f *fakeBroker) Touch(string) { f.touches.Add(1) }

func (f *fakeBroker) Watch(ctx context.Context, fn func(credential.Change)) {
	fn(credential.Change{Revoke: true}) // watching from now on
	f.watchOnce.Do(func() { close(f.watching) })
	for {
		select {
		case c := <-f.changes:
			fn(c.c)
			close(c.done)
		case <-ctx.Done():
			return
		}
	}
}

// set changes the fake's state; the tokens it hands out are made anew.
func (f *fakeBroker) set(fn func()) { f.mu.Lock(); fn(); clear(f.made); f.mu.Unlock() }

// change tells the filesystem of a change, and returns once it has acted
// on it, as a broker waits for a session's acknowledgement.
func (f *fakeBroker) change(t *testing.T, c credential.Change) {
	t.Helper()
	done := make(chan struct{})
	select {
	case f.changes <- fakeChange{c, done}:
	case <-time.After(10 * time.Second):
		t.Fatal("the filesystem does not watch for changes")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the filesystem did not finish acting on a change")
	}
}

// mount mounts a filesystem of f, and returns once it watches f for
// changes (until then the kernel keeps nothing).
func mount(t *testing.T, f *fakeBroker) string {
	dir := fusetest.Mount(t, fusefs.NewRoot(fusefs.Options{Source: f, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Timeout: 5 * time.Second, Context: t.Context()}))
	select {
	case <-f.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the filesystem does not watch its source")
	}
	return dir
}

func TestLayout(t *testing.T) {
	dir := mount(t, newFake())
	names := func(d string) []string {
		es, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		sort.Strings(out)
		return out
	}
	if got, want := strings.Join(names(dir), " "), "0b6f1e0c-9d4c-4c1e-8f7a-3f1d2e4c5b6a a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d by-name integrations.json"; got != want {
		t.Errorf("ls / = %q; want %q", got, want)
	}
	if got := strings.Join(names(filepath.Join(dir, "by-name")), "|"); got != "GitHub|Google Drive" {
		t.Errorf("ls by-name = %q", got)
	}
	if got := strings.Join(names(filepath.Join(dir, gA)), " "); got != "access_token expiry id_token meta.json token.json tokens" {
		t.Errorf("ls guid = %q", got)
	}
	if got := strings.Join(names(filepath.Join(dir, gA, "tokens")), " "); got != "graph" {
		t.Errorf("ls guid/tokens = %q; want the variants", got)
	}
	if got := strings.Join(names(filepath.Join(dir, gA, "tokens", "graph")), " "); got != "access_token expiry token.json" {
		t.Errorf("ls guid/tokens/graph = %q", got)
	}
	if target, err := os.Readlink(filepath.Join(dir, "by-name", "Google Drive")); err != nil || target != "../"+gB {
		t.Errorf("readlink = %q, %v; want ../%s", target, err, gB)
	}
	for _, tc := range []struct {
		name string
		path string
		mode os.FileMode
	}{
		{"root", "", os.ModeDir | 0o500},
		{"by-name", "by-name", os.ModeDir | 0o500},
		{"index", "integrations.json", 0o400},
		{"guid dir", gA, os.ModeDir | 0o500},
		{"token", gA + "/access_token", 0o400},
		{"expiry", gA + "/expiry", 0o400},
		{"meta", gA + "/meta.json", 0o400},
		{"id token", gA + "/id_token", 0o400},
		{"token.json", gA + "/token.json", 0o400},
		{"tokens dir", gA + "/tokens", os.ModeDir | 0o500},
		{"variant dir", gA + "/tokens/graph", os.ModeDir | 0o500},
		{"variant token", gA + "/tokens/graph/access_token", 0o400},
		{"symlink", "by-name/GitHub", os.ModeSymlink | 0o777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := os.Lstat(filepath.Join(dir, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode() != tc.mode {
				t.Errorf("mode of %s = %v; want %v", tc.path, st.Mode(), tc.mode)
			}
			if sys := st.Sys().(*syscall.Stat_t); int(sys.Uid) != os.Getuid() || int(sys.Gid) != os.Getgid() {
				t.Errorf("owner of %s = %d:%d; want the mounting user", tc.path, sys.Uid, sys.Gid)
			}
		})
	}
}

func TestReadFiles(t *testing.T) {
	dir := mount(t, newFake())
	for _, tc := range []struct {
		name, path, want string
	}{
		{"token by guid", gA + "/access_token", "gho_token_A"},
		{"token by name", "by-name/GitHub/access_token", "gho_token_A"},
		{"expiry", gA + "/expiry", "2026-11-27T10:15:00Z"},
		{"id token", gA + "/id_token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.sig_A"},
		{"token.json", gA + "/token.json", `{"access_token":"gho_token_A","token_type":"Bearer","expiry":"2026-11-27T10:15:00Z","scopes":["repo"],"id_token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.sig_A"}` + "\n"},
		{"variant token", gA + "/tokens/graph/access_token", "graph_token_A"},
		{"variant by name", "by-name/GitHub/tokens/graph/access_token", "graph_token_A"},
		{"variant token.json", gA + "/tokens/graph/token.json", `{"access_token":"graph_token_A","token_type":"Bearer","expiry":"2026-11-27T10:15:00Z","scopes":["repo"]}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.path)
			got, err := os.ReadFile(p)
			if err != nil || string(got) != tc.want {
				t.Fatalf("ReadFile(%s) = %q, %v; want %q", tc.path, got, err, tc.want)
			}
			st, err := os.Stat(p)
			if err != nil || st.Size() != int64(len(got)) {
				t.Errorf("stat size = %d, %v; want %d", st.Size(), err, len(got))
			}
			out, err := exec.Command("cat", p).Output()
			if err != nil || string(out) != tc.want {
				t.Errorf("cat = %q, %v", out, err)
			}
		})
	}
	st, _ := os.Stat(filepath.Join(dir, gA, "access_token"))
	if want := time.Date(2026, 11, 27, 9, 15, 0, 0, time.UTC); !st.ModTime().Equal(want) {
		t.Errorf("mtime = %v; want when the token was obtained, %v", st.ModTime(), want)
	}
}

// TestTokenFilesErrnos: the new token files fail as documented
// (docs/design.md): no ID token is ENODATA, an unknown variant ENOENT,
// and the variant of an integration not signed in ENOKEY.
func TestTokenFilesErrnos(t *testing.T) {
	f := newFake()
	f.set(func() {
		f.tokens[gB] = "gB_token"
		f.list[1].Tokens = []credential.TokenVariant{{Name: "graph", Scopes: []string{"read"}}}
	})
	dir := mount(t, f)
	for _, tc := range []struct {
		path string
		want syscall.Errno
	}{
		{gA + "/tokens/nope/access_token", syscall.ENOENT},
		{gA + "/tokens/graph/id_token", syscall.ENOENT},
		{gB + "/id_token", syscall.ENOKEY},
		{gB + "/token.json", syscall.ENOKEY},
		{gB + "/tokens/graph/access_token", syscall.ENOKEY},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if _, err := os.ReadFile(filepath.Join(dir, tc.path)); !errors.Is(err, tc.want) {
				t.Errorf("read %s = %v; want %v", tc.path, err, tc.want)
			}
		})
	}
	f.set(func() { delete(f.errs, gB) })
	f.change(t, credential.Change{GUID: gB, Revoke: true})
	_, err := os.ReadFile(filepath.Join(dir, gB, "id_token"))
	if !errors.Is(err, syscall.ENODATA) {
		t.Errorf("read id_token of a token without one = %v; want ENODATA", err)
	}
	if _, err := os.ReadFile(filepath.Join(dir, gB, "access_token")); err != nil {
		t.Errorf("access_token beside it: %v", err)
	}
}

// TestTokenJSONOneVersion: token.json holds the token the other files of
// the same version hold, and a change makes every file of the next
// version agree again.
func TestTokenJSONOneVersion(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	read := func() (string, map[string]any) {
		b, err := os.ReadFile(filepath.Join(dir, gA, "token.json"))
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("token.json is not JSON: %v\n%s", err, b)
		}
		tok, _ := os.ReadFile(filepath.Join(dir, gA, "access_token"))
		return string(tok), doc
	}
	tok, doc := read()
	if doc["access_token"] != tok || doc["expiry"] != "2026-11-27T10:15:00Z" || doc["token_type"] != "Bearer" {
		t.Errorf("token.json = %v; want access_token %q", doc, tok)
	}
	f.set(func() { f.tokens[gA] = "gho_next"; f.ids[gA] = "" })
	f.change(t, credential.Change{GUID: gA, Revoke: true})
	tok, doc = read()
	if tok != "gho_next" || doc["access_token"] != "gho_next" {
		t.Errorf("after a change: access_token %q, token.json %v; want gho_next in both", tok, doc)
	}
	if _, ok := doc["id_token"]; ok {
		t.Errorf("token.json of a token without an ID token has one: %v", doc)
	}
}

func TestNoExpiryIsEmpty(t *testing.T) {
	f := newFake()
	f.set(func() { f.expiry[gA] = time.Time{} })
	dir := mount(t, f)
	got, err := os.ReadFile(filepath.Join(dir, gA, "expiry"))
	st, _ := os.Stat(filepath.Join(dir, gA, "expiry"))
	if err != nil || len(got) != 0 || st.Size() != 0 {
		t.Errorf("expiry = %q (size %d), %v; want empty", got, st.Size(), err)
	}
}

func TestJSONFiles(t *testing.T) {
	dir := mount(t, newFake())
	raw, err := os.ReadFile(filepath.Join(dir, "integrations.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(raw), "}\n]\n") {
		t.Errorf("integrations.json does not end with a newline: %q", raw[len(raw)-5:])
	}
	var list []map[string]any
	if err := json.Unmarshal(raw, &list); err != nil || len(list) != 2 || list[0]["name"] != "GitHub" {
		t.Fatalf("integrations.json = %s, %v", raw, err)
	}
	for _, k := range []string{"guid", "name", "display_name", "client_id", "auth_url", "token_url", "scopes", "authenticated", "status", "expiry", "granted_scopes", "error"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("integrations.json lacks %q", k)
		}
	}
	meta, err := os.ReadFile(filepath.Join(dir, "by-name", "Google Drive", "meta.json"))
	var m map[string]any
	if err != nil || json.Unmarshal(meta, &m) != nil || m["status"] != "not_signed_in" || !strings.HasSuffix(string(meta), "}\n") {
		t.Errorf("meta.json = %s, %v", meta, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, gB, "meta.json")); st.Size() != int64(len(meta)) {
		t.Errorf("meta.json size = %d; want %d", st.Size(), len(meta))
	}
}

func TestErrnos(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	tok := filepath.Join(dir, gB, "access_token")
	for _, tc := range []struct {
		name string
		err  error
		path string
		want syscall.Errno
	}{
		{"unknown guid", nil, "11111111-2222-4333-8444-555555555555/access_token", syscall.ENOENT},
		{"uppercase guid", nil, strings.ToUpper(gA) + "/access_token", syscall.ENOENT},
		{"unknown name", nil, "by-name/Nope/access_token", syscall.ENOENT},
		{"unknown file", nil, gA + "/refresh_token", syscall.ENOENT},
		{"not signed in", credential.ErrNotSignedIn, tok, syscall.ENOKEY},
		{"expired", fmt.Errorf("x: %w", credential.ErrExpired), tok, syscall.EKEYEXPIRED},
		{"unavailable", fmt.Errorf("x: %w", credential.ErrUnavailable), tok, syscall.EIO},
		{"unexpected", errors.New("boom"), tok, syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.set(func() { f.errs[gB] = tc.err })
			p := tc.path
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			_, err := os.ReadFile(p)
			if !errors.Is(err, tc.want) {
				t.Errorf("ReadFile(%s) = %v; want %v", tc.path, err, tc.want)
			}
			if tc.path == tok {
				if _, err := os.ReadFile(filepath.Join(dir, gB, "expiry")); !errors.Is(err, tc.want) {
					t.Errorf("ReadFile(expiry) = %v; want %v", err, tc.want)
				}
				// The error surfaces at open, and at stat.
				if _, err := os.Open(p); !errors.Is(err, tc.want) {
					t.Errorf("Open = %v; want %v", err, tc.want)
				}
				if _, err := os.Stat(p); !errors.Is(err, tc.want) {
					t.Errorf("Stat = %v; want %v", err, tc.want)
				}
			}
		})
	}
}

// TestHeldFileDescriptors: a process that keeps a file descriptor open
// sees every change at its next read: a sign-in or a sign-out at once, a
// refresh once the old token is past its refresh time; and no read mixes
// two tokens.
func TestHeldFileDescriptors(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "access_token")
	open := func() *os.File {
		fd, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fd.Close() })
		return fd
	}

	t.Run("refresh", func(t *testing.T) {
		fd := open()
		if got, err := readAt(fd); got != "gho_token_A" || err != nil {
			t.Fatalf("first read = %q, %v", got, err)
		}
		f.set(func() { f.tokens[gA] = "gho_refreshed_and_longer" })
		f.change(t, credential.Change{GUID: gA})
		if got, _ := os.ReadFile(p); string(got) != "gho_refreshed_and_longer" {
			t.Errorf("a new open after a refresh = %q; want the new token", got)
		}
		// The old token is still valid until its refresh time: the old
		// descriptor keeps reading it, whole.
		if got, err := readAt(fd); got != "gho_token_A" || err != nil {
			t.Errorf("the held descriptor after a refresh = %q, %v; want the old token", got, err)
		}
	})
	t.Run("sign-in as someone else", func(t *testing.T) {
		fd := open()
		before, _ := readAt(fd)
		f.set(func() { f.tokens[gA] = "gho_other_account" })
		f.change(t, credential.Change{GUID: gA, Revoke: true})
		if got, err := readAt(fd); !errors.Is(err, syscall.ESTALE) {
			t.Errorf("the held descriptor after a sign-in = %q, %v (was %q); want ESTALE", got, err, before)
		}
		if got, _ := os.ReadFile(p); string(got) != "gho_other_account" {
			t.Errorf("a new open after a sign-in = %q; want the new token", got)
		}
	})
	t.Run("sign-out", func(t *testing.T) {
		fd := open()
		readAt(fd)
		f.set(func() { f.errs[gA] = credential.ErrNotSignedIn })
		f.change(t, credential.Change{GUID: gA, Revoke: true})
		if got, err := readAt(fd); !errors.Is(err, syscall.ENOKEY) {
			t.Errorf("the held descriptor after a sign-out = %q, %v; want ENOKEY", got, err)
		}
		if _, err := os.ReadFile(p); !errors.Is(err, syscall.ENOKEY) {
			t.Errorf("a new open after a sign-out = %v; want ENOKEY", err)
		}
	})
	t.Run("sign-in again", func(t *testing.T) {
		f.set(func() { f.errs[gA] = nil; f.tokens[gA] = "gho_back_again" })
		f.change(t, credential.Change{GUID: gA, Revoke: true})
		if got, err := readAt(open()); got != "gho_back_again" || err != nil {
			t.Errorf("read after a sign-in = %q, %v; want the new token", got, err)
		}
	})
}

// TestSignOutReachesARevivedVersion: a version past its refresh time
// that a held file descriptor brought back (the same token, kept longer)
// is dropped by a later sign-out, even when its first retirement had to
// wait for a lookup in the same directory.
func TestSignOutReachesARevivedVersion(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("lookup under way=%v", busy), func(t *testing.T) {
			f := newFake()
			f.set(func() { f.expiry[gA], f.keep = time.Time{}, 700*time.Millisecond })
			dir := mount(t, f)
			p := filepath.Join(dir, gA, "access_token")
			fd, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			start := time.Now()
			if _, err := readAt(fd); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			if busy {
				// A lookup that waits on the source holds the
				// directory's lock, which the retirement's NotifyEntry
				// needs.
				f.mu.Lock()
				f.peekNo, f.tokenDelay = true, 2*time.Second
				f.mu.Unlock()
				wg.Go(func() { os.Stat(filepath.Join(dir, gA, "expiry")) })
				time.Sleep(100 * time.Millisecond)
			}
			f.mu.Lock()
			f.keep = time.Hour
			f.mu.Unlock()
			time.Sleep(time.Until(start.Add(900 * time.Millisecond)))
			if got, err := readAt(fd); err != nil || got != "gho_token_A" {
				t.Fatalf("read after the refresh time = %q, %v; want the same token again", got, err)
			}
			wg.Wait()
			f.set(func() { f.errs[gA] = credential.ErrNotSignedIn })
			f.change(t, credential.Change{GUID: gA, Revoke: true})
			if got, err := readAt(fd); !errors.Is(err, syscall.ENOKEY) {
				t.Errorf("the held file after the sign-out = %q, %v; want ENOKEY", got, err)
			}
		})
	}
}

// TestMetaBuiltAcrossAChangeIsNotKept: a meta.json built while a change
// came is served once, not kept.
func TestMetaBuiltAcrossAChangeIsNotKept(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "meta.json")
	os.Stat(filepath.Join(dir, gA))
	f.mu.Lock()
	f.integDelay = 500 * time.Millisecond
	f.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { os.ReadFile(p) })
	time.Sleep(100 * time.Millisecond)
	f.set(func() { f.list[0].Status = credential.StatusNotSignedIn })
	f.change(t, credential.Change{GUID: gA, Revoke: true})
	wg.Wait()
	var m credential.Integration
	if b, err := os.ReadFile(p); err != nil || json.Unmarshal(b, &m) != nil || m.Status != credential.StatusNotSignedIn {
		t.Errorf("meta.json after the change = %+v, %v; want status not_signed_in", m, err)
	}
}

// readAt reads fd from its start, as a program that keeps a file
// descriptor open reads it again.
func readAt(fd *os.File) (string, error) {
	buf := make([]byte, 100)
	n, err := fd.ReadAt(buf, 0)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return string(buf[:n]), err
}

// TestKernelServesHotReads: once a token has been read, further opens and
// reads are served by the kernel without reaching the filesystem, and
// stat never asks for a token.
func TestKernelServesHotReads(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "access_token")
	if got, err := os.ReadFile(p); err != nil || string(got) != "gho_token_A" {
		t.Fatalf("first read = %q, %v", got, err)
	}
	if n := f.touches.Load(); n != 1 {
		t.Errorf("the first read told the broker %d times; want once", n)
	}
	peeks, touches, calls := f.peeks.Load(), f.touches.Load(), f.calls.Load()
	for range 100 {
		if got, err := os.ReadFile(p); err != nil || string(got) != "gho_token_A" {
			t.Fatalf("hot read = %q, %v", got, err)
		}
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	if d := [3]int64{f.peeks.Load() - peeks, f.touches.Load() - touches, f.calls.Load() - calls}; d != [3]int64{} {
		t.Errorf("100 hot reads made %d lookups, %d reads and %d token calls reach the filesystem; want none", d[0], d[1], d[2])
	}
}

// TestNothingKeptWhileUnwatched: while the source cannot report changes
// (a session's event stream is down), every read reaches the filesystem;
// once it can again, the kernel keeps tokens again.
func TestNothingKeptWhileUnwatched(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "access_token")
	reach := func() int64 {
		before := f.peeks.Load() + f.touches.Load() + f.calls.Load()
		for range 10 {
			if got, err := os.ReadFile(p); err != nil || string(got) != "gho_token_A" {
				t.Fatalf("read = %q, %v", got, err)
			}
		}
		return f.peeks.Load() + f.touches.Load() + f.calls.Load() - before
	}
	reach()
	if n := reach(); n != 0 {
		t.Errorf("hot reads reached the filesystem %d times; want none", n)
	}
	f.change(t, credential.Change{Revoke: true, Unwatched: true})
	if n := reach(); n < 10 {
		t.Errorf("10 reads while unwatched reached the filesystem %d times; want every one", n)
	}
	f.change(t, credential.Change{Revoke: true})
	reach()
	if n := reach(); n != 0 {
		t.Errorf("hot reads once watched again reached the filesystem %d times; want none", n)
	}
}

// TestNeverPastRefreshTime: the kernel keeps a token only until the time
// the broker gives; the first read after it asks again. The kernel keeps
// the name until just before the broker hands the next token out (a
// second before the refresh time, for this token), so that the switch
// costs a few opens that ask the source, not every open of the last
// stretch, and no open after the switch gets the old token from the
// kernel (another mount's reader may have the new one already).
func TestNeverPastRefreshTime(t *testing.T) {
	f := newFake()
	due := time.Now().Add(1500 * time.Millisecond)
	switchAt := due.Add(-time.Second) // the fake's hand-out time
	f.set(func() { f.due, f.next = due, "gho_token_B" })
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "access_token")
	if got, err := os.ReadFile(p); err != nil || string(got) != "gho_token_A" {
		t.Fatalf("first read = %q, %v", got, err)
	}
	var old, fresh int
	var firstAsk time.Time // when the first read that asked the source began
	asked := f.peeks.Load() + f.calls.Load()
	for time.Now().Before(due.Add(time.Second)) {
		start := time.Now()
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if n := f.peeks.Load() + f.calls.Load(); n != asked && firstAsk.IsZero() {
			firstAsk = start
		}
		switch string(got) {
		case "gho_token_A":
			old++
			if start.After(switchAt) {
				t.Fatalf("read the old token %v after the broker handed out the next", start.Sub(switchAt))
			}
		case "gho_token_B":
			fresh++
		default:
			t.Fatalf("read %q", got)
		}
	}
	if old == 0 || fresh == 0 {
		t.Errorf("read the old token %d times and the new one %d times; want both", old, fresh)
	}
	// The filesystem ends the name 25 ms before the switch (the kernel's
	// tick slack); 50 ms more for the machine.
	if early := switchAt.Sub(firstAsk); early > 75*time.Millisecond {
		t.Errorf("reads asked the source from %v before the switch on; want from about 25ms before (the kernel keeps the name until then)", early)
	}
}

// TestNoTornReads: with a new token, of another length, every few
// milliseconds and readers spinning, every read returns one token whole.
// A refresh makes no reader fail; a sign-in as someone else may make a
// read that raced with it fail with ESTALE (its open came before the
// change, its read after), never return a mix.
func TestNoTornReads(t *testing.T) {
	for _, revoke := range []bool{false, true} {
		t.Run(fmt.Sprintf("revoke=%v", revoke), func(t *testing.T) {
			f := newFake()
			dir := mount(t, f)
			p := filepath.Join(dir, gA, "access_token")
			valid := map[string]bool{}
			var versions []string
			for i := range 40 {
				v := fmt.Sprintf("gho_%d_%s", i, strings.Repeat("xyz"[i%3:i%3+1], 10+(i*7)%50))
				valid[v] = true
				versions = append(versions, v)
			}
			f.set(func() { f.tokens[gA] = versions[0] })
			var reads, torn, stale atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						got, err := os.ReadFile(p)
						switch {
						case revoke && errors.Is(err, syscall.ESTALE):
							stale.Add(1)
							continue
						case err != nil:
							t.Error(err)
							return
						}
						reads.Add(1)
						if !valid[string(got)] {
							torn.Add(1)
						}
					}
				})
			}
			for _, v := range versions[1:] {
				time.Sleep(20 * time.Millisecond)
				f.set(func() { f.tokens[gA] = v })
				f.change(t, credential.Change{GUID: gA, Revoke: revoke})
			}
			close(stop)
			wg.Wait()
			t.Logf("%d reads, %d ESTALE", reads.Load(), stale.Load())
			if torn.Load() != 0 || reads.Load() < 100 {
				t.Errorf("%d torn reads in %d; want none in at least 100", torn.Load(), reads.Load())
			}
		})
	}
}

// TestReadOnly: every write-open and every write-like operation fails
// with EROFS (or EPERM where the kernel decides first) and changes
// nothing, whatever the state of the credential: the mount is read-only,
// and a signed-out token is no reason to say otherwise.
func TestReadOnly(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	openFlags := func(name string, flags int) func() error {
		return func() error {
			fd, err := os.OpenFile(name, flags, 0o600)
			if err == nil {
				fd.Close()
			}
			return err
		}
	}
	for _, state := range []struct {
		name string
		err  error
	}{
		{"signed in", nil},
		{"not signed in", credential.ErrNotSignedIn},
		{"expired", fmt.Errorf("x: %w", credential.ErrExpired)},
		{"unavailable", fmt.Errorf("x: %w", credential.ErrUnavailable)},
	} {
		f.set(func() { f.errs[gA] = state.err })
		f.change(t, credential.Change{GUID: gA, Revoke: true})
		for _, file := range []string{"access_token", "expiry", "meta.json"} {
			p := filepath.Join(dir, gA, file)
			for _, tc := range []struct {
				name string
				op   func() error
			}{
				{"O_WRONLY", openFlags(p, os.O_WRONLY)},
				{"O_RDWR", openFlags(p, os.O_RDWR)},
				{"O_RDONLY|O_TRUNC", openFlags(p, os.O_RDONLY|os.O_TRUNC)},
				{"O_WRONLY|O_APPEND", openFlags(p, os.O_WRONLY|os.O_APPEND)},
				{"O_WRONLY|O_CREAT", openFlags(p, os.O_WRONLY|os.O_CREATE)},
				{"O_RDWR|O_CREAT|O_TRUNC", openFlags(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC)},
				{"truncate", func() error { return os.Truncate(p, 0) }},
				{"unlink", func() error { return os.Remove(p) }},
				{"rename", func() error { return os.Rename(p, filepath.Join(dir, gA, "t2")) }},
				{"chmod", func() error { return os.Chmod(p, 0o644) }},
				{"chown", func() error { return os.Chown(p, 1, 1) }},
				{"utimes", func() error { return os.Chtimes(p, time.Now(), time.Now()) }},
				{"setxattr", func() error { return syscall.Setxattr(p, "user.x", []byte("1"), 0) }},
				{"removexattr", func() error { return syscall.Removexattr(p, "user.x") }},
			} {
				t.Run(state.name+"/"+file+"/"+tc.name, func(t *testing.T) {
					if err := tc.op(); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) {
						t.Errorf("%s of %s = %v; want EROFS or EPERM", tc.name, file, err)
					}
				})
			}
		}
	}
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(dir, gA, "new"), nil, 0o600) }},
		{"create in root", func() error { return os.WriteFile(filepath.Join(dir, "new"), nil, 0o600) }},
		{"rmdir", func() error { return os.Remove(filepath.Join(dir, gA)) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(dir, "d"), 0o700) }},
		{"symlink", func() error { return os.Symlink(gA, filepath.Join(dir, "by-name", "X")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) {
				t.Errorf("%s = %v; want EROFS or EPERM", tc.name, err)
			}
		})
	}
	f.set(func() { f.errs[gA] = nil })
	f.change(t, credential.Change{GUID: gA, Revoke: true})
	tok := filepath.Join(dir, gA, "access_token")
	got, err := os.ReadFile(tok)
	st, _ := os.Stat(tok)
	if err != nil || string(got) != "gho_token_A" || st.Mode() != 0o400 {
		t.Errorf("after the attempts: %q, %v, mode %v; want it unchanged", got, err, st.Mode())
	}
	es, _ := os.ReadDir(filepath.Join(dir, gA))
	if len(es) != 6 {
		t.Errorf("integration dir has %d entries; want 6", len(es))
	}
}

func TestIntegrationsComeAndGo(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	const gC = "c0c0c0c0-1111-4222-8333-444455556666"
	f.set(func() {
		f.list = append(f.list, credential.Integration{GUID: gC, Name: "Local"})
		f.tokens[gC] = "local-token"
	})
	if got, err := os.ReadFile(filepath.Join(dir, "by-name", "Local", "access_token")); err != nil || string(got) != "local-token" {
		t.Errorf("added integration: %q, %v", got, err)
	}
	f.set(func() { f.list = f.list[:1] })
	f.change(t, credential.Change{Revoke: true})
	if _, err := os.ReadFile(filepath.Join(dir, gC, "access_token")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("removed integration: %v; want ENOENT", err)
	}
	if _, err := os.ReadFile(filepath.Join(dir, gB, "meta.json")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("removed integration meta: %v; want ENOENT", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "by-name", "Local")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("removed integration's link: %v; want ENOENT", err)
	}
	es, err := os.ReadDir(dir)
	if err != nil || len(es) != 3 {
		t.Errorf("ls after the removal = %d entries, %v; want by-name, integrations.json and one guid", len(es), err)
	}
	var list []credential.Integration
	if raw, err := os.ReadFile(filepath.Join(dir, "integrations.json")); err != nil || json.Unmarshal(raw, &list) != nil || len(list) != 1 {
		t.Errorf("integrations.json after the removal = %d entries, %v; want 1", len(list), err)
	}
}

// TestInterrupt shows that a reader blocked in open (where a token that
// is due is refreshed) is released with EINTR by a signal, and that the
// filesystem keeps serving afterwards.
func TestInterrupt(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	f := newFake()
	f.set(func() { f.keep = 0 }) // every open asks for the token
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "access_token")
	os.ReadFile(p)
	f.set(func() { f.block = true })
	script := `
import errno, signal, sys
class Interrupted(Exception): pass
def on_alarm(sig, frame): raise Interrupted()
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    open(sys.argv[1]).read()
    print("read")
except Interrupted:
    print("interrupted")
`
	out, err := exec.Command(py, "-c", script, p).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "interrupted" {
		t.Errorf("python open under SIGALRM = %q, %v; want interrupted", out, err)
	}
	f.set(func() { f.block = false })
	if got, err := os.ReadFile(p); err != nil || string(got) != "gho_token_A" {
		t.Errorf("after the interrupt: %q, %v", got, err)
	}
}

func TestOtherUserIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a command as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	dir := mount(t, newFake())
	os.Chmod(filepath.Dir(dir), 0o755)
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(dir, gA, "access_token")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("cat as nobody = %q, %v; want Permission denied", out, err)
	}
}

func TestPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	dir := mount(t, newFake())
	script := `
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
a = (d / "by-name" / "GitHub" / "access_token").read_text()
b = open(d / "` + gA + `" / "access_token").read()
idx = json.load(open(d / "integrations.json"))
try:
    (d / "` + gB + `" / "access_token").read_text()
    err = "none"
except OSError as e:
    err = e.strerror
print(a, b, [i["name"] for i in idx], err, sep="|")
`
	out, err := exec.Command(py, "-c", script, dir).CombinedOutput()
	if want := "gho_token_A|gho_token_A|['GitHub', 'Google Drive']|Required key not available\n"; err != nil || string(out) != want {
		t.Errorf("python = %q, %v; want %q", out, err, want)
	}
}

// TestInodesComeFromTheRegistry: every directory and link takes its
// inode number from a small id the mount gives each guid, not from a hash
// of its name, and every file version gets a number of its own above
// them, so no two nodes can share one.
func TestInodesComeFromTheRegistry(t *testing.T) {
	f := newFake()
	f.set(func() {
		f.errs[gB], f.tokens[gB] = nil, "token_B"
		for i := 0; i < 200; i++ {
			g := fmt.Sprintf("c0c0c0c0-1111-4222-8333-%012d", i)
			f.list = append(f.list, credential.Integration{GUID: g, Name: fmt.Sprintf("N%d", i)})
			f.tokens[g] = "token_" + g
		}
	})
	dir := mount(t, f)
	seen := map[uint64]string{}
	for _, in := range f.list {
		for _, p := range []string{in.GUID, in.GUID + "/access_token", in.GUID + "/expiry", in.GUID + "/meta.json", "by-name/" + in.Name} {
			st, err := os.Lstat(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			ino := st.Sys().(*syscall.Stat_t).Ino
			if other, dup := seen[ino]; dup {
				t.Fatalf("%s and %s share inode %d", p, other, ino)
			}
			file := st.Mode().IsRegular()
			if !file && ino >= 1<<32 || file && ino < 1<<40 {
				t.Fatalf("%s has inode %d; want a registry number (a version number for a file)", p, ino)
			}
			seen[ino] = p
		}
	}
}

// TestNoExpiry: a token that does not expire (the provider gave no
// expires_in: classic GitHub OAuth apps) has an empty expiry file, 0
// bytes by stat and by read, and its token reads as usual.
func TestNoExpiry(t *testing.T) {
	f := newFake()
	f.expiry[gA] = time.Time{}
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "expiry")
	got, err := os.ReadFile(p)
	st, serr := os.Stat(p)
	if err != nil || len(got) != 0 || serr != nil || st.Size() != 0 {
		t.Errorf("expiry of a token without one = %q (%v), size %v (%v); want empty", got, err, st, serr)
	}
	if tok, err := os.ReadFile(filepath.Join(dir, gA, "access_token")); err != nil || string(tok) != "gho_token_A" {
		t.Errorf("access_token = %q, %v", tok, err)
	}
}
