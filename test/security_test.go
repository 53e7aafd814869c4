package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

// The tests in this file play a hostile local user, as a security review
// did: a root broker daemon, a victim and an attacker, each a real Unix
// user. Each test reproduces one move of the review and shows it fails.

// secEnv is a root broker daemon in a directory every user can traverse,
// with the oauthfs binary and the attacker's script beside it, and two
// users: the victim and mallory.
type secEnv struct {
	*daemonEnv
	top      string
	bin      string
	attacker string
	victim   unixUser
	mallory  unixUser
}

var userSeq int

func newSecEnv(t *testing.T) *secEnv {
	t.Helper()
	requireE2E(t, os.Geteuid() == 0, "root (to create users)")
	for _, tool := range []string{"useradd", "setpriv", "curl", "prlimit"} {
		_, err := exec.LookPath(tool)
		requireE2E(t, err == nil, tool)
	}
	_, err := os.Stat("/usr/bin/python3")
	requireE2E(t, err == nil, "/usr/bin/python3")
	fusetest.Require(t)
	top, err := os.MkdirTemp("", "oauthfs-sec")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(top, 0o755)
	t.Cleanup(func() { os.RemoveAll(top) })
	e := &secEnv{top: top, bin: filepath.Join(top, "oauthfs"), attacker: filepath.Join(top, "attacker.py")}
	for src, dst := range map[string]string{binary: e.bin, "testdata/attacker.py": e.attacker} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(dst, data, 0o755)
	}
	userSeq++
	e.victim = addUser(t, fmt.Sprintf("oafs-v%d-%d", os.Getpid()%10000, userSeq))
	e.mallory = addUser(t, fmt.Sprintf("oafs-m%d-%d", os.Getpid()%10000, userSeq))
	p := localprovider.New()
	t.Cleanup(p.Close)
	e.daemonEnv = &daemonEnv{cliEnv: &cliEnv{p: p, dir: top, cfg: filepath.Join(top, "config.toml"), socket: filepath.Join(top, "run", "broker.sock")},
		state: filepath.Join(top, "state")}
	e.writeConfig(t, "Test")
	return e
}

