package test

import (
	"context"
	"encoding/json"
	"fmt"
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
)

// systemEnv is the root broker daemon serving the system mount, with two
// real users besides root.
type systemEnv struct {
	*daemonEnv
	top, mount, guid string
	a, b             unixUser
	root             unixUser
	broker           *proc
}

// newSystemEnv starts 'oauthfs broker' with [broker] mount in a
// world-traversable directory, with tokens living lifetime; testConfig is
// more of the Test integration's configuration, or "".
func newSystemEnv(t *testing.T, lifetime time.Duration, testConfig string) *systemEnv {
	t.Helper()
	requireE2E(t, os.Geteuid() == 0, "root (to create users and serve the system mount)")
	for _, tool := range []string{"useradd", "setpriv", "curl", "python3"} {
		_, err := exec.LookPath(tool)
		requireE2E(t, err == nil, tool)
	}
	fusetest.Require(t)
	top, err := os.MkdirTemp("", "oauthfs-sys")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(top, 0o755)
	t.Cleanup(func() { os.RemoveAll(top) })
	p := localprovider.New()
	t.Cleanup(p.Close)
	p.SetLifetime(lifetime)
	e := &systemEnv{top: top, mount: filepath.Join(top, "oauth")}
	e.daemonEnv = &daemonEnv{cliEnv: &cliEnv{p: p, dir: top, cfg: filepath.Join(top, "config.toml"), socket: filepath.Join(top, "run", "broker.sock")},
		state: filepath.Join(top, "state")}
	e.writeConfig(t, "Test", "Other")
	f, _ := os.OpenFile(e.cfg, os.O_RDWR, 0)
	cfg, _ := os.ReadFile(e.cfg)
	text := strings.Replace(string(cfg), "[broker]\n", fmt.Sprintf("[broker]\nmount = %q\n", e.mount), 1)
	text = strings.Replace(text, "[[integration]]\nname = \"Other\"", testConfig+"[[integration]]\nname = \"Other\"", 1)
	f.WriteAt([]byte(text), 0)
	f.Close()
	pid := os.Getpid() % 10000
	e.a, e.b = addUser(t, fmt.Sprintf("oafs-sa-%d", pid)), addUser(t, fmt.Sprintf("oafs-sb-%d", pid))
	e.root = unixUser{name: "root"}
	e.start(t)
	t.Cleanup(func() {
		if isMounted(e.mount) {
			syscall.Unmount(e.mount, syscall.MNT_DETACH)
		}
	})
	out, err := exec.Command(binary, "list", "--json", "--broker", e.socket).Output()
	var list []struct{ GUID, Name string }
	if err != nil || json.Unmarshal(out, &list) != nil {
		t.Fatalf("list: %v %s", err, out)
	}
	for _, in := range list {
		if in.Name == "Test" {
			e.guid = in.GUID
		}
	}
	return e
}

// start runs the broker daemon and waits for the system mount.
func (e *systemEnv) start(t *testing.T) {
	t.Helper()
	e.broker = startProc(t, exec.Command(binary, "broker", "--config", e.cfg, "--log-level", "debug"), syscall.SIGTERM, "",
		func(p *proc) bool { return strings.Contains(p.stderr.String(), "system mount serving every user") })
}

// seed stores a fresh grant of Test for u through the socket, as u.
func (e *systemEnv) seed(t *testing.T, u unixUser, expiresIn int) string {
	t.Helper()
	at, rt, _ := e.p.Grant()
	body := fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"expires_in":%d}`, at, rt, expiresIn)
	cmd := u.as(context.Background(), "curl", "-sf", "--unix-socket", e.socket, "-X", "PUT", "--data-binary", "@-", "http://oauthfs/v1/integrations/Test/credentials")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("seed as %s: %v: %s", u.name, err, out)
	}
	return at
}

// readLoop is a Python program that reads each path given as fast as it
// can for the seconds given, and prints how often it read each value and
// each errno.
const readLoop = `import json, os, sys, time
end = time.monotonic() + float(sys.argv[1])
seen, errs = {}, {}
while time.monotonic() < end:
    for p in sys.argv[2:]:
        try:
            with open(p) as f:
                v = f.read()
            seen[v] = seen.get(v, 0) + 1
        except OSError as e:
            errs[os.strerror(e.errno)] = errs.get(os.strerror(e.errno), 0) + 1
