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
// world-traversable directory, with tokens living lifetime.
func newSystemEnv(t *testing.T, lifetime time.Duration) *systemEnv {
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
	f.WriteAt([]byte(strings.Replace(string(cfg), "[broker]\n", fmt.Sprintf("[broker]\nmount = %q\n", e.mount), 1)), 0)
	f.Close()
	pid := os.Getpid() % 10000
	e.a, e.b = addUser(t, fmt.Sprintf("oafs-sa-%d", pid)), addUser(t, fmt.Sprintf("oafs-sb-%d", pid))
	e.root = unixUser{name: "root"}
	e.broker = startProc(t, exec.Command(binary, "broker", "--config", e.cfg, "--log-level", "debug"), syscall.SIGTERM, "",
		func(p *proc) bool { return strings.Contains(p.stderr.String(), "system mount serving every user") })
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
	e := newSystemEnv(t, 3*time.Second)
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