// py starts the attacker's script as u.
func (e *secEnv) py(t *testing.T, u unixUser, args ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	cmd := u.as(context.Background(), "/usr/bin/python3", append([]string{e.attacker}, args...)...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, out
}

// startBrokerWith runs the daemon as root under a wrapper (prlimit and the
// like) and waits until it listens.
func (e *secEnv) startBrokerWith(t *testing.T, wrapper ...string) *proc {
	t.Helper()
	args := append(wrapper, binary, "broker", "--config", e.cfg, "--log-level", "debug")
	return startProc(t, exec.Command(args[0], args[1:]...), syscall.SIGTERM, "",
		func(p *proc) bool { return strings.Contains(p.stderr.String(), "broker listening") })
}

// apiAs calls the session socket with curl as u.
func (e *secEnv) apiAs(t *testing.T, u unixUser, method, path, body string) string {
	t.Helper()
	args := []string{"-s", "-m", "20", "--unix-socket", e.socket, "-X", method}
	if body != "" {
		args = append(args, "-d", body)
	}
	out, _ := u.run(t, "curl", append(args, "http://oauthfs"+path)...)
	return out
}

// TestSecLoginLinkNeverOnACommandLine: a user polling every process's
// command line and environment must not see the secret sign-in link, and
// the page handed to the browser is the victim's alone.
func TestSecLoginLinkNeverOnACommandLine(t *testing.T) {
	e := newSecEnv(t)
	e.startBroker(t)
	_, scan := e.py(t, e.mallory, "scan-proc", "6", "start?state=")
	browserLog := filepath.Join(e.top, "browser-args")
	slow := filepath.Join(e.top, "slow-browser")
	os.WriteFile(slow, []byte("#!/bin/sh\necho \"$@\" > "+browserLog+"\nsleep 4\n"), 0o755)
	os.WriteFile(browserLog, nil, 0o666)
	os.Chmod(browserLog, 0o666)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.victim.as(ctx, e.bin, "login", "--broker", e.socket, "Test")
	cmd.Env = append(cmd.Env, "BROWSER="+slow)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Scan()
	link := sc.Text()
	if !strings.Contains(link, "/start?state=") {
		t.Fatalf("login's first line = %q; want the link", link)
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(browserLog); return len(b) > 0 })
	arg, _ := os.ReadFile(browserLog)
	page := strings.TrimPrefix(strings.TrimSpace(string(arg)), "file://")
	if strings.Contains(string(arg), "state=") || !strings.HasPrefix(string(arg), "file:///") {
		t.Errorf("the browser got %q; want a file:// page, never the link", arg)
	}
	if st, err := os.Stat(page); err != nil || st.Mode().Perm() != 0o600 || int(st.Sys().(*syscall.Stat_t).Uid) != e.victim.uid {
		t.Errorf("the forwarding page %s: %v; want the victim's, mode 0600", page, err)
	}
	if got, err := e.mallory.run(t, "cat", page); err == nil || strings.Contains(got, "state=") {
		t.Errorf("mallory read the forwarding page: %q", got)
	}
	// Let the scan run its course while login waits.
	waitFor(t, func() bool { return strings.Contains(scan.String(), "DONE") })
	if strings.Contains(scan.String(), "HIT") {
		t.Errorf("mallory found the sign-in link in /proc:\n%s", scan)
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if _, err := os.Stat(page); err == nil {
		t.Errorf("the forwarding page %s outlived login", page)
	}
}

// TestSecLinkOpenedFirstByAnotherFailsTheSignIn: when someone else opens a
// sign-in link first, the owner's browser is refused and the waiting
// command reports a failed sign-in instead of completing it for the
// intruder.
func TestSecLinkOpenedFirstByAnotherFailsTheSignIn(t *testing.T) {
	e := newSecEnv(t)
	e.startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.victim.as(ctx, e.bin, "login", "--no-browser", "--broker", e.socket, "Test")
	out, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Start()
	sc := bufio.NewScanner(out)
	sc.Scan()
	link := sc.Text()
	// Mallory got hold of the link and opens it first.
	jar := filepath.Join(e.top, "mallory.jar")
	os.WriteFile(jar, nil, 0o666)
	os.Chmod(jar, 0o666)
	page, _ := e.mallory.run(t, "curl", "-s", "-c", jar, link)
	if !strings.Contains(page, "for user "+e.victim.name) {
		t.Errorf("the start page does not name the victim:\n%s", page)
	}
	// The victim's own browser comes second.
	code, body := browse0(t, link)
	if code != 400 || !strings.Contains(body, "already opened in another browser") {
		t.Errorf("the owner's browser after mallory's = %d %q; want it refused", code, body)
	}
	err := cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "second browser") {
		t.Errorf("login = %v, %q; want a failed sign-in naming the second browser", err, stderr.String())
	}
	if strings.Contains(e.apiAs(t, e.victim, "GET", "/v1/integrations/Test", ""), `"signed_in"`) {
		t.Errorf("the victim is signed in after the intrusion")
	}
}

// TestSecPhishingLinkNamesItsOwner: a link mallory started and sent to
// the victim says, before anything happens, that the tokens go to
// mallory.
func TestSecPhishingLinkNamesItsOwner(t *testing.T) {
	e := newSecEnv(t)
	e.startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.mallory.as(ctx, e.bin, "login", "--no-browser", "--broker", e.socket, "Test")
	out, _ := cmd.StdoutPipe()
	cmd.Start()
	defer func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	sc.Scan()
	host, _ := os.Hostname()
	code, page := browse0(t, sc.Text())
	if code != 200 || !strings.Contains(page, "Sign in to Test for user "+e.mallory.name+" on host "+host) ||
		!strings.Contains(page, `method="post"`) || e.p.LastAuthorize() != nil {
		t.Errorf("mallory's link, opened by the victim = %d:\n%s\nwant a page naming mallory, with a Continue form, before any redirect", code, page)
	}
}

