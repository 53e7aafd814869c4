package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// TestIsolationBetweenUsers runs the broker daemon as root and three
// session mounts for each of two real users.
func TestIsolationBetweenUsers(t *testing.T) {
	requireE2E(t, os.Geteuid() == 0, "root (to create users)")
	for _, tool := range []string{"useradd", "setpriv", "fusermount3", "curl"} {
		_, err := exec.LookPath(tool)
		requireE2E(t, err == nil, tool)
	}
	fusetest.Require(t)
	// Debian's udev makes /dev/fuse 0666 so users can mount; some
	// container hosts do not. Restore the usual mode for this test.
	if st, err := os.Stat("/dev/fuse"); err == nil && st.Mode().Perm() != 0o666 {
		os.Chmod("/dev/fuse", 0o666)
		t.Cleanup(func() { os.Chmod("/dev/fuse", st.Mode().Perm()) })
	}

	// A world-traversable directory for the binary, config and mounts;
	// the state directory inside is root's alone.
	top, err := os.MkdirTemp("", "oauthfs-iso")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(top, 0o755)
	t.Cleanup(func() { os.RemoveAll(top) })
	bin := filepath.Join(top, "oauthfs")
	data, _ := os.ReadFile(binary)
	os.WriteFile(bin, data, 0o755)

	pid := os.Getpid()
	a, b := addUser(t, fmt.Sprintf("oafs-a-%d", pid)), addUser(t, fmt.Sprintf("oafs-b-%d", pid))
	p := localprovider.New()
	t.Cleanup(p.Close)
	p.SetLifetime(time.Hour)
	d := &daemonEnv{cliEnv: &cliEnv{p: p, dir: top, cfg: filepath.Join(top, "config.toml"), socket: filepath.Join(top, "run", "broker.sock")},
		state: filepath.Join(top, "state")}
	d.writeConfig(t, "Test")
	br := d.startBroker(t)

	// Three session mounts per user, each under the user's own uid.
	mounts := map[string][]string{}
	for _, u := range []unixUser{a, b} {
		for i := 1; i <= 3; i++ {
			mnt := filepath.Join(top, fmt.Sprintf("%s-%d", u.name, i))
			os.Mkdir(mnt, 0o700)
			os.Chown(mnt, u.uid, u.gid)
			cmd := u.as(context.Background(), bin, "mount", "--broker", d.socket, mnt)
			stderr := &testutil.SyncBuffer{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				done := make(chan struct{})
				go func() { cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
				}
				syscall.Unmount(mnt, syscall.MNT_DETACH)
			})
			waitFor(t, func() bool { return isMounted(mnt) })
			mounts[u.name] = append(mounts[u.name], mnt)
		}
	}

	// Each user imports their own tokens through the socket.
	seed := func(u unixUser, expiresIn int) string {
		t.Helper()
		at, rt, _ := p.Grant()
		body := fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"expires_in":%d}`, at, rt, expiresIn)
		out, err := u.run(t, "curl", "-sf", "--unix-socket", d.socket, "-X", "PUT", "-d", body, "http://oauthfs/v1/integrations/Test/credentials")
		if err != nil {
			t.Fatalf("seed as %s: %v: %s", u.name, err, out)
		}
		return at
	}
	tokA, tokB := seed(a, 3600), seed(b, 3600)
	tokenPath := func(mnt string) string { return filepath.Join(mnt, "by-name", "Test", "access_token") }

	t.Run("each user sees only their own tokens", func(t *testing.T) {
		for _, tc := range []struct {
			u    unixUser
			want string
		}{{a, tokA}, {b, tokB}} {
			for _, mnt := range mounts[tc.u.name] {
				if out, err := tc.u.run(t, "cat", tokenPath(mnt)); err != nil || out != tc.want {
					t.Errorf("%s: cat %s = %q, %v", tc.u.name, mnt, out, err)
				}
			}
			if out, err := tc.u.run(t, bin, "token", "--broker", d.socket, "Test"); err != nil || out != tc.want {
				t.Errorf("%s: oauthfs token = %q, %v", tc.u.name, out, err)
			}
			out, _ := tc.u.run(t, "curl", "-s", "--unix-socket", d.socket, "http://oauthfs/v1/integrations/Test/token")
			if !strings.Contains(out, tc.want) {
				t.Errorf("%s: the socket answered %q", tc.u.name, out)
			}
		}
	})
	// B has read its mounts above, so the kernel keeps B's token: the
	// checks below run against a warm cache.
	t.Run("A cannot reach B's tokens", func(t *testing.T) {
		bStore, _ := filepath.Glob(filepath.Join(d.state, strconv.Itoa(b.uid), "*.cred"))
		if len(bStore) != 1 {
			t.Fatalf("B's store files: %v; want one", bStore)
		}
		for _, target := range []string{tokenPath(mounts[b.name][0]), bStore[0]} {
			out, err := a.run(t, "cat", target)
			if err == nil || !strings.Contains(out, "Permission denied") || strings.Contains(out, tokB) {
				t.Errorf("A: cat %s = %q, %v; want Permission denied", target, out, err)
			}
		}
		for _, path := range []string{"/v1/integrations/Test/token", "/v1/integrations"} {
			out, _ := a.run(t, "curl", "-s", "--unix-socket", d.socket, "http://oauthfs"+path)
			if strings.Contains(out, tokB) {
				t.Errorf("A got B's token from %s", path)
			}
		}
		// Not even root can read a mount made without allow_other.
		if _, err := os.ReadFile(tokenPath(mounts[b.name][0])); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("root reading B's mount = %v; want permission denied", err)
		}
		raw, _ := os.ReadFile(bStore[0])
		if len(raw) == 0 || bytes.Contains(raw, []byte(tokB)) {
			t.Errorf("B's store file is missing or holds the token in clear")
		}
	})
	t.Run("one refresh per user at expiry", func(t *testing.T) {
		oldA, oldB := seed(a, 2), seed(b, 2)
		before := p.Refreshes()
		var wg sync.WaitGroup
		results := map[string]string{}
		var mu sync.Mutex
		for _, tc := range []struct {
			u   unixUser
			old string
		}{{a, oldA}, {b, oldB}} {
			for _, mnt := range mounts[tc.u.name] {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Read in a loop until the token changes.
					script := fmt.Sprintf(`end=$(($(date +%%s)+20)); while [ "$(cat %q)" = %q ] && [ $(date +%%s) -lt $end ]; do :; done; cat %q`, tokenPath(mnt), tc.old, tokenPath(mnt))
					out, err := tc.u.run(t, "sh", "-c", script)
					if err != nil {
						t.Errorf("%s: %v: %s", mnt, err, out)
					}
					mu.Lock()
					results[mnt] = out
					mu.Unlock()
				}()
			}
		}
		wg.Wait()
		if n := p.Refreshes() - before; n != 2 {
			t.Errorf("refreshes = %d; want exactly one per user (2)", n)
		}
		for _, tc := range []struct {
			u   unixUser
			old string
		}{{a, oldA}, {b, oldB}} {
			ms := mounts[tc.u.name]
			for _, m := range ms {
				if results[m] == tc.old || results[m] != results[ms[0]] || !p.Issued(results[m]) {
					t.Errorf("%s: %q; want the one refreshed token of %s", m, results[m], tc.u.name)
				}
			}
		}
		tokA, _ = a.run(t, "cat", tokenPath(mounts[a.name][0]))
	})
	t.Run("A signs in through the daemon", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := a.as(ctx, bin, "login", "--no-browser", "--broker", d.socket, "Test")
		out, _ := cmd.StdoutPipe()
		cmd.Start()
		sc := bufio.NewScanner(out)
		sc.Scan()
		if code, page := browse(t, sc.Text()); code != 200 {
			t.Fatalf("sign-in flow: %d %s", code, page)
		}
		sc.Scan()
		if err := cmd.Wait(); err != nil || sc.Text() != "signed in to Test" {
			t.Fatalf("login as A = %q, %v", sc.Text(), err)
		}
		got, err := a.run(t, "cat", tokenPath(mounts[a.name][1]))
		if err != nil || got == tokA || !p.Issued(got) {
			t.Errorf("A's mount after sign-in = %q, %v; want the new token", got, err)
		}
		tokA = got
		if got, _ := b.run(t, "cat", tokenPath(mounts[b.name][0])); got == tokA {
			t.Errorf("B sees A's new token")
		}
		if out, err := a.run(t, bin, "list", "--broker", d.socket); err != nil || !strings.Contains(out, "Test (") || !strings.Contains(out, "): authenticated") {
			t.Errorf("list as A = %q, %v", out, err)
		}
	})
	t.Run("a reload while readers are busy loses nothing", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var readers []*exec.Cmd
		var outs []*bytes.Buffer
		for _, mnt := range mounts[a.name] {
			// 300 reads; print how many did not return the token.
			script := fmt.Sprintf(`bad=0; i=0; while [ $i -lt 300 ]; do [ "$(cat %q 2>/dev/null)" = %q ] || bad=$((bad+1)); i=$((i+1)); done; echo $bad`, tokenPath(mnt), tokA)
			cmd := a.as(ctx, "sh", "-c", script)
			out := &bytes.Buffer{}
			cmd.Stdout, cmd.Stderr = out, io.Discard
			cmd.Start()
			readers, outs = append(readers, cmd), append(outs, out)
		}
		for i := 0; i < 4; i++ {
			if i%2 == 0 {
				d.writeConfig(t, "Test", "Extra")
			} else {
				d.writeConfig(t, "Test")
			}
			n := strings.Count(br.stderr.String(), "configuration reloaded")
			br.cmd.Process.Signal(syscall.SIGHUP)
			waitFor(t, func() bool { return strings.Count(br.stderr.String(), "configuration reloaded") > n })
		}
		for i, cmd := range readers {
			cmd.Wait()
			if got := strings.TrimSpace(outs[i].String()); got != "0" {
				t.Errorf("reader %d: %s reads failed or returned another token during reloads", i, got)
			}
		}
		if n := strings.Count(br.stderr.String(), "configuration reloaded"); n != 4 {
			t.Errorf("%d reloads happened; want 4", n)
		}
	})
	t.Run("each user's settings page is their own", func(t *testing.T) {
		// Each user asks for a one-time link over the socket and opens it
		// in a browser of their own.
		open := func(u unixUser) (*http.Client, string) {
			out, err := u.run(t, bin, "settings", "--no-browser", "--broker", d.socket)
			link := strings.TrimSpace(out)
			if err != nil || !strings.HasPrefix(link, "http://") {
				t.Fatalf("settings as %s = %q, %v", u.name, out, err)
			}
			jar, _ := cookiejar.New(nil)
			c := &http.Client{Jar: jar}
			code, fwd := httpGet(t, c, link)
			m := regexp.MustCompile(`url=(/settings\?s=[^"]+)"`).FindStringSubmatch(fwd)
			if code != 200 || m == nil {
				t.Fatalf("%s's link = %d %q", u.name, code, fwd)
			}
			return c, link[:strings.Index(link, "/settings/open")] + m[1]
		}
		ca, pageURLA := open(a)
		cb, pageURLB := open(b)
		web := pageURLA[:strings.Index(pageURLA, "/settings")]
		keyA := pageURLA[strings.Index(pageURLA, "?"):]
		keyB := pageURLB[strings.Index(pageURLB, "?"):]
		_, pageA := httpGet(t, ca, pageURLA)
		code, pageB := httpGet(t, cb, pageURLB)
		if code != 200 || !strings.Contains(pageB, "<strong>"+b.name+"</strong>") || strings.Contains(pageB, a.name) ||
			!strings.Contains(pageA, "<strong>"+a.name+"</strong>") || strings.Contains(pageA, b.name) {
			t.Fatalf("each page must name its own user only: A's names B %v, B's names A %v",
				strings.Contains(pageA, b.name), strings.Contains(pageB, a.name))
		}
		// B signs out from B's page: B's mounts lose the token, A's keep A's.
		csrfB := hiddenRE.FindStringSubmatch(pageB)
		guid := regexp.MustCompile(`/settings/integrations/([0-9a-f-]{36})/signout`).FindStringSubmatch(pageB)
		if csrfB == nil || guid == nil {
			t.Fatalf("B's page has no sign-out form:\n%s", pageB)
		}
		form := url.Values{"csrf": {csrfB[2]}}
		// A's browser with B's form token changes nothing.
		req, _ := http.NewRequest("POST", web+"/settings/integrations/"+guid[1]+"/signout"+keyA, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, err := ca.Do(req); err != nil || resp.StatusCode != 403 {
			t.Errorf("A's session with B's csrf = %v, %v; want 403", resp, err)
		} else {
			resp.Body.Close()
		}
		resp, err := cb.PostForm(web+"/settings/integrations/"+guid[1]+"/signout"+keyB, form)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("B's sign-out from the page = %v, %v", resp, err)
		}
		resp.Body.Close()
		waitFor(t, func() bool {
			_, err := b.run(t, "cat", tokenPath(mounts[b.name][2]))
			return err != nil
		})
		if got, err := a.run(t, "cat", tokenPath(mounts[a.name][2])); err != nil || got != tokA {
			t.Errorf("A's mount after B's sign-out = %q, %v; want A's token", got, err)
		}
	})
}

// httpGet gets u with c and returns the status and body.
func httpGet(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
