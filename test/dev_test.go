package test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

// devRun is a running 'oauthfs dev'.
type devRun struct {
	*proc
	mnt, provider, socket string
	stdout                *testutil.SyncBuffer
	env                   []string
}

var (
	providerRE = regexp.MustCompile(`provider +(http://127\.0\.0\.1:\d+)`)
	socketRE   = regexp.MustCompile(`export OAUTHFS_BROKER='([^']+)'`)
)

// startDev runs 'oauthfs dev' on mnt and waits for its guide.
func startDev(t *testing.T, runtimeDir, mnt string, args ...string) *devRun {
	t.Helper()
	fusetest.Require(t)
	d := &devRun{mnt: mnt, stdout: &testutil.SyncBuffer{}, env: append(os.Environ(), "XDG_RUNTIME_DIR="+runtimeDir)}
	cmd := exec.Command(binary, append(append([]string{"dev"}, args...), mnt)...)
	cmd.Env, cmd.Stdout = d.env, d.stdout
	d.proc = startProc(t, cmd, syscall.SIGINT, mnt, func(*proc) bool { return strings.Contains(d.stdout.String(), "Press Ctrl-C") })
	out := d.stdout.String()
	d.provider = providerRE.FindStringSubmatch(out)[1]
	if m := socketRE.FindStringSubmatch(out); m != nil {
		d.socket = m[1]
	} else {
		d.socket = filepath.Join(runtimeDir, "oauthfs", "broker.sock")
	}
	return d
}