// TestSecFakeBrokerIsRefused: another user's socket at the predictable
// fallback path, or one whose server runs as another user, is not
// trusted: no token of theirs is printed and no link of theirs opened.
func TestSecFakeBrokerIsRefused(t *testing.T) {
	e := newSecEnv(t)
	tmp := filepath.Join(e.top, "tmp")
	os.Mkdir(tmp, 0o777)
	os.Chmod(tmp, 0o1777)
	fakeDir := filepath.Join(tmp, fmt.Sprintf("oauthfs-%d", e.victim.uid))
	if out, err := e.mallory.run(t, "mkdir", "-m", "0755", fakeDir); err != nil {
		t.Fatalf("mkdir as mallory: %v %s", err, out)
	}
	_, ready := e.py(t, e.mallory, "fake-broker", filepath.Join(fakeDir, "broker.sock"), "ATTACKER-TOKEN")
	waitFor(t, func() bool { return strings.Contains(ready.String(), "READY") })
	opened := filepath.Join(e.top, "opened")
	browser := filepath.Join(e.top, "browser")
	os.WriteFile(browser, []byte("#!/bin/sh\ntouch "+opened+"\n"), 0o755)

	run := func(env []string, args ...string) (string, string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := e.victim.as(ctx, e.bin, args...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "TMPDIR=" + tmp, "BROWSER=" + browser}, env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.Run()
		return out.String(), errb.String(), cmd.ProcessState.ExitCode()
	}
	// No XDG_RUNTIME_DIR, as under cron, su or sudo.
	for _, args := range [][]string{{"token", "Test"}, {"login", "Test"}, {"list"}} {
		out, errb, code := run(nil, args...)
		if code == 0 || strings.Contains(out, "ATTACKER") || strings.Contains(out, "attacker") || !strings.Contains(errb, fmt.Sprintf("belongs to uid %d", e.mallory.uid)) {
			t.Errorf("%v with mallory's socket at the fallback path = exit %d, %q, %q; want refused", args, code, out, errb)
		}
	}
	// A socket in a directory of the victim's own, but served by mallory.
	mine := filepath.Join(e.top, "victim-run")
	os.Mkdir(mine, 0o755)
	os.Chown(mine, e.victim.uid, e.victim.gid)
	if err := os.Rename(filepath.Join(fakeDir, "broker.sock"), filepath.Join(mine, "broker.sock")); err != nil {
		t.Fatal(err)
	}
	out, errb, code := run([]string{"OAUTHFS_BROKER=" + filepath.Join(mine, "broker.sock")}, "token", "Test")
	if code == 0 || strings.Contains(out, "ATTACKER") || !strings.Contains(errb, fmt.Sprintf("runs as uid %d", e.mallory.uid)) {
		t.Errorf("token from a socket served by mallory = exit %d, %q, %q; want refused (SO_PEERCRED)", code, out, errb)
	}
	if _, err := os.Stat(opened); err == nil {
		t.Errorf("a browser was opened for a fake broker's link")
	}
}

// TestSecSilentSessionsCannotStallChanges: event streams that never
// acknowledge hold up their user's changes for about two seconds at most,
// and another user's silent streams hold up neither a reload nor a
// shutdown.
func TestSecSilentSessionsCannotStallChanges(t *testing.T) {
	e := newSecEnv(t)
	br := e.startBroker(t)
	_, ready := e.py(t, e.mallory, "never-ack", e.socket, "2")
	waitFor(t, func() bool { return strings.Contains(ready.String(), "READY") })
	start := time.Now()
	out := e.apiAs(t, e.mallory, "PUT", "/v1/integrations/Test/credentials", `{"access_token":"x"}`)
	if took := time.Since(start); !strings.Contains(out, `"signed_in"`) || took > 10*time.Second {
		t.Errorf("PUT with two silent streams took %v: %q; want done within seconds", took, out)
	}
	_, ready2 := e.py(t, e.mallory, "never-ack", e.socket, "2")
	waitFor(t, func() bool { return strings.Contains(ready2.String(), "READY") })
	br.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(br.stderr.String(), "configuration reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("reload held up by another user's silent streams:\n%s", br.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	br.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-br.done:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM ignored while silent streams are connected")
	}
}