print(json.dumps({"seen": seen, "errors": errs}))
`

// TestSystemMount: two real users and root read the system mount at the
// same paths in tight loops, across refreshes and one user's sign-out,
// and each only ever reads their own token; nobody enters another's view;
// a job with an empty environment and a process in a new user and mount
// namespace read their own tokens.
func TestSystemMount(t *testing.T) {
	e := newSystemEnv(t, 3*time.Second, "")
	loop := filepath.Join(e.top, "loop.py")
	os.WriteFile(loop, []byte(readLoop), 0o644)
	users := []unixUser{e.root, e.a, e.b}
	for _, u := range users {
		e.seed(t, u, 3)
	}
	byGUID := filepath.Join(e.mount, e.guid, "access_token")
	byName := filepath.Join(e.mount, "by-name", "Test", "access_token")

	type result struct {
		Seen   map[string]int
		Errors map[string]int
	}
	results := make([]result, len(users))
	var wg sync.WaitGroup
	const seconds = 20
	for i, u := range users {
		wg.Go(func() {
			cmd := u.as(context.Background(), "python3", loop, strconv.Itoa(seconds), byGUID, byName)
			out, err := cmd.Output()
			if err != nil || json.Unmarshal(out, &results[i]) != nil {
				t.Errorf("%s's loop: %v %s", u.name, err, out)
			}
		})
	}
	// B signs out halfway.
	time.Sleep(seconds / 2 * time.Second)
	if out, err := e.b.run(t, binary, "logout", "--broker", e.socket, "Test"); err != nil {
		t.Errorf("logout as B: %v %s", err, out)
	}
	if out, err := e.b.run(t, "cat", byName); err == nil || !strings.Contains(out, "Required key not available") {
		t.Errorf("B's read right after logout = %q, %v; want ENOKEY", out, err)
	}
	wg.Wait()

	owner := map[string]string{}
	foreign := 0
	for i, u := range users {
		total := 0
		for tok, n := range results[i].Seen {
			total += n
			if !e.p.Issued(tok) {
				t.Errorf("%s read %q, which the provider never issued", u.name, tok)
			}
			if o, ok := owner[tok]; ok {
				foreign += n
				t.Errorf("%s and %s both read one token", o, u.name)
			}
			owner[tok] = u.name
		}
		t.Logf("%s: %d reads of %d tokens of their own, errors %v", u.name, total, len(results[i].Seen), results[i].Errors)
		switch {
		case u.name == e.b.name && results[i].Errors["Required key not available"] == 0:
			t.Errorf("B's loop never saw the sign-out: %v", results[i].Errors)
		case u.name != e.b.name && len(results[i].Errors) > 0:
			t.Errorf("%s's loop had errors: %v", u.name, results[i].Errors)
		case len(results[i].Seen) < 3:
			t.Errorf("%s read %d tokens; want several refreshes", u.name, len(results[i].Seen))
		}
	}

	t.Logf("reads of another user's token: %d", foreign)

	t.Run("nobody enters another's view", func(t *testing.T) {
		for _, tc := range []struct {
			who  unixUser
			path string
		}{
			{e.a, filepath.Join(e.mount, ".users", strconv.Itoa(e.b.uid), e.guid, "access_token")},
			{e.a, filepath.Join(e.mount, ".users", "0", e.guid, "access_token")},
			{e.b, filepath.Join(e.mount, ".users", strconv.Itoa(e.a.uid), "integrations.json")},
			{e.a, filepath.Join(e.mount, ".users")},
		} {
			out, err := tc.who.run(t, "ls", tc.path)
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("%s: ls %s = %q, %v; want Permission denied", tc.who.name, tc.path, out, err)
			}
		}
	})

	t.Run("each caller's own status", func(t *testing.T) {
		for _, tc := range []struct {
			who    unixUser
			status string
		}{{e.a, "signed_in"}, {e.b, "not_signed_in"}, {e.root, "signed_in"}} {
			out, err := tc.who.run(t, "python3", "-c", `import json,sys; print([i["status"] for i in json.load(open(sys.argv[1])) if i["name"] == "Test"][0])`, filepath.Join(e.mount, "integrations.json"))
			if err != nil || strings.TrimSpace(out) != tc.status {
				t.Errorf("%s: integrations.json says %q, %v; want %s", tc.who.name, out, err, tc.status)
			}
			out, err = tc.who.run(t, "ls", "-l", e.mount)
			if err != nil || !strings.Contains(out, fmt.Sprintf("%s -> .users/%d/%s", e.guid, tc.who.uid, e.guid)) {
				t.Errorf("%s: ls -l = %q, %v; want their own links", tc.who.name, out, err)
			}
		}
	})

	t.Run("a job with an empty environment", func(t *testing.T) {
		cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(e.a.uid), "--regid="+strconv.Itoa(e.a.gid), "--clear-groups", "/bin/cat", byName)
		cmd.Env = []string{} // no XDG_RUNTIME_DIR, no PATH, no session mount
		out, err := cmd.Output()
		if err != nil || !e.p.Issued(string(out)) || owner[string(out)] == e.b.name || owner[string(out)] == "root" {
			t.Errorf("cat with an empty environment = %q, %v; want A's token", out, err)
		}
	})

	t.Run("a container", func(t *testing.T) {
		_, err := exec.LookPath("unshare")
		requireE2E(t, err == nil, "unshare (util-linux)")
		inside := filepath.Join(e.top, "a-container")
		os.Mkdir(inside, 0o755)
		os.Chown(inside, e.a.uid, e.a.gid)
		// A new user namespace (A is root in it) and mount namespace,
		// with the system mount bound in, as docker -v /oauth:/oauth or
		// a Kubernetes hostPath would.
		script := fmt.Sprintf(`mount --bind %[1]s %[2]s && id -u && cat %[2]s/by-name/Test/access_token && echo && (cat %[2]s/.users/%[3]d/by-name/Test/access_token 2>&1 || true)`,
			e.mount, inside, e.b.uid)
		out, err := e.a.run(t, "unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(lines) != 3 {
			t.Fatalf("in a container: %v\n%s", err, out)
		}
		t.Logf("in a container, uid %s inside: read %d bytes of A's token; B's: %s", lines[0], len(lines[1]), lines[2])
		if lines[0] != "0" || !e.p.Issued(lines[1]) || owner[lines[1]] == e.b.name || owner[lines[1]] == "root" {
			t.Errorf("in a container (root inside) = %q; want A's token", lines[:2])
		}
		if !strings.Contains(lines[2], "Permission denied") {
			t.Errorf("B's view from A's container = %q; want Permission denied", lines[2])
		}
	})
}

// TestSystemMountLifecycle: the broker refuses a mount point that holds
// files or another mount; SIGTERM unmounts; after a crash readers get
// ENOTCONN at once, never hang, and the next start clears the dead mount
// and serves again.
func TestSystemMountLifecycle(t *testing.T) {
	e := newSystemEnv(t, time.Hour, "")
	e.seed(t, e.a, 3600)
	tok := filepath.Join(e.mount, "by-name", "Test", "access_token")
	if out, err := e.a.run(t, "cat", tok); err != nil || !e.p.Issued(out) {
		t.Fatalf("cat = %q, %v", out, err)
	}

	t.Run("a mount point in use or with files is refused", func(t *testing.T) {
		full := filepath.Join(e.top, "full")
		os.MkdirAll(filepath.Join(full, "something"), 0o755)
		for _, tc := range []struct{ dir, want string }{
			{e.mount, "already mounted"},
			{full, "not an empty directory"},
		} {
			cfg := filepath.Join(e.top, "other.toml")
			raw, _ := os.ReadFile(e.cfg)
			other := strings.Replace(string(raw), fmt.Sprintf("mount = %q", e.mount), fmt.Sprintf("mount = %q", tc.dir), 1)
			other = strings.Replace(other, e.socket, filepath.Join(e.top, "run2", "broker.sock"), 1)
			os.WriteFile(cfg, []byte(other), 0o600)
			out, err := exec.Command(binary, "broker", "--config", cfg).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("broker with mount = %s: %v\n%s; want %q", tc.dir, err, out, tc.want)
			}
		}
		if out, err := e.a.run(t, "cat", tok); err != nil || !e.p.Issued(out) {
			t.Errorf("the first broker's mount after the refusals: %q, %v", out, err)
		}
	})

	t.Run("a reload reaches every view", func(t *testing.T) {
		for _, u := range []unixUser{e.a, e.b} { // both have views, and keep the listings
			if out, err := u.run(t, "ls", e.mount, filepath.Join(e.mount, "by-name")); err != nil || strings.Contains(out, "Third") {
				t.Fatalf("%s: ls = %q, %v", u.name, out, err)
			}
		}
		guidOf := func(name string) string {
			out, _ := exec.Command(binary, "list", "--json", "--broker", e.socket).Output()
			var list []struct{ GUID, Name string }
			json.Unmarshal(out, &list)
			for _, in := range list {
				if in.Name == name {
					return in.GUID
				}
			}
			return ""
		}
		other := guidOf("Other")
		raw, _ := os.ReadFile(e.cfg)
		third := strings.Replace(string(raw), `name = "Other"`, `name = "Third"`, 1)
		os.WriteFile(e.cfg, []byte(third), 0o600)
		e.broker.cmd.Process.Signal(syscall.SIGHUP)
		for _, u := range []unixUser{e.a, e.b} {
			waitFor(t, func() bool {
				out, err := u.run(t, "ls", filepath.Join(e.mount, "by-name"))
				return err == nil && strings.Contains(out, "Third") && !strings.Contains(out, "Other")
			})
			waitFor(t, func() bool {
				out, err := u.run(t, "ls", e.mount)
				return err == nil && strings.Contains(out, guidOf("Third")) && !strings.Contains(out, other)
			})
			if out, err := u.run(t, "cat", filepath.Join(e.mount, "by-name", "Third", "meta.json")); err != nil || !strings.Contains(out, `"name": "Third"`) {
				t.Errorf("%s: Third's meta.json = %q, %v", u.name, out, err)
			}
		}
	})

	t.Run("a crash leaves no hanging mount", func(t *testing.T) {
		e.broker.cmd.Process.Kill()
		<-e.broker.done
		began := time.Now()
		out, err := e.a.run(t, "cat", tok)
		if err == nil || !strings.Contains(out, "Transport endpoint is not connected") || time.Since(began) > 5*time.Second {
			t.Errorf("a read after the crash = %q, %v after %v; want ENOTCONN at once", out, err, time.Since(began))
		}
		e.start(t)
		if out, err := e.a.run(t, "cat", tok); err != nil || !e.p.Issued(out) {
			t.Errorf("a read after the restart = %q, %v; want A's token", out, err)
		}
	})

	t.Run("SIGTERM unmounts", func(t *testing.T) {
		e.broker.cmd.Process.Signal(syscall.SIGTERM)
		<-e.broker.done
		if isMounted(e.mount) {
			t.Errorf("%s is still mounted after SIGTERM", e.mount)
		}
		if ents, err := os.ReadDir(e.mount); err != nil || len(ents) != 0 {
			t.Errorf("the mount point after SIGTERM: %v, %v; want an empty directory", ents, err)
		}
	})
}

// TestSystemMountToolsStayPerUser: what the tools added, as a hostile
// second user B meets it on the system mount and the socket. A's ID
// token, token.json and token variant are A's alone: B gets Permission
// denied in A's view, and its own tokens (or ENODATA: B's sign-in gave no
// ID token) in its own. B's forced refreshes spend B's bound, never A's:
// B's loop is refused past its burst, each refusal sending nothing to
// the provider, while A still refreshes.
func TestSystemMountToolsStayPerUser(t *testing.T) {
	e := newSystemEnv(t, time.Hour, "scopes = [\"openid\", \"read\", \"write\"]\n[[integration.token]]\nname = \"narrow\"\nscopes = [\"read\"]\n")
	aAccess, aRefresh, aID, _ := e.p.GrantOpenID()
	cmd := e.a.as(context.Background(), "curl", "-sf", "--unix-socket", e.socket, "-X", "PUT", "--data-binary", "@-", "http://oauthfs/v1/integrations/Test/credentials")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"id_token":%q,"expires_in":3600,"scope":"openid read write"}`, aAccess, aRefresh, aID))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("seed as A: %v: %s", err, out)
	}
	bAccess := e.seed(t, e.b, 3600)
	byName := filepath.Join(e.mount, "by-name", "Test")

	t.Run("B cannot enter A's files", func(t *testing.T) {
		view := filepath.Join(e.mount, ".users", strconv.Itoa(e.a.uid), e.guid)
		for _, name := range []string{"id_token", "token.json", "tokens", "tokens/narrow/access_token", "tokens/narrow/token.json"} {
			out, err := e.b.run(t, "cat", filepath.Join(view, name))
			if err == nil || !strings.Contains(out, "Permission denied") || strings.Contains(out, aAccess) || strings.Contains(out, aID) {
				t.Errorf("B: cat %s in A's view = %.60q, %v; want Permission denied", name, out, err)
			}
		}
	})

	t.Run("each reads their own", func(t *testing.T) {
		read := func(u unixUser, name string) (string, error) {
			t.Helper()
			return u.run(t, "cat", filepath.Join(byName, name))
		}
		if got, err := read(e.a, "id_token"); err != nil || got != aID {
			t.Errorf("A's id_token = %.20q, %v; want A's ID token", got, err)
		}
		if got, err := read(e.b, "id_token"); err == nil || !strings.Contains(got, "No data available") {
			t.Errorf("B's id_token = %.60q, %v; want ENODATA (B's sign-in gave none), never A's", got, err)
		}
		for _, tc := range []struct {
			who        unixUser
			own, other string
		}{{e.a, aAccess, bAccess}, {e.b, bAccess, aAccess}} {
			doc, err := read(tc.who, "token.json")
			if err != nil || !strings.Contains(doc, tc.own) || strings.Contains(doc, tc.other) || (tc.who.uid == e.b.uid && strings.Contains(doc, aID)) {
				t.Errorf("%s's token.json holds another's token, or not its own (%v)", tc.who.name, err)
			}
		}
		aNarrow, errA := read(e.a, "tokens/narrow/access_token")
		bNarrow, errB := read(e.b, "tokens/narrow/access_token")
		if errA != nil || errB != nil || aNarrow == bNarrow || !e.p.Issued(aNarrow) || !e.p.Issued(bNarrow) ||
			e.p.ScopeOf(aNarrow) != "read" || e.p.ScopeOf(bNarrow) != "read" {
			t.Errorf("tokens/narrow: A %.8q… (%v), B %.8q… (%v); want a read-only token of each one's own", aNarrow, errA, bNarrow, errB)
		}
		if out, err := e.b.run(t, binary, "token", "--broker", e.socket, "--id-token", "Test"); err == nil || strings.Contains(out, aID) {
			t.Errorf("B: oauthfs token --id-token = %.60q, %v; want a failure (no ID token), never A's", out, err)
		}
	})

	t.Run("B's forced refreshes spend only B's bound", func(t *testing.T) {
		// One process of B's asks outright, one request after another,
		// until it is refused: a process per request would take long
		// enough under load for the bound to refill meanwhile.
		loop := filepath.Join(e.top, "force.py")
		os.WriteFile(loop, []byte(forceLoop), 0o644)
		before := e.p.Refreshes()
		out, err := e.b.run(t, "python3", loop, e.socket, "60")
		var r struct {
			OK, Refused int
			Other       []string
			Seconds     float64
		}
		if err != nil || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("B's loop: %v %.200s", err, out)
		}
		sent := e.p.Refreshes() - before
		t.Logf("B: %d forced refreshes served in %.1f s, then refused; %d requests reached the provider", r.OK, r.Seconds, sent)
		// The burst, and what the bound gave back meanwhile (one every 3 s).
		most := 20 + int(r.Seconds/3) + 1
		if r.Refused != 1 || len(r.Other) > 0 || r.OK < 20 || r.OK > most || sent != r.OK {
			t.Errorf("B: %d served, refused %d, other answers %q, %d sent; want the burst of 20 (at most %d in %.1f s) served, then a refusal saying when to try again, and one request per served refresh",
				r.OK, r.Refused, r.Other, sent, most, r.Seconds)
		}
		out, err = e.a.run(t, binary, "token", "--broker", e.socket, "--force-refresh", "Test")
		if err != nil || !e.p.Issued(out) || out == aAccess {
			t.Errorf("A's forced refresh after B's loop = %.60q, %v; want a new token of A's: B spent only its own bound", out, err)
		}
	})
}

// forceLoop is a Python program that asks the broker at the socket given
// for forced refreshes of Test, one after another, until one is refused
// or it has asked the number given; it prints how many were served,
// refused (saying when to try again) or answered otherwise, and how long
// it took. It never prints a token.
const forceLoop = `import json, socket, sys, time
start, ok, refused, other = time.monotonic(), 0, 0, []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"GET /v1/integrations/Test/token?force=1 HTTP/1.1\r\nHost: oauthfs\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/") else b"?"
    if status == b"200":
        ok += 1
    elif b"too many token requests" in data and b"try again in" in data:
        refused += 1
        break
    else:
        other.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
        break
print(json.dumps({"ok": ok, "refused": refused, "other": other, "seconds": time.monotonic() - start}))
`
