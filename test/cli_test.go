package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

const canarySecret = "CANARY-client-secret-91c2"

// cliEnv is a config with two integrations on a test provider, and the
// files of one test run.
type cliEnv struct {
	p      *localprovider.Provider
	dir    string // scratch
	mnt    string
	cfg    string
	socket string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	fusetest.Require(t)
	p := localprovider.New()
	p.ClientSecret = canarySecret
	p.SetPrefix("CANARYtok")
	t.Cleanup(p.Close)
	e := &cliEnv{p: p, dir: t.TempDir()}
	e.mnt = filepath.Join(e.dir, "oauth")
	os.Mkdir(e.mnt, 0o700)
	e.socket = filepath.Join(e.dir, "run", "broker.sock")
	e.cfg = filepath.Join(e.dir, "config.toml")
	secretFile := filepath.Join(e.dir, "test.secret")
	os.WriteFile(secretFile, []byte(canarySecret+"\n"), 0o600)
	cfg := fmt.Sprintf(`
[broker]
socket = %q
listen = %q
state_dir = ""
request_timeout = "2s"

[[integration]]
name = "Test"
client_id = "test-client"
client_secret_file = %q
auth_url = "%s/authorize"
token_url = "%s"
scopes = ["read"]

[[integration]]
name = "Other"
guid = "a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d"
client_id = "test-client"
client_secret = %q
auth_url = "%s/authorize"
token_url = "%s"
`, e.socket, freeAddr(t), secretFile, p.URL, p.TokenURL(), canarySecret, p.URL, p.TokenURL())
	os.WriteFile(e.cfg, []byte(cfg), 0o600)
	return e
}

// startMount runs 'oauthfs mount' and waits until the mount answers.
func (e *cliEnv) startMount(t *testing.T, extra ...string) *proc {
	t.Helper()
	args := append([]string{"mount", "--config", e.cfg, "--log-level", "debug"}, extra...)
	return startProc(t, exec.Command(binary, append(args, e.mnt)...), syscall.SIGTERM, e.mnt, func(*proc) bool { return served(e.mnt) })
}