// TestSecConnectionFloodLeavesOthersWorking: one user holding thousands of
// idle connections cannot take the file descriptors other users' reads
// need.
func TestSecConnectionFloodLeavesOthersWorking(t *testing.T) {
	e := newSecEnv(t)
	e.startBrokerWith(t, "prlimit", "--nofile=700:700", "--")
	at, _, _ := e.p.Grant()
	e.apiAs(t, e.victim, "PUT", "/v1/integrations/Test/credentials", fmt.Sprintf(`{"access_token":%q}`, at))
	_, flood := e.py(t, e.mallory, "flood", e.socket, "2000")
	waitFor(t, func() bool { return strings.Contains(flood.String(), "OPEN") })
	n, _ := strconv.Atoi(strings.Fields(flood.String())[1])
	if n > 256 {
		t.Errorf("mallory holds %d connections; want at most 256", n)
	}
	for i := 0; i < 20; i++ {
		out, err := e.victim.run(t, e.bin, "token", "--broker", e.socket, "Test")
		if err != nil || out != at {
			t.Fatalf("the victim's token during the flood = %q, %v", out, err)
		}
	}
}

// TestSecSignInServerClosesIdleConnections: connections to the sign-in
// web server that send nothing, or that went idle after a request, are
// closed.
func TestSecSignInServerClosesIdleConnections(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t)
	e.startMount(t)
	addr := mustRead(t, e.cfg, `listen = "`)
	for _, tc := range []struct {
		name  string
		first string
	}{
		{"silent", ""},
		{"idle after a request", "GET /start?state=x HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.first)
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			start := time.Now()
			_, err = io.Copy(io.Discard, c) // the answer, if any, then EOF when the server closes
			if err != nil || time.Since(start) > 40*time.Second {
				t.Errorf("the connection stayed open %v (%v); want it closed by the server's timeouts", time.Since(start), err)
			}
		})
	}
}

// TestSecSignInFloodLeavesOthersWorking: one user starting and cancelling
// sign-ins without end cannot stop another user from signing in.
func TestSecSignInFloodLeavesOthersWorking(t *testing.T) {
	e := newSecEnv(t)
	e.startBroker(t)
	_, out := e.py(t, e.mallory, "signins", e.socket, "1100", "Test")
	waitFor(t, func() bool { return strings.Contains(out.String(), "}") })
	if !strings.Contains(out.String(), "login_id") {
		t.Errorf("mallory's 1,100th sign-in = %q; finished sign-ins must free their slot", out)
	}
	if got := e.apiAs(t, e.victim, "POST", "/v1/integrations/Test/login", ""); !strings.Contains(got, "login_id") {
		t.Errorf("the victim's sign-in after the flood = %q", got)
	}
}

// TestSecPlantedStateDirIsRefused: a state directory another user created
// (with a key and store of their choosing) is refused by name.
func TestSecPlantedStateDirIsRefused(t *testing.T) {
	e := newSecEnv(t)
	shared := filepath.Join(e.top, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o1777)
	planted := filepath.Join(shared, "state")
	e.mallory.run(t, "mkdir", "-m", "0700", planted)
	e.mallory.run(t, "sh", "-c", "printf '%064d\\n' 0 > "+planted+"/key && chmod 600 "+planted+"/key")
	home := filepath.Join(e.top, "victim-home")
	os.Mkdir(home, 0o700)
	mnt := filepath.Join(home, "oauth")
	os.Mkdir(mnt, 0o700)
	cfg := filepath.Join(home, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[broker]\nsocket = %q\nlisten = %q\nstate_dir = %q\n[[integration]]\nname = \"Test\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauth_url = \"%s/a\"\ntoken_url = \"%s/t\"\n",
		filepath.Join(home, "run", "broker.sock"), freeAddr(t), planted, e.p.URL, e.p.URL)), 0o600)
	exec.Command("chown", "-R", fmt.Sprintf("%d:%d", e.victim.uid, e.victim.gid), home).Run()
	out, err := e.victim.run(t, e.bin, "mount", "--config", cfg, mnt)
	if err == nil || !strings.Contains(out, "state_dir "+planted) || !strings.Contains(out, fmt.Sprintf("belongs to uid %d", e.mallory.uid)) {
		t.Errorf("mount with mallory's state_dir = %v:\n%s\nwant it refused, naming the directory and its owner", err, out)
	}
	if isMounted(mnt) {
		exec.Command("umount", "-l", mnt).Run()
		t.Error("the victim's mount came up on a planted state_dir")
	}
}