// TestDevSocket: the other commands find a running oauthfs dev with no
// setting but XDG_RUNTIME_DIR, and its guide names the binary by a path
// that works; when another broker answers on the default socket, dev
// listens elsewhere and prints the export line.
func TestDevSocket(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		rt := t.TempDir()
		d := startDev(t, rt, filepath.Join(t.TempDir(), "oauth"))
		out := d.stdout.String()
		if strings.Contains(out, "export OAUTHFS_BROKER") {
			t.Errorf("the guide exports OAUTHFS_BROKER though dev listens on the default socket:\n%s", out)
		}
		cwd, _ := os.Getwd()
		for _, want := range []string{"\n  cd '" + cwd + "'\n", "\n  " + binary + " list\n", "\n  " + binary + " settings "} {
			if !strings.Contains(out, want) {
				t.Errorf("the guide lacks %q:\n%s", want, out)
			}
		}
		// Shell completion asks the broker for the integrations' names.
		script, err := exec.Command(binary, "completion", "bash").Output()
		if err != nil {
			t.Fatal(err)
		}
		sh := exec.Command("bash", "-c", string(script)+`COMP_WORDS=(oauthfs login ""); COMP_CWORD=2; _oauthfs; printf '%s\n' "${COMPREPLY[@]}"; COMP_WORDS=(oauthfs se); COMP_CWORD=1; _oauthfs; printf '%s\n' "${COMPREPLY[@]}"`)
		sh.Env = []string{"XDG_RUNTIME_DIR=" + rt, "PATH=" + filepath.Dir(binary) + ":/usr/bin:/bin"}
		if got, err := sh.CombinedOutput(); err != nil || string(got) != "Demo\nOther\nsettings\n" {
			t.Errorf("bash completion = %q, %v; want Demo, Other, then settings", got, err)
		}
		for _, args := range [][]string{{"list"}, {"token", "Demo"}, {"settings", "--no-browser"}} {
			cmd := exec.Command(binary, args...)
			cmd.Env = []string{"XDG_RUNTIME_DIR=" + rt} // nothing else
			got, err := cmd.CombinedOutput()
			if err != nil || len(got) < 10 {
				t.Errorf("%v with only XDG_RUNTIME_DIR = %v\n%s", args, err, got)
			}
			if args[0] == "list" && !strings.Contains(string(got), "Demo (") {
				t.Errorf("list = %q", got)
			}
		}
	})
	t.Run("taken", func(t *testing.T) {
		rt := t.TempDir()
		os.Mkdir(filepath.Join(rt, "oauthfs"), 0o700)
		other, err := net.Listen("unix", filepath.Join(rt, "oauthfs", "broker.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		go func() {
			for {
				c, err := other.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		d := startDev(t, rt, filepath.Join(t.TempDir(), "oauth"))
		if d.socket == filepath.Join(rt, "oauthfs", "broker.sock") {
			t.Fatalf("dev took over a socket another broker answers on; guide:\n%s", d.stdout)
		}
		if out, err := d.run(t, ".", nil, binary, "list"); err != nil || !strings.Contains(out, "Demo (") {
			t.Errorf("list with the guide's export = %q, %v", out, err)
		}
	})
}

func (d *devRun) run(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "OAUTHFS_MOUNT="+d.mnt, "API="+d.provider, "OAUTHFS_BROKER="+d.socket), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestDev(t *testing.T) {
	// Occupy the default sign-in port, if free: dev picks its own.
	if l, err := net.Listen("tcp", "127.0.0.1:8400"); err == nil {
		defer l.Close()
	}
	// One-minute tokens: no refresh lands between the reads an example
	// compares. TestDevRefreshOnRead shows refreshes.
	mnt := filepath.Join(t.TempDir(), "oauth") // dev creates it
	d := startDev(t, t.TempDir(), mnt)
	if _, err := os.ReadFile(filepath.Join(mnt, "by-name", "Other", "access_token")); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("Other = %v; want ENOKEY", err)
	}
	t.Run("shell", func(t *testing.T) {
		_, err := exec.LookPath("jq")
		requireE2E(t, err == nil, "jq")
		out, err := d.run(t, "../examples/shell", nil, "bash", "usage.sh")
		want := "cat: 31 bytes\n$(<file): 31 bytes\n{\"sub\":\"dev-user\"}\nDemo: signed in\nOther: not_signed_in\nOther: sign in with: oauthfs login Other\n"
		if err != nil || out != want {
			t.Errorf("usage.sh = %v\n%s\nwant:\n%s", err, out, want)
		}
	})
	t.Run("python", func(t *testing.T) {
		out, err := d.run(t, "../examples/python", nil, "python3", "usage.py")
		want := `read_text: 31 chars
open().read(): True
json.load: ['Demo', 'Other']
find_by(name='^Demo$'): Demo True
find_by(authenticated=False): ['Other']
get(guid): Demo
get_credentials: Bearer True
not signed in: None
`
		if err != nil || out != want {
			t.Errorf("usage.py = %v\n%s\nwant:\n%s", err, out, want)
		}
		for _, tc := range []struct{ name, code, want string }{
			{"unknown guid", `oauthfs.get_credentials("11111111-2222-4333-8444-555555555555")`, "KeyError: \"no integration with guid '11111111-2222-4333-8444-555555555555'\""},
			{"unknown guid get", `oauthfs.Integrations().get("nope")`, "KeyError: \"no integration with guid 'nope'\""},
			{"malformed regex", `oauthfs.Integrations().find_by(name="(")`, "re.error: missing ), unterminated subpattern"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := d.run(t, "../examples/python", nil, "python3", "-c", "import oauthfs; "+tc.code)
				if err == nil || !strings.Contains(out, tc.want) {
					t.Errorf("%s = %v\n%s\nwant %q", tc.code, err, out, tc.want)
				}
			})
		}
	})
	t.Run("R", func(t *testing.T) {
		_, err := exec.LookPath("Rscript")
		requireE2E(t, err == nil, "Rscript (Debian package r-base-core)")
		out, err := d.run(t, "../examples/R", []string{"OAUTHFS_EXAMPLES=."}, "Rscript", "usage.R")
		want := `readLines: 31 chars
readChar: TRUE 
findOAuthIntegration: Demo TRUE 
not authenticated: Other 
getOAuthIntegration: Demo 
getOAuthIntegrations: 2 
getOAuthCredentials: Bearer TRUE 
not signed in: not signed in to Other (not_signed_in); run: oauthfs login 'Other' 
`
		if err != nil || out != want {
			t.Errorf("usage.R = %v\n%s\nwant:\n%s", err, out, want)
		}
		for _, tc := range []struct{ name, code, want string }{
			{"unknown guid", `getOAuthCredentials("nope")`, "no integration with guid 'nope'"},
			{"malformed regex", `findOAuthIntegration(name = "(")`, "invalid regular expression"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := d.run(t, "../examples/R", nil, "Rscript", "-e", `source("oauthfs.R"); `+tc.code)
				if err == nil || !strings.Contains(out, tc.want) {
					t.Errorf("%s = %v\n%s\nwant %q", tc.code, err, out, tc.want)
				}
			})
		}
	})
	t.Run("git over HTTP", func(t *testing.T) { testGitCredential(t, d) })
	t.Run("list", func(t *testing.T) {
		out, err := d.run(t, ".", nil, binary, "list", "--authenticated")
		if err != nil || !strings.HasPrefix(out, "Demo (") || strings.Count(out, "\n") != 1 {
			t.Errorf("list --authenticated = %q, %v", out, err)
		}
	})

	// Ctrl-C unmounts and removes everything dev made.
	d.cmd.Process.Signal(syscall.SIGINT)
	<-d.done
	if d.err != nil || !strings.Contains(d.stdout.String(), "stopped and cleaned up") {
		t.Errorf("dev after Ctrl-C: %v\n%s", d.err, d.stdout)
	}
	if isMounted(mnt) {
		t.Errorf("still mounted after Ctrl-C")
	}
	for _, p := range []string{mnt, d.socket} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}