// oauthfs runs a client command and returns stdout, stderr and exit code.
func (e *cliEnv) oauthfs(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+e.socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// api calls the session socket like curl --unix-socket would.
func (e *cliEnv) api(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", e.socket)
	}}}
	req, _ := http.NewRequest(method, "http://oauthfs"+path, strings.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// seed stores a grant from the provider for "Test" through the socket.
func (e *cliEnv) seed(t *testing.T, expiresIn int) (access, refresh string) {
	t.Helper()
	a, r, _ := e.p.Grant()
	code, body := e.api(t, "PUT", "/v1/integrations/Test/credentials",
		fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"expires_in":%d,"scope":"read"}`, a, r, expiresIn))
	if code != 200 {
		t.Fatalf("seed: HTTP %d %s", code, body)
	}
	return a, r
}

func TestCLI(t *testing.T) {
	e := newCLIEnv(t)
	m := e.startMount(t)
	access, _ := e.seed(t, 3600)
	testGUID := ""

	t.Run("core dumps are off", func(t *testing.T) {
		limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", m.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(limits), "\n") {
			if strings.HasPrefix(l, "Max core file size") {
				if f := strings.Fields(l); len(f) < 6 || f[4] != "0" || f[5] != "0" {
					t.Errorf("core limit = %q; want 0 0", l)
				}
				return
			}
		}
		t.Errorf("no core limit in %s", limits)
	})
	t.Run("list", func(t *testing.T) {
		out, _, code := e.oauthfs(t, "list")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 2 || lines[0] != "Other (a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d): not authenticated" ||
			!strings.HasPrefix(lines[1], "Test (") || !strings.HasSuffix(lines[1], "): authenticated") {
			t.Fatalf("list = %q (exit %d)", out, code)
		}
		testGUID = strings.TrimSuffix(strings.TrimPrefix(lines[1], "Test ("), "): authenticated")
		out, _, _ = e.oauthfs(t, "list", "--authenticated")
		if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "Test") {
			t.Errorf("list --authenticated = %q", out)
		}
		out, _, _ = e.oauthfs(t, "list", "--authenticated=false", "--name", "^Oth")
		if !strings.HasPrefix(out, "Other") || strings.Count(out, "\n") != 1 {
			t.Errorf("list --authenticated=false --name ^Oth = %q", out)
		}
		out, _, _ = e.oauthfs(t, "list", "--json")
		idx, _ := os.ReadFile(filepath.Join(e.mnt, "integrations.json"))
		if out != string(idx) {
			t.Errorf("list --json differs from integrations.json:\n%s\n%s", out, idx)
		}
	})
	t.Run("token", func(t *testing.T) {
		out, _, code := e.oauthfs(t, "token", "Test")
		if code != 0 || out != access {
			t.Errorf("token Test = %q (exit %d); want the token without newline", out, code)
		}
		if out, _, _ := e.oauthfs(t, "token", testGUID); out != access {
			t.Errorf("token GUID = %q", out)
		}
	})
	t.Run("read through the mount", func(t *testing.T) {
		for _, p := range []string{filepath.Join(e.mnt, testGUID, "access_token"), filepath.Join(e.mnt, "by-name", "Test", "access_token")} {
			out, err := exec.Command("cat", p).Output()
			if err != nil || string(out) != access {
				t.Errorf("cat %s = %q, %v", p, out, err)
			}
		}
		_, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Other", "access_token"))
		if !errors.Is(err, syscall.ENOKEY) {
			t.Errorf("read Other = %v; want ENOKEY", err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			code int
			want []string
		}{
			{"not signed in", []string{"token", "Other"}, 4, []string{"oauthfs: error: ", "not signed in", "hint: sign in with 'oauthfs login Other'"}},
			{"unknown", []string{"token", "Nope"}, 3, []string{"no such integration", "hint: run 'oauthfs list'"}},
			{"login unknown", []string{"login", "--no-browser", "Nope"}, 3, []string{"no such integration"}},
			{"logout unknown", []string{"logout", "Nope"}, 3, []string{"no such integration"}},
			{"no argument", []string{"token"}, 2, []string{"exactly one NAME or GUID"}},
			{"unknown flag", []string{"list", "--frob"}, 2, []string{"flag provided but not defined: -frob"}},
			{"bad regex", []string{"list", "--name", "("}, 2, []string{"not a valid regular expression"}},
			{"unknown command", []string{"frob"}, 2, []string{`unknown command "frob"`}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, errOut, code := e.oauthfs(t, tc.args...)
				if code != tc.code || out != "" {
					t.Errorf("%v: exit %d, stdout %q; want exit %d and no output", tc.args, code, out, tc.code)
				}
				// Advice comes once, on the hint line, not in the error too.
				for _, l := range strings.Split(errOut, "\n") {
					if strings.HasPrefix(l, "oauthfs: error:") && strings.Contains(l, "'oauthfs ") {
						t.Errorf("%v: the error line gives advice: %q", tc.args, l)
					}
				}
				for _, w := range tc.want {
					if !strings.Contains(errOut, w) {
						t.Errorf("%v: stderr %q lacks %q", tc.args, errOut, w)
					}
				}
			})
		}
	})
	t.Run("socket rejects bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path, body string
			code                     int
			want                     string
		}{
			{"malformed json", "PUT", "/v1/integrations/Test/credentials", `{"access_token": `, 400, "bad_request"},
			{"unknown field", "PUT", "/v1/integrations/Test/credentials", `{"access_token":"x","frob":1}`, 400, "unknown field"},
			{"oversized", "PUT", "/v1/integrations/Test/credentials", `{"access_token":"` + strings.Repeat("x", 100<<10) + `"}`, 400, "larger than 64 KiB"},
			{"keys in another case", "PUT", "/v1/integrations/Test/credentials", `{"ACCESS_TOKEN":"x"}`, 400, `unknown field \"ACCESS_TOKEN\"`},
			{"trailing garbage", "PUT", "/v1/integrations/Test/credentials", `{"access_token":"x"}garbage`, 400, "bad_request"},
			{"two objects", "PUT", "/v1/integrations/Test/credentials", `{"access_token":"x"}{"access_token":"y"}`, 400, "bad_request"},
			{"token not a string", "PUT", "/v1/integrations/Test/credentials", `{"access_token":5}`, 400, "must be a string"},
			{"negative lifetime", "PUT", "/v1/integrations/Test/credentials", `{"access_token":"x","expires_in":-1}`, 400, "expires_in"},
			{"unknown integration", "GET", "/v1/integrations/Nope/token", "", 404, "not_found"},
			{"unknown path", "GET", "/v1/frob", "", 404, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, body := e.api(t, tc.method, tc.path, tc.body)
				if code != tc.code || !strings.Contains(body, tc.want) {
					t.Errorf("%s %s = %d %q; want %d with %q", tc.method, tc.path, code, body, tc.code, tc.want)
				}
			})
		}
		if out, _, _ := e.oauthfs(t, "token", "Test"); out != access {
			t.Errorf("after the bad requests, token = %q; want it unchanged", out)
		}
	})
	t.Run("a huge expires_in is clamped", func(t *testing.T) {
		code, body := e.api(t, "PUT", "/v1/integrations/Other/credentials", `{"access_token":"x","expires_in":9300000000}`)
		var m struct{ Expiry string }
		json.Unmarshal([]byte(body), &m)
		exp, err := time.Parse(time.RFC3339, m.Expiry)
		if code != 200 || err != nil || exp.Year() < time.Now().Year()+9 || exp.Year() > time.Now().Year()+11 {
			t.Errorf("PUT with expires_in 9300000000 = %d, expiry %q; want about ten years from now", code, m.Expiry)
		}
		e.oauthfs(t, "logout", "Other")
	})
	t.Run("login", func(t *testing.T) {
		cmd := exec.Command(binary, "login", "--no-browser", "--broker", e.socket, "Other")
		out, _ := cmd.StdoutPipe()
		cmd.Start()
		sc := bufio.NewScanner(out)
		sc.Scan()
		link := sc.Text()
		if code, page := browse(t, link); code != 200 {
			t.Fatalf("sign-in flow: %d %s", code, page)
		}
		sc.Scan()
		if err := cmd.Wait(); err != nil || sc.Text() != "signed in to Other" {
			t.Errorf("login = %q, %v", sc.Text(), err)
		}
		if b, err := os.ReadFile(filepath.Join(e.mnt, "by-name", "Other", "access_token")); err != nil || !e.p.Issued(string(b)) {
			t.Errorf("read after login = %q, %v", b, err)
		}
	})
	t.Run("login cancelled with Ctrl-C", func(t *testing.T) {
		cmd := exec.Command(binary, "login", "--no-browser", "--broker", e.socket, "Other")
		out, _ := cmd.StdoutPipe()
		var errb bytes.Buffer
		cmd.Stderr = &errb
		cmd.Start()
		sc := bufio.NewScanner(out)
		sc.Scan()
		link := sc.Text()
		cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait()
		if err == nil || !strings.Contains(errb.String(), "sign-in to Other cancelled") {
			t.Errorf("login after SIGINT: %v, %q", err, errb.String())
		}
		jar, _ := cookiejar.New(nil)
		resp, err := (&http.Client{Jar: jar}).Get(link)
		if err != nil || resp.StatusCode != 400 {
			t.Errorf("the cancelled sign-in's link = %v, %v; want 400", resp.StatusCode, err)
		}
	})
	t.Run("logout", func(t *testing.T) {
		out, _, code := e.oauthfs(t, "logout", "Test")
		if code != 0 || out != "signed out of Test\n" {
			t.Errorf("logout = %q (exit %d)", out, code)
		}
		if _, err := os.ReadFile(filepath.Join(e.mnt, testGUID, "access_token")); !errors.Is(err, syscall.ENOKEY) {
			t.Errorf("read after logout = %v; want ENOKEY", err)
		}
	})
	t.Run("expired and unavailable", func(t *testing.T) {
		e.seed(t, 1)
		e.p.SetMode(localprovider.ServerError)
		waitFor(t, func() bool { _, _, c := e.oauthfs(t, "token", "Test"); return c == 6 })
		if _, err := os.ReadFile(filepath.Join(e.mnt, testGUID, "access_token")); !errors.Is(err, syscall.EIO) {
			t.Errorf("read with the provider failing = %v; want EIO", err)
		}
		e.seed(t, 1)
		e.p.SetMode(localprovider.InvalidGrant)
		waitFor(t, func() bool { _, _, c := e.oauthfs(t, "token", "Test"); return c == 5 })
		_, errOut, _ := e.oauthfs(t, "token", "Test")
		if !strings.Contains(errOut, "sign-in expired") || !strings.Contains(errOut, "oauthfs login Test") {
			t.Errorf("token after invalid_grant: %q", errOut)
		}
		if _, err := os.ReadFile(filepath.Join(e.mnt, testGUID, "access_token")); !errors.Is(err, syscall.EKEYEXPIRED) {
			t.Errorf("read after invalid_grant = %v; want EKEYEXPIRED", err)
		}
	})

	// SIGTERM unmounts cleanly.
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		if m.err != nil {
			t.Errorf("mount exited with %v after SIGTERM", m.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mount did not exit after SIGTERM")
	}
	if isMounted(e.mnt) {
		t.Errorf("%s still mounted after SIGTERM", e.mnt)
	}
	logs := m.stderr.String()
	if !strings.Contains(logs, "level=DEBUG") || !strings.Contains(logs, "credentials stored") {
		t.Errorf("expected debug logs, got:\n%s", logs)
	}
	for _, s := range []string{canarySecret, "CANARYtok"} {
		if strings.Contains(logs, s) {
			t.Errorf("mount logs contain %q", s)
		}
	}
}