// TestSecDevLockIgnoresPlantedLinks: symlinks another user left where
// 'oauthfs dev' keeps its lock cannot make it write to a victim's file.
func TestSecDevLockIgnoresPlantedLinks(t *testing.T) {
	e := newSecEnv(t)
	tmp := filepath.Join(e.top, "tmp")
	os.Mkdir(tmp, 0o777)
	os.Chmod(tmp, 0o1777)
	precious := filepath.Join(e.top, "precious")
	os.WriteFile(precious, []byte("do not truncate\n"), 0o600)
	// The old lock path, and the private directory, both prepared by mallory.
	e.mallory.run(t, "ln", "-s", precious, filepath.Join(tmp, "oauthfs-dev-0.lock"))
	e.mallory.run(t, "mkdir", "-m", "0755", filepath.Join(tmp, "oauthfs-0"))
	e.mallory.run(t, "ln", "-s", precious, filepath.Join(tmp, "oauthfs-0", "dev.lock"))
	mnt := filepath.Join(e.top, "devmnt")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "dev", mnt)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/root", "TMPDIR=" + tmp}
	out, err := cmd.CombinedOutput()
	if isMounted(mnt) {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("belongs to uid %d", e.mallory.uid)) {
		t.Errorf("dev with mallory's runtime directory = %v:\n%s\nwant it refused", err, out)
	}
	if b, _ := os.ReadFile(precious); string(b) != "do not truncate\n" {
		t.Errorf("the victim's file became %q", b)
	}
}

// TestSecEscapesNeverReachTheTerminal: a callback whose error carries
// terminal escapes is printed without them.
func TestSecEscapesNeverReachTheTerminal(t *testing.T) {
	e := newSecEnv(t)
	e.startBroker(t)
	e.p.SetDenyWith("access_denied\x1b]0;pwned\x07\x1b[2J", "no\x1b[31m way\u202e")
	cmd := exec.Command(binary, "login", "--no-browser", "--broker", e.socket, "Test")
	out, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Start()
	sc := bufio.NewScanner(out)
	sc.Scan()
	code, page := browse(t, sc.Text())
	cmd.Wait()
	if code != 403 || strings.ContainsAny(page, "\x1b\x07") {
		t.Errorf("callback page = %d %q", code, page)
	}
	if s := stderr.String(); strings.ContainsAny(s, "\x1b\x07\u202e") || !strings.Contains(s, "access_denied") {
		t.Errorf("login's stderr = %q; want the reason without control characters", s)
	}
}

// TestSecSessionMountIsNotDumpable: another process of the same user
// cannot read a mount's memory or environment.
func TestSecSessionMountIsNotDumpable(t *testing.T) {
	e := newSecEnv(t)
	fuseForUsers(t)
	e.startBroker(t)
	mnt := filepath.Join(e.top, "victim-mnt")
	os.Mkdir(mnt, 0o700)
	os.Chown(mnt, e.victim.uid, e.victim.gid)
	cmd := e.victim.as(context.Background(), e.bin, "mount", "--broker", e.socket, mnt)
	startProc(t, cmd, syscall.SIGTERM, mnt, func(*proc) bool { return isMounted(mnt) })
	for _, f := range []string{"environ", "mem"} {
		out, err := e.victim.run(t, "head", "-c", "1", fmt.Sprintf("/proc/%d/%s", cmd.Process.Pid, f))
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("the victim's own shell reading its mount's /proc/PID/%s = %v, %q; want Permission denied", f, err, out)
		}
	}
}