func TestDevRefreshOnRead(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "oauth")
	d := startDev(t, t.TempDir(), mnt, "--token-lifetime", "2s")
	tokenFile := filepath.Join(mnt, "by-name", "Demo", "access_token")
	first, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	var next []byte
	waitFor(t, func() bool { next, err = os.ReadFile(tokenFile); return err == nil && string(next) != string(first) })
	req, _ := http.NewRequest("GET", d.provider+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+string(next))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("userinfo with the refreshed token: %v %v", resp, err)
	}
	if !strings.Contains(d.stderr.String(), "msg=refreshed") {
		t.Errorf("dev's log does not show the refresh:\n%s", d.stderr)
	}
}

// testGitCredential clones over HTTP from git-http-backend behind basic
// auth, with 'oauthfs git-credential' as the credential helper.
func testGitCredential(t *testing.T, d *devRun) {
	backend := "/usr/lib/git-core/git-http-backend"
	_, err := os.Stat(backend)
	requireE2E(t, err == nil, "git-http-backend (Debian package git)")
	root := t.TempDir()
	home := t.TempDir()
	gitEnv := []string{"HOME=" + home, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1"}
	git := func(dir string, args ...string) (string, error) {
		return d.run(t, dir, gitEnv, "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	}
	work := filepath.Join(root, "work")
	for _, args := range [][]string{{"init", "--bare", filepath.Join(root, "demo.git")}, {"init", work}} {
		if out, err := git(root, args...); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	os.WriteFile(filepath.Join(work, "README"), []byte("hello\n"), 0o644)
	for _, args := range [][]string{{"add", "README"}, {"commit", "-m", "first"}, {"push", filepath.Join(root, "demo.git"), "main"}} {
		if out, err := git(work, args...); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	var mu sync.Mutex
	var users []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		valid := false
		if ok {
			req, _ := http.NewRequest("GET", d.provider+"/userinfo", nil)
			req.Header.Set("Authorization", "Bearer "+pass)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				valid = resp.StatusCode == 200
			}
		}
		if !valid {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "token required", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		users = append(users, user)
		mu.Unlock()
		(&cgi.Handler{Path: backend, Root: "/", Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER=" + user}}).ServeHTTP(w, r)
	}))
	defer srv.Close()
	// The test server is plain http on loopback: the helper refuses it
	// unless told to trust it.
	out, err := git(root, "-c", "credential.helper=", "-c", "credential.helper=!"+binary+" git-credential Demo", "clone", srv.URL+"/demo.git", filepath.Join(root, "clone"))
	if err == nil || !strings.Contains(out, `refusing to send a token over "http"`) {
		t.Errorf("clone over http with a helper that does not allow it = %v\n%s; want the helper's refusal", err, out)
	}
	helper := func(name string) string {
		return "credential.helper=!" + binary + " git-credential --allow-http " + name
	}
	out, err = git(root, "-c", "credential.helper=", "-c", helper("Demo"), "clone", srv.URL+"/demo.git", filepath.Join(root, "clone"))
	if err != nil {
		t.Fatalf("git clone with the helper: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(root, "clone", "README")); err != nil || string(b) != "hello\n" {
		t.Errorf("cloned README = %q, %v", b, err)
	}
	mu.Lock()
	if len(users) == 0 || users[0] != "oauth2" {
		t.Errorf("the server saw users %q; want oauth2", users)
	}
	mu.Unlock()
	out, err = git(root, "-c", "credential.helper=", "-c", helper("Other"), "clone", srv.URL+"/demo.git", filepath.Join(root, "clone2"))
	if err == nil || !strings.Contains(out, "oauthfs: error:") || !strings.Contains(out, "not signed in") {
		t.Errorf("clone with a signed-out integration = %v\n%s; want the helper's error", err, out)
	}
	// The protocol, without git: get answers, store and erase are no-ops.
	cmd := exec.Command(binary, "git-credential", "Demo", "get")
	cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+d.socket)
	cmd.Stdin = strings.NewReader("protocol=https\nhost=example.com\n\n")
	got, err := cmd.Output()
	if err != nil || !regexp.MustCompile(`^protocol=https\nhost=example.com\nusername=oauth2\npassword_expiry_utc=\d+\npassword=dev-at-[0-9a-f]{24}\n\n$`).Match(got) {
		t.Errorf("git-credential get = %q, %v", got, err)
	}
	for _, tc := range []struct {
		flags []string
		input string
		want  string
	}{
		{nil, "protocol=http\nhost=example.com\n\n", `refusing to send a token over "http"`},
		{nil, "protocol=ftp\nhost=example.com\n\n", `refusing to send a token over "ftp"`},
		{nil, "host=example.com\n\n", `refusing to send a token over ""`},
		{[]string{"--host", "github.com"}, "protocol=https\nhost=evil.example\n\n", "refusing to send Demo's token to evil.example"},
	} {
		cmd := exec.Command(binary, append(append([]string{"git-credential"}, tc.flags...), "Demo", "get")...)
		cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+d.socket)
		cmd.Stdin = strings.NewReader(tc.input)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil || len(out) != 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("git-credential %v get with %q = %q, %v, %q; want nothing, and %q", tc.flags, tc.input, out, err, stderr.String(), tc.want)
		}
	}
	cmd = exec.Command(binary, "git-credential", "--host", "example.com", "Demo", "get")
	cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+d.socket)
	cmd.Stdin = strings.NewReader("protocol=https\nhost=Example.com\n\n")
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "password=dev-at-") {
		t.Errorf("git-credential --host example.com for Example.com = %q, %v; want the token", out, err)
	}
	for _, action := range []string{"store", "erase"} {
		cmd := exec.Command(binary, "git-credential", "Demo", action)
		cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+d.socket)
		cmd.Stdin = strings.NewReader("protocol=https\nhost=example.com\npassword=x\n\n")
		if out, err := cmd.Output(); err != nil || len(out) != 0 {
			t.Errorf("git-credential %s = %q, %v; want nothing", action, out, err)
		}
	}
}

