package fusefs_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/internal/fusetest"
)

// systemMount mounts a system mount whose views are fakes handing out
// "tok-UID" tokens, in a directory every user can reach, and returns it
// with the fakes made so far (by uid).
func systemMount(t *testing.T, idle time.Duration) (string, *sync.Map) {
	dir, fakes, _ := systemMountRoot(t, idle)
	return dir, fakes
}

// systemMountRoot is systemMount, with the root node.
func systemMountRoot(t *testing.T, idle time.Duration) (string, *sync.Map, interface{ Views() int }) {
	t.Helper()
	fusetest.Require(t)
	if os.Geteuid() != 0 {
		t.Skip("the system mount needs root")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is missing")
	}
	dir := filepath.Join(t.TempDir(), "oauth")
	for d := filepath.Dir(dir); d != filepath.Clean(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // other users pass through the test's directories, never the temporary directory itself
	}
	var fakes sync.Map
	root := fusefs.NewSystemRoot(fusefs.SystemOptions{
		View: func(uid uint32) (fusefs.Source, uint32, error) {
			f := newFake()
			f.tokens[gA] = fmt.Sprintf("tok-%d", uid)
			fakes.Store(uid, f)
			return f, uid, nil
		},
		Timeout: 5 * time.Second,
		Context: t.Context(),
		Idle:    idle,
	})
	server, err := fusefs.MountSystem(dir, root)
	if err != nil {
		t.Fatalf("MountSystem(%s) = %v", dir, err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("Unmount(%s) = %v; detaching", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir, &fakes, root.(interface{ Views() int })
}

// as runs a command as uid (with no groups and an empty environment) and
// returns its output and error.
func as(uid int, args ...string) (string, error) {
	cmd := exec.Command("setpriv", append([]string{fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--"}, args...)...)
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSystemMountEachCallerOwnTokens: every caller reads its own token at
// the same paths, whoever read before it, and cannot enter another
// caller's view, whether that view exists yet or not. (Root can: what the
// kernel keeps of a view it serves to root, who passes every permission
// check; root is outside the threat model.)
func TestSystemMountEachCallerOwnTokens(t *testing.T) {
	dir, _ := systemMount(t, 0)
	users := []int{0, 40001, 40002}
	paths := []string{gA + "/access_token", "by-name/GitHub/access_token"}
	for round := range 3 {
		for _, uid := range users {
			for _, p := range paths {
				out, err := as(uid, "cat", filepath.Join(dir, p))
				if want := fmt.Sprintf("tok-%d", uid); err != nil || out != want {
					t.Errorf("round %d: uid %d: cat %s = %q, %v; want %q", round, uid, p, out, err, want)
				}
			}
		}
	}
	for _, tc := range []struct {
		name string
		uid  int
		path string
		want string
	}{
		{"another user's token", 40001, ".users/40002/" + gA + "/access_token", "Permission denied"},
		{"another user's view", 40001, ".users/40002", "Permission denied"},
		{"root's view", 40001, ".users/0/" + gA + "/access_token", "Permission denied"},
		{"a view nobody made yet", 40001, ".users/40003/" + gA + "/access_token", "Permission denied"},
		{"the list of views", 40001, ".users", "Permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := as(tc.uid, "cat", filepath.Join(dir, tc.path))
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("uid %d: cat %s = %q, %v; want %q", tc.uid, tc.path, out, err, tc.want)
			}
		})
	}
	// Links and the index are each caller's own.
	for _, uid := range users {
		out, err := as(uid, "readlink", filepath.Join(dir, gA))
		if want := fmt.Sprintf(".users/%d/%s\n", uid, gA); err != nil || out != want {
			t.Errorf("uid %d: readlink = %q, %v; want %q", uid, out, err, want)
		}
		out, err = as(uid, "stat", "-L", "-c", "%u %a", filepath.Join(dir, "integrations.json"))
		if want := fmt.Sprintf("%d 400\n", uid); err != nil || out != want {
			t.Errorf("uid %d: stat integrations.json = %q, %v; want %q", uid, out, err, want)
		}
	}
	// A view's times are the mount's, not when its user came.
	mounted, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := as(40001, "stat", "-c", "%.9Y", filepath.Join(dir, ".users", "40001")); err != nil || strings.TrimSpace(out) != fmt.Sprintf("%d.%09d", mounted.ModTime().Unix(), mounted.ModTime().Nanosecond()) {
		t.Errorf("the view's mtime = %q, %v; want the mount's, %v", out, err, mounted.ModTime())
	}
	if _, err := os.OpenFile(filepath.Join(dir, gA, "access_token"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("a write-open through the system mount = %v; want EROFS", err)
	}
}

// TestSystemMountDropsIdleViews: a view nobody uses is dropped, and made
// again at the next use, which gets the user's token.
func TestSystemMountDropsIdleViews(t *testing.T) {
	dir, fakes := systemMount(t, 500*time.Millisecond)
	if out, err := as(40001, "cat", filepath.Join(dir, gA, "access_token")); err != nil || out != "tok-40001" {
		t.Fatalf("cat = %q, %v", out, err)
	}
	first, _ := fakes.Load(uint32(40001))
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := as(40001, "cat", filepath.Join(dir, gA, "access_token"))
		if err != nil || out != "tok-40001" {
			t.Fatalf("cat after idling = %q, %v", out, err)
		}
		if again, _ := fakes.Load(uint32(40001)); again != first {
			break // the view was dropped and made again
		}
		if time.Now().After(deadline) {
			t.Fatal("the idle view was never dropped")
		}
		time.Sleep(700 * time.Millisecond)
	}
}

// TestSystemMountManyCallers: hundreds of distinct callers each get a
// view; idle views are dropped, so memory does not grow with every user
// who ever came.
func TestSystemMountManyCallers(t *testing.T) {
	dir, _, root := systemMountRoot(t, time.Second)
	const callers = 200
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range callers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			uid := 50000 + i
			if out, err := as(uid, "cat", filepath.Join(dir, gA, "access_token")); err != nil || out != fmt.Sprintf("tok-%d", uid) {
				t.Errorf("uid %d: cat = %q, %v", uid, out, err)
			}
		})
	}
	wg.Wait()
	if n := root.Views(); n < callers/2 {
		t.Errorf("%d views after %d callers; want about one each", n, callers)
	}
	deadline := time.Now().Add(15 * time.Second)
	for root.Views() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d views left 15 s after the last caller; want every idle one dropped", root.Views())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := as(50001, "cat", filepath.Join(dir, gA, "access_token")); err != nil || out != "tok-50001" {
		t.Errorf("a caller back after its view was dropped: %q, %v", out, err)
	}
}