// TestSecNoTokenCopiesLinger scans the memory of the broker daemon and of a
// session mount for a canary token a few seconds after it was imported
// and read: every path it took keeps it in locked buffers that are wiped
// after use.
func TestSecNoTokenCopiesLinger(t *testing.T) {
	e := newSecEnv(t)
	br := e.startBroker(t)
	mnt := filepath.Join(e.top, "mnt")
	os.Mkdir(mnt, 0o700)
	m := startProc(t, exec.Command(binary, "mount", "--broker", e.socket, mnt), syscall.SIGTERM, mnt, func(*proc) bool { return isMounted(mnt) })
	canary := "CANARY-linger-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-token"
	code, body := e.api(t, "PUT", "/v1/integrations/Test/credentials", fmt.Sprintf(`{"access_token":%q,"expires_in":3600}`, canary))
	if code != 200 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	for i := 0; i < 5; i++ {
		if b, err := os.ReadFile(filepath.Join(mnt, "by-name", "Test", "access_token")); err != nil || string(b) != canary {
			t.Fatalf("read = %q, %v", b, err)
		}
	}
	if out, _, code := e.oauthfs(t, "token", "Test"); code != 0 || out != canary {
		t.Fatalf("token = %q (exit %d)", out, code)
	}
	time.Sleep(3 * time.Second) // PlainIdle, and then some
	for name, pid := range map[string]int{"broker daemon": br.cmd.Process.Pid, "session mount": m.cmd.Process.Pid} {
		if n := countInMemory(t, pid, canary); n != 0 {
			t.Errorf("the %s holds %d copies of the token after use; want none", name, n)
		}
	}
}

// TestSecLockedMemoryRunsOut runs the daemon with a small RLIMIT_MEMLOCK
// and no CAP_IPC_LOCK, and pushes it past the limit with concurrent token
// requests: requests over the budget fail quickly with an error, and the
// daemon neither hangs, crashes nor loses its key.
func TestSecLockedMemoryRunsOut(t *testing.T) {
	e := newSecEnv(t)
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprintf("I%d", i)
	}
	e.writeConfig(t, names...)
	br := e.startBrokerWith(t, "prlimit", "--memlock=1048576:1048576", "--", "setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--")
	if caps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", br.cmd.Process.Pid)); !bytes.Contains(caps, []byte("CapEff:\t")) {
		t.Fatal("no capability line")
	}
	for _, n := range names {
		if code, body := e.api(t, "PUT", "/v1/integrations/"+n+"/credentials", `{"access_token":"tok-`+n+`","expires_in":3600}`); code != 200 {
			t.Fatalf("PUT %s = %d %s", n, code, body)
		}
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.socket)
	}}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	start := time.Now()
	for i := 0; i < 2100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get("http://oauthfs/v1/integrations/" + names[i%len(names)] + "/token")
			k := "transport error"
			if err == nil {
				k = strconv.Itoa(resp.StatusCode)
				resp.Body.Close()
			}
			mu.Lock()
			results[k]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("2,100 requests took %v", took)
	}
	t.Logf("outcomes: %v", results)
	if results["200"] == 0 {
		t.Errorf("no request succeeded: %v", results)
	}
	if strings.Contains(br.stderr.String(), "panic") {
		t.Fatalf("the broker panicked:\n%s", br.stderr)
	}
	// The key survived: tokens still open, and saves still seal.
	for _, n := range []string{"I0", "I99"} {
		if out, _, code := e.oauthfs(t, "token", n); code != 0 || out != "tok-"+n {
			t.Errorf("token %s after the storm = %q (exit %d)", n, out, code)
		}
	}
	if code, body := e.api(t, "PUT", "/v1/integrations/I5/credentials", `{"access_token":"after"}`); code != 200 {
		t.Errorf("PUT after the storm = %d %s", code, body)
	}
	br.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-br.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the broker does not stop after the storm")
	}
}