func TestCLIStaleMountIsRecovered(t *testing.T) {
	e := newCLIEnv(t)
	m := e.startMount(t)
	m.cmd.Process.Kill()
	<-m.done
	var st syscall.Statfs_t
	if err := syscall.Statfs(e.mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after SIGKILL statfs = %v; want ENOTCONN (a stale mount)", err)
	}
	e.startMount(t)
	if _, err := os.ReadFile(filepath.Join(e.mnt, "integrations.json")); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestCLIMountRefusesBadInput(t *testing.T) {
	e := newCLIEnv(t)
	file := filepath.Join(e.dir, "afile")
	os.WriteFile(file, nil, 0o600)
	badCfg := filepath.Join(e.dir, "bad.toml")
	os.WriteFile(badCfg, []byte("[broker]\nsocket = \"x\"\n\n[[integration]]\nname = \"A\"\nclient_id = \"i\"\nclient_secret = \"s\"\nauth_url = \"http://example.com/a\"\ntoken_url = \"https://example.com/t\"\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing mount point", []string{"mount", "--config", e.cfg, filepath.Join(e.dir, "nope")}, 9, "does not exist (create it with mkdir -p"},
		{"mount point is a file", []string{"mount", "--config", e.cfg, file}, 9, "is not a directory"},
		{"invalid config", []string{"mount", "--config", badCfg, e.mnt}, 8, "bad.toml:4: integration \"A\": auth_url: \"http://example.com/a\" uses plain http"},
		{"missing config", []string{"mount", "--config", filepath.Join(e.dir, "none.toml"), e.mnt}, 1, "hint: write a configuration"},
		{"config and broker", []string{"mount", "--config", e.cfg, "--broker", "/x", e.mnt}, 2, "cannot be used together"},
		{"no broker socket", []string{"mount", "--broker", filepath.Join(e.dir, "none.sock"), e.mnt}, 6, "no broker is running"},
		{"not a broker", []string{"mount", "--broker", e.cfg, e.mnt}, 6, ""},
		{"no mount point", []string{"mount", "--config", e.cfg}, 2, "exactly one MOUNTPOINT"},
		{"bad log level", []string{"mount", "--config", e.cfg, "--log-level", "loud", e.mnt}, 2, "--log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := e.oauthfs(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) || !strings.HasPrefix(errOut, "oauthfs: error: ") {
				t.Errorf("%v: exit %d, stderr %q; want exit %d with %q", tc.args, code, errOut, tc.code, tc.want)
			}
			if isMounted(e.mnt) {
				t.Fatalf("%s was mounted", e.mnt)
			}
		})
	}
	t.Run("corrupt store", func(t *testing.T) {
		state := filepath.Join(e.dir, "state")
		os.MkdirAll(state, 0o700)
		os.WriteFile(filepath.Join(state, "key"), []byte(strings.Repeat("0f", 32)+"\n"), 0o600)
		store := filepath.Join(state, fmt.Sprintf("%d.store", os.Getuid()))
		os.WriteFile(store, []byte("OAUTHFS1 this is not a sealed store at all"), 0o600)
		cfg2 := filepath.Join(e.dir, "config-state.toml")
		b, _ := os.ReadFile(e.cfg)
		os.WriteFile(cfg2, bytes.Replace(b, []byte(`state_dir = ""`), []byte(fmt.Sprintf("state_dir = %q", state)), 1), 0o600)
		_, errOut, code := e.oauthfs(t, "mount", "--config", cfg2, e.mnt)
		if code == 0 || !strings.Contains(errOut, store) || !strings.Contains(errOut, "left untouched") {
			t.Errorf("mount with a corrupt store: exit %d, %q", code, errOut)
		}
		if got, _ := os.ReadFile(store); string(got) != "OAUTHFS1 this is not a sealed store at all" {
			t.Errorf("the corrupt store was changed")
		}
	})
	t.Run("already mounted", func(t *testing.T) {
		e.startMount(t)
		cfg2 := filepath.Join(e.dir, "config2.toml")
		b, _ := os.ReadFile(e.cfg)
		os.WriteFile(cfg2, bytes.Replace(b, []byte("broker.sock"), []byte("broker2.sock"), 1), 0o600)
		_, errOut, code := e.oauthfs(t, "mount", "--config", cfg2, e.mnt)
		if code != 9 || !strings.Contains(errOut, "is already mounted") {
			t.Errorf("second mount: exit %d, %q; want 9, already mounted", code, errOut)
		}
		_, errOut, code = e.oauthfs(t, "mount", "--config", e.cfg, filepath.Join(e.dir))
		if code == 0 || !strings.Contains(errOut, "already listening") {
			t.Errorf("second broker on the same socket: exit %d, %q; want a refusal", code, errOut)
		}
		if _, err := os.ReadFile(filepath.Join(e.mnt, "integrations.json")); err != nil {
			t.Errorf("the first mount was disturbed: %v", err)
		}
	})
}

