package fusefs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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

// fakeBroker serves fixed tokens and errors; it is safe for concurrent use.
type fakeBroker struct {
	mu     sync.Mutex
	list   []credential.Integration
	tokens map[string]string
	expiry map[string]time.Time
	errs   map[string]error
	block  bool // Token waits for ctx to end
}

func newFake() *fakeBroker {
	return &fakeBroker{
		list: []credential.Integration{
			{GUID: gA, Name: "GitHub", Status: credential.StatusSignedIn, Authenticated: true, Scopes: []string{"repo"}},
			{GUID: gB, Name: "Google Drive", Status: credential.StatusNotSignedIn, Scopes: []string{}},
		},
		tokens: map[string]string{gA: "gho_token_A"},
		expiry: map[string]time.Time{gA: time.Date(2026, 11, 27, 10, 15, 0, 0, time.UTC)},
		errs:   map[string]error{gB: credential.ErrNotSignedIn},
	}
}

func (f *fakeBroker) Integrations(context.Context) ([]credential.Integration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]credential.Integration(nil), f.list...), nil
}

func (f *fakeBroker) Integration(_ context.Context, id string) (credential.Integration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, in := range f.list {
		if in.GUID == id || in.Name == id {
			return in, nil
		}
	}
	return credential.Integration{}, fmt.Errorf("fake: %q: %w", id, credential.ErrNotFound)
}

func (f *fakeBroker) Token(ctx context.Context, guid string) (*credential.Token, error) {
	if _, err := f.Integration(ctx, guid); err != nil {
		return nil, err
	}
	f.mu.Lock()
	block, err, tok, exp := f.block, f.errs[guid], f.tokens[guid], f.expiry[guid]
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return credential.NewToken([]byte(tok), exp, time.Date(2026, 11, 27, 9, 15, 0, 0, time.UTC))
}

func (f *fakeBroker) set(fn func()) { f.mu.Lock(); fn(); f.mu.Unlock() }

func mount(t *testing.T, b fusefs.Source) string {
	return fusetest.Mount(t, fusefs.NewRoot(fusefs.Options{Source: b, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Timeout: 5 * time.Second}))
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
	if got := strings.Join(names(filepath.Join(dir, gA)), " "); got != "access_token expiry meta.json" {
		t.Errorf("ls guid = %q", got)
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
				// stat still works, reporting an empty file.
				if st, err := os.Stat(p); err != nil || st.Size() != 0 {
					t.Errorf("stat = %v; want success with size 0", err)
				}
			}
		})
	}
}

func TestSnapshotPerOpen(t *testing.T) {
	f := newFake()
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "access_token")
	f1, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	head := make([]byte, 4)
	if _, err := f1.Read(head); err != nil || string(head) != "gho_" {
		t.Fatalf("first read = %q, %v", head, err)
	}
	f.set(func() { f.tokens[gA] = "gho_NEW_TOKEN_longer_than_before" })
	if got, _ := os.ReadFile(p); string(got) != "gho_NEW_TOKEN_longer_than_before" {
		t.Errorf("new open = %q; want the new token", got)
	}
	rest := make([]byte, 100)
	n, _ := f1.Read(rest)
	if string(head)+string(rest[:n]) != "gho_token_A" {
		t.Errorf("earlier open read %q; want its snapshot gho_token_A", string(head)+string(rest[:n]))
	}
	if st, _ := os.Stat(p); st.Size() != int64(len("gho_NEW_TOKEN_longer_than_before")) {
		t.Errorf("stat size = %d; want the new token's length", st.Size())
	}
}

func TestReadOnly(t *testing.T) {
	dir := mount(t, newFake())
	tok := filepath.Join(dir, gA, "access_token")
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"write", func() error { return os.WriteFile(tok, []byte("x"), 0o600) }},
		{"append", func() error {
			f, err := os.OpenFile(tok, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(tok, 0) }},
		{"create", func() error { return os.WriteFile(filepath.Join(dir, gA, "new"), nil, 0o600) }},
		{"create in root", func() error { return os.WriteFile(filepath.Join(dir, "new"), nil, 0o600) }},
		{"unlink", func() error { return os.Remove(tok) }},
		{"rmdir", func() error { return os.Remove(filepath.Join(dir, gA)) }},
		{"rename", func() error { return os.Rename(tok, filepath.Join(dir, gA, "t2")) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(dir, "d"), 0o700) }},
		{"symlink", func() error { return os.Symlink(gA, filepath.Join(dir, "by-name", "X")) }},
		{"chmod", func() error { return os.Chmod(tok, 0o644) }},
		{"chown", func() error { return os.Chown(tok, 1, 1) }},
		{"utimes", func() error { return os.Chtimes(tok, time.Now(), time.Now()) }},
		{"setxattr", func() error { return syscall.Setxattr(tok, "user.x", []byte("1"), 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) {
				t.Errorf("%s = %v; want EROFS or EPERM", tc.name, err)
			}
		})
	}
	got, err := os.ReadFile(tok)
	st, _ := os.Stat(tok)
	if err != nil || string(got) != "gho_token_A" || st.Mode() != 0o400 {
		t.Errorf("after the attempts: %q, %v, mode %v; want it unchanged", got, err, st.Mode())
	}
	es, _ := os.ReadDir(filepath.Join(dir, gA))
	if len(es) != 3 {
		t.Errorf("integration dir has %d entries; want 3", len(es))
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
	if _, err := os.ReadFile(filepath.Join(dir, gC, "access_token")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("removed integration: %v; want ENOENT", err)
	}
	if _, err := os.ReadFile(filepath.Join(dir, gB, "meta.json")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("removed integration meta: %v; want ENOENT", err)
	}
}

// TestInterrupt shows that a reader blocked in open is released with EINTR
// by a signal, and that the filesystem keeps serving afterwards.
func TestInterrupt(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	f := newFake()
	dir := mount(t, f)
	p := filepath.Join(dir, gA, "access_token")
	os.ReadFile(p) // warm the lookup so the open itself blocks
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

// TestInodesComeFromTheRegistry: every node's inode number derives from a
// small id the mount gives each guid, not from a hash of its name, so no
// two nodes can share one.
func TestInodesComeFromTheRegistry(t *testing.T) {
	f := newFake()
	f.set(func() {
		for i := 0; i < 200; i++ {
			f.list = append(f.list, credential.Integration{GUID: fmt.Sprintf("c0c0c0c0-1111-4222-8333-%012d", i), Name: fmt.Sprintf("N%d", i)})
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
			if ino >= 1<<32 {
				t.Fatalf("%s has inode %d; want a registry number, not a hash", p, ino)
			}
			seen[ino] = p
		}
	}
}