// TestSecEmbeddedMountWithSmallMemlock stores hundreds of credentials in a
// normal user's embedded mount under a small RLIMIT_MEMLOCK: every save
// works, since encoding no longer opens every record at once.
func TestSecEmbeddedMountWithSmallMemlock(t *testing.T) {
	e := newSecEnv(t)
	fuseForUsers(t)
	home := filepath.Join(e.top, "victim-home")
	os.Mkdir(home, 0o700)
	mnt := filepath.Join(home, "oauth")
	os.Mkdir(mnt, 0o700)
	sock := filepath.Join(home, "run", "broker.sock")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "[broker]\nsocket = %q\nlisten = %q\nstate_dir = %q\n", sock, freeAddr(t), filepath.Join(home, "state"))
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&cfg, "[[integration]]\nname = \"I%d\"\nclient_id = \"c\"\nclient_secret = \"s\"\nauth_url = \"%s/a\"\ntoken_url = \"%s/t\"\n", i, e.p.URL, e.p.URL)
	}
	os.WriteFile(filepath.Join(home, "config.toml"), []byte(cfg.String()), 0o600)
	exec.Command("chown", "-R", fmt.Sprintf("%d:%d", e.victim.uid, e.victim.gid), home).Run()
	cmd := e.victim.as(context.Background(), "prlimit", "--memlock=1048576:1048576", "--", e.bin, "mount", "--config", filepath.Join(home, "config.toml"), mnt)
	m := startProc(t, cmd, syscall.SIGTERM, mnt, func(*proc) bool { return isMounted(mnt) })
	script := fmt.Sprintf(`for i in $(seq 0 299); do curl -sf -m 20 --unix-socket %s -X PUT -d "{\"access_token\":\"tok-$i\",\"refresh_token\":\"rt-$i\",\"expires_in\":3600}" http://oauthfs/v1/integrations/I$i/credentials >/dev/null || echo "FAIL $i"; done; echo END`, sock)
	out, err := e.victim.run(t, "sh", "-c", script)
	if err != nil || strings.Contains(out, "FAIL") || !strings.Contains(out, "END") {
		t.Errorf("300 saves under a 1 MiB RLIMIT_MEMLOCK: %v\n%s\n%s", err, out, m.stderr)
	}
	if got, err := e.victim.run(t, "cat", filepath.Join(mnt, "by-name", "I299", "access_token")); err != nil || got != "tok-299" {
		t.Errorf("read after the saves = %q, %v", got, err)
	}
	if strings.Contains(m.stderr.String(), "panic") {
		t.Errorf("the mount panicked:\n%s", m.stderr)
	}
}

// TestSecPlantedCookieCannotStealAnAccount replays an attack a review
// found: mallory starts a sign-in of their own, presses its Continue
// themselves, and lures the victim to a page on another loopback port that
// plants the sign-in's binding cookie (cookies do not tell ports apart)
// and sends the victim to the provider. The victim's browser comes back
// with mallory's state and cookie; the broker stores nothing and asks,
// naming mallory's user, and mallory cannot answer for the victim.
func TestSecPlantedCookieCannotStealAnAccount(t *testing.T) {
	e := newSecEnv(t)
	e.startBroker(t)
	_, out := e.py(t, e.mallory, "plant", e.socket, "Test")
	waitFor(t, func() bool { return strings.Contains(out.String(), "READY") })
	lure := strings.TrimSpace(strings.TrimPrefix(out.String(), "READY "))
	jar, _ := cookiejar.New(nil)
	victim := &http.Client{Jar: jar}
	resp, err := victim.Get(lure) // the provider approves at once, as GitHub does for an app already authorised
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "to user "+e.mallory.name) || !strings.Contains(string(page), `action="/confirm"`) {
		t.Errorf("the victim's browser after the lure = %d:\n%s\nwant the final confirmation naming mallory's user", resp.StatusCode, page)
	}
	if got := e.apiAs(t, e.mallory, "GET", "/v1/integrations/Test", ""); !strings.Contains(got, `"not_signed_in"`) {
		t.Errorf("mallory's credentials after the lure: %s; want none", got)
	}
}