func TestCLINoBroker(t *testing.T) {
	cmd := exec.Command(binary, "token", "--broker", filepath.Join(t.TempDir(), "none.sock"), "GitHub")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 6 || !strings.Contains(string(out), "no broker is running") || !strings.Contains(string(out), "hint: is 'oauthfs mount' running?") {
		t.Errorf("token without a broker = %q, %v", out, err)
	}
	if n := strings.Count(string(out), "oauthfs mount"); n != 1 {
		t.Errorf("token without a broker gives its advice %d times; want once:\n%s", n, out)
	}
}

func TestCLIVersionAndHelp(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "oauthfs ") {
		t.Errorf("version = %q, %v", out, err)
	}
	for _, c := range []string{"mount", "login", "token", "list", "logout", "version"} {
		out, err := exec.Command(binary, c, "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage: oauthfs "+c) {
			t.Errorf("%s --help = %q, %v", c, out, err)
		}
	}
}

// TestCLIRestartRightAfterKill restarts a mount within 50 ms of a SIGKILL,
// as systemd's Restart= does, twenty times: the dead mount must be seen
// as stale every time, whatever the kernel still caches about it.
func TestCLIRestartRightAfterKill(t *testing.T) {
	e := newCLIEnv(t)
	m := e.startMount(t)
	for i := 0; i < 20; i++ {
		os.ReadFile(filepath.Join(e.mnt, "integrations.json")) // fill the kernel's caches
		os.Stat(e.mnt)
		m.cmd.Process.Kill()
		<-m.done
		// At once, like Restart=: the new process starts well within
		// 50 ms of the kill (startProc fails the test if it exits).
		cmd := exec.Command(binary, "mount", "--config", e.cfg, e.mnt)
		m = startProc(t, cmd, syscall.SIGTERM, e.mnt, func(*proc) bool { return served(e.mnt) })
	}
}

// TestCLILoginWaitsBetweenQuestions: a broker that answers "pending"
// without waiting does not make login spin.
func TestCLILoginWaitsBetweenQuestions(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "broker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var polls atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			fmt.Fprint(w, `{"login_id":"L","url":"http://127.0.0.1:9/start?state=s","name":"X","guid":"g"}`)
			return
		}
		if r.Method == http.MethodGet {
			polls.Add(1)
		}
		fmt.Fprint(w, `{"status":"pending","name":"X","guid":"g"}`)
	})}
	go srv.Serve(l)
	defer srv.Close()
	cmd := exec.Command(binary, "login", "--no-browser", "--broker", sock, "X")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if n := polls.Load(); n < 1 || n > 8 {
		t.Errorf("login asked %d times in 3 s of immediate answers; want about one a second", n)
	}
}
