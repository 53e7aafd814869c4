package test

// Helpers every end-to-end test shares: the binary under test, starting
// and waiting for processes, free ports, mounts, throwaway Unix users,
// and a browser made of an HTTP client.

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/pgtest"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

// binary is the oauthfs binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	if b := os.Getenv("OAUTHFS_TEST_BINARY"); b != "" {
		// A binary built elsewhere: to show that a test fails on an older
		// oauthfs, for example.
		binary = b
		os.Exit(pgtest.Run(m))
	}
	dir, err := os.MkdirTemp("", "oauthfs-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "oauthfs")
	args := []string{"build", "-o", binary}
	if os.Getenv("OAUTHFS_RACE") == "1" {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "../cmd/oauthfs")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a running oauthfs process. done is closed when it exits, after
// err is set.
type proc struct {
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	done   chan struct{}
	err    error
}

// startProc starts cmd, and waits until ready holds, failing the test if
// cmd exits first. When the test ends it stops cmd with stop (killing it
// after 10 s) and detaches mnt, if given, in case it was left mounted.
func startProc(t *testing.T, cmd *exec.Cmd, stop os.Signal, mnt string, ready func(*proc) bool) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	} else if sb, ok := cmd.Stderr.(*testutil.SyncBuffer); ok {
		p.stderr = sb
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(stop)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if mnt != "" {
			syscall.Unmount(mnt, syscall.MNT_DETACH) // only if it was left behind
		}
	})
	waitFor(t, func() bool {
		select {
		case <-p.done:
			t.Fatalf("%s exited early: %v\n%s", strings.Join(cmd.Args, " "), p.err, p.stderr)
		default:
		}
		return ready(p)
	})
	return p
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// served reports whether a live oauthfs serves dir: statfs(2) always
// reaches the server, where a stat may be answered from the kernel's
// caches of a mount whose server is gone.
func served(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == 0x65735546 // FUSE_SUPER_MAGIC
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	return strings.Contains(string(b), " "+dir+" ")
}

// requireE2E skips, or fails under OAUTHFS_REQUIRE_E2E=1 (as .ci/run
// sets), when a tool the end-to-end tests need is missing.
func requireE2E(t *testing.T, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("OAUTHFS_REQUIRE_E2E") == "1" {
		t.Fatalf("%s is required (OAUTHFS_REQUIRE_E2E=1) but missing; run make deps", what)
	}
	t.Skipf("%s missing; run make deps", what)
}

// submitForm posts the first form of the page in resp with its hidden
// fields and fields.
func submitForm(t *testing.T, c *http.Client, resp *http.Response, fields url.Values) *http.Response {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := actionRE.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no form at %s (HTTP %d):\n%s", resp.Request.URL, resp.StatusCode, body)
	}
	all := url.Values{}
	for _, h := range hiddenRE.FindAllSubmatch(body, -1) {
		all.Set(string(h[1]), html.UnescapeString(string(h[2])))
	}
	for k, v := range fields {
		all[k] = v
	}
	action, _ := url.Parse(html.UnescapeString(string(m[1])))
	// As a browser does, with the page's origin.
	req, _ := http.NewRequest("POST", resp.Request.URL.ResolveReference(action).String(), strings.NewReader(all.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", resp.Request.URL.Scheme+"://"+resp.Request.URL.Host)
	// And with the Fetch metadata of a person's click.
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	req.Header.Set("Sec-Fetch-User", "?1")
	req.Header.Set("Sec-Fetch-Dest", "document")
	next, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

// confirmSignIn says yes on oauthfs's final confirmation page in resp, if
// that is the page, and returns the page after it.
func confirmSignIn(t *testing.T, c *http.Client, resp *http.Response) *http.Response {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`action="/confirm"`)) {
		return resp
	}
	return submitForm(t, c, resp, url.Values{"action": {"confirm"}})
}

// openSignIn opens the sign-in link u in browser c and presses Continue on
// oauthfs's start page, as its user would. It returns the response after
// that: the provider's page, or, with a provider that approves at once,
// oauthfs's final confirmation page.
func openSignIn(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("sign-in link = HTTP %d:\n%s", resp.StatusCode, b)
	}
	return submitForm(t, c, resp, url.Values{"action": {"continue"}})
}

// browse opens the sign-in link u in a new browser that follows every
// redirect, presses Continue and then Yes on the final confirmation, and
// returns the last page's status and body.
func browse(t *testing.T, u string) (int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp := confirmSignIn(t, c, openSignIn(t, c, u))
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// mustRead returns the rest of the line after prefix in file.
func mustRead(t *testing.T, file, prefix string) string {
	b, _ := os.ReadFile(file)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSuffix(strings.TrimPrefix(l, prefix), `"`)
		}
	}
	t.Fatalf("%s has no %q", file, prefix)
	return ""
}

// unixUser is a throwaway account made for one test.
type unixUser struct {
	name     string
	uid, gid int
}

func addUser(t *testing.T, name string) unixUser {
	t.Helper()
	out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return unixUser{name, uid, gid}
}

// as returns a command that runs as u.
func (u unixUser) as(ctx context.Context, name string, args ...string) *exec.Cmd {
	all := append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups", name}, args...)
	cmd := exec.CommandContext(ctx, "setpriv", all...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent"}
	if d := os.Getenv("TMPDIR"); d != "" { // make test's own, so leftovers show
		cmd.Env = append(cmd.Env, "TMPDIR="+d)
	}
	return cmd
}

func (u unixUser) run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := u.as(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// fuseForUsers lets normal users open /dev/fuse for the test's duration.
// Debian's udev makes it 0666; some container hosts do not.
func fuseForUsers(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("fusermount3")
	requireE2E(t, err == nil, "fusermount3")
	if st, err := os.Stat("/dev/fuse"); err == nil && st.Mode().Perm() != 0o666 {
		os.Chmod("/dev/fuse", 0o666)
		t.Cleanup(func() { os.Chmod("/dev/fuse", st.Mode().Perm()) })
	}
}

// browse0 opens a link in a new browser and returns the first page.
func browse0(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// countInMemory counts occurrences of s in the readable memory of pid.
func countInMemory(t *testing.T, pid int, s string) int {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	n := 0
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err != nil || hi-lo > 1<<30 {
			continue
		}
		buf := make([]byte, hi-lo)
		k, _ := mem.ReadAt(buf, int64(lo))
		n += bytes.Count(buf[:k], []byte(s))
	}
	return n
}