// TestSecSlowBodiesCannotStarveOthers: one user announcing large request
// bodies and never sending them cannot spend the locked memory that other
// users' reads and sign-ins need.
func TestSecSlowBodiesCannotStarveOthers(t *testing.T) {
	e := newSecEnv(t)
	e.startBrokerWith(t, "prlimit", "--memlock=8388608:8388608", "--")
	at, _, _ := e.p.Grant()
	e.apiAs(t, e.victim, "PUT", "/v1/integrations/Test/credentials", fmt.Sprintf(`{"access_token":%q}`, at))
	_, ready := e.py(t, e.mallory, "slow-bodies", e.socket, "200")
	waitFor(t, func() bool { return strings.Contains(ready.String(), "READY") })
	for i := 0; i < 10; i++ {
		out, err := e.victim.run(t, e.bin, "token", "--broker", e.socket, "Test")
		if err != nil || out != at {
			t.Fatalf("the victim's token while mallory holds slow bodies = %q, %v", out, err)
		}
	}
	if got := e.apiAs(t, e.victim, "POST", "/v1/integrations/Test/login", ""); !strings.Contains(got, "login_id") {
		t.Errorf("the victim's sign-in while mallory holds slow bodies = %q", got)
	}
}

// TestSecAuditFloodIsBounded: another user asking the broker for
// integrations that do not exist, with 15 KB names and with short unknown
// ones, as fast as it can for 10 s (a review wrote 275 MB to root's audit
// log that way) makes the log grow by a bounded amount, and the victim's
// events are still written.
func TestSecAuditFloodIsBounded(t *testing.T) {
	e := newSecEnv(t)
	logFile := filepath.Join(e.top, "audit.jsonl")
	cfg, _ := os.ReadFile(e.cfg)
	os.WriteFile(e.cfg, []byte(strings.Replace(string(cfg), "[broker]\n", fmt.Sprintf("[broker]\naudit_log = %q\n", logFile), 1)), 0o644)
	e.startBroker(t)
	cmd, out := e.py(t, e.mallory, "audit-flood", e.socket, "10")
	time.Sleep(5 * time.Second)
	if got := e.apiAs(t, e.victim, "GET", "/v1/integrations/Test/token", ""); !strings.Contains(got, "not_signed_in") {
		t.Errorf("the victim's request during the flood = %q", got)
	}
	cmd.Wait()
	var sent int
	fmt.Sscanf(out.String(), "SENT %d", &sent)
	if sent < 200 {
		t.Fatalf("the flood sent %d requests; want a flood", sent)
	}
	// Half the requests come from new processes, each a distinct event;
	// more than 20 a second beyond a burst of 200 must be dropped, which
	// a machine under load may not reach in 10 s: then only the merging
	// is proven.
	wantDropped := sent/2 > 200+20*10+100
	// The summary of what was dropped, and the count of the repeats
	// merged into one line, come once the flood is over.
	var raw []byte
	var lines []string
	victim, dropped, merged := 0, false, false
	waitFor(t, func() bool {
		raw, _ = os.ReadFile(logFile)
		lines = strings.Split(strings.TrimSpace(string(raw)), "\n")
		victim, dropped, merged = 0, false, false
		for _, l := range lines {
			if strings.Contains(l, fmt.Sprintf(`"uid":%d,`, e.victim.uid)) {
				victim++
			}
			dropped = dropped || strings.Contains(l, `"event":"audit_dropped"`)
			merged = merged || strings.Contains(l, fmt.Sprintf(`"uid":%d,`, e.mallory.uid)) && strings.Contains(l, `"count":`)
		}
		return merged && (dropped || !wantDropped)
	})
	for _, l := range lines {
		if len(l) > 2048 {
			t.Errorf("an audit line of %d bytes", len(l))
		}
	}
	t.Logf("%d requests in 10 s: the audit log grew to %d bytes, %d lines (drops expected: %v, seen: %v)", sent, len(raw), len(lines), wantDropped, dropped)
	if len(raw) > 512<<10 {
		t.Errorf("the audit log grew to %d bytes from %d requests; want it bounded", len(raw), sent)
	}
	if victim != 1 {
		t.Errorf("victim's lines: %d; want the victim's request written once", victim)
	}
}