func TestDevRefusesBadInput(t *testing.T) {
	fusetest.Require(t)
	runtime := t.TempDir()
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	os.MkdirAll(filepath.Join(full, "something"), 0o700)
	dev := func(runtimeDir string, args ...string) (string, int) {
		cmd := exec.Command(binary, append([]string{"dev"}, args...)...)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtimeDir)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		return string(out), 0
	}
	if out, code := dev(runtime, full); code != 9 || !strings.Contains(out, "is not empty") {
		t.Errorf("dev on a non-empty directory: exit %d, %q", code, out)
	}
	if out, code := dev(runtime, "a", "b"); code != 2 || !strings.Contains(out, "at most one MOUNTPOINT") {
		t.Errorf("dev with two mount points: exit %d, %q", code, out)
	}
	first := startDev(t, runtime, filepath.Join(dir, "first"))
	out, code := dev(runtime, filepath.Join(dir, "second"))
	if code == 0 || !strings.Contains(out, "another oauthfs dev is running") || !strings.Contains(out, filepath.Join(dir, "first")) {
		t.Errorf("a second dev: exit %d, %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "second")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused dev created its mount point")
	}
	// A busy mount point (another user's dev, say).
	out, code = dev(t.TempDir(), first.mnt)
	if code != 9 || !strings.Contains(out, "is already mounted") {
		t.Errorf("dev on a mounted directory: exit %d, %q", code, out)
	}
	if _, err := os.ReadFile(filepath.Join(first.mnt, "by-name", "Demo", "access_token")); err != nil {
		t.Errorf("the first dev was disturbed: %v", err)
	}
}
