package test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/testutil"
)

// deviceLogin starts 'oauthfs login --device Demo' and returns the
// process, the page it printed, the code, and its stderr.
func deviceLogin(t *testing.T, e *cliEnv) (*exec.Cmd, *bufio.Scanner, string, string, *testutil.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(binary, "login", "--device", "--broker", e.socket, "Demo")
	out, _ := cmd.StdoutPipe()
	errb := &testutil.SyncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(out)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "http://") || !strings.HasPrefix(lines[1], "code: ") {
		cmd.Wait()
		t.Fatalf("login --device printed %q; want the page and 'code: ...'; stderr:\n%s", lines, errb)
	}
	return cmd, sc, lines[0], strings.TrimPrefix(lines[1], "code: "), errb
}

// approveDevice goes through oidc-provider's device pages for page, as
// a person on another device would: the code's confirmation (Continue,
// or Abort when approve is false), then login as alice and consent. It
// returns the last page.
func approveDevice(t *testing.T, page, code string, approve bool) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	resp = submitForm(t, c, resp, nil) // the page's self-submitting form
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Confirm Device") || !strings.Contains(string(body), code) {
		t.Fatalf("confirmation page (HTTP %d) lacks the code %q:\n%s", resp.StatusCode, code, body)
	}
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	if !approve {
		resp = submitForm(t, c, resp, url.Values{"abort": {"yes"}})
	} else {
		resp = submitForm(t, c, resp, nil)
		resp = submitForm(t, c, resp, url.Values{"prompt": {"login"}, "login": {"alice"}, "password": {"wonderland"}})
		resp = submitForm(t, c, resp, url.Values{"prompt": {"consent"}})
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

// TestDeviceSignIn signs in with 'oauthfs login --device' against
// oidc-provider's device flow and its real verification pages: approved
// after one slow_down, denied, expired, and cancelled with Ctrl-C.
func TestDeviceSignIn(t *testing.T) {
	t.Run("approved after slow_down", func(t *testing.T) {
		e, o := oidcEnv(t, "DEVICE_INTERVAL=1", "SLOW_DOWN_ONCE=1")
		e.startMount(t)
		cmd, sc, page, code, errb := deviceLogin(t, e)
		if !strings.Contains(page, "/device?user_code=") {
			t.Errorf("page %q; want the verification_uri_complete", page)
		}
		// Approve after the first two polls: one slow_down, then one
		// authorization_pending 5 s later.
		deadline := time.Now().Add(20 * time.Second)
		for len(o.stats(t).DevicePolls) < 2 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if last := approveDevice(t, page, code, true); !strings.Contains(last, "Sign-in Success") {
			t.Fatalf("last device page:\n%s", last)
		}
		var rest strings.Builder
		for sc.Scan() {
			rest.WriteString(sc.Text() + "\n")
		}
		if err := cmd.Wait(); err != nil || rest.String() != "signed in to Demo as alice\n" {
			t.Fatalf("login --device: %v, stdout %q, stderr:\n%s", err, rest.String(), errb)
		}
		polls := o.stats(t).DevicePolls
		if len(polls) < 3 {
			t.Fatalf("device polls %v; want at least 3", polls)
		}
		// The first poll waits the interval; after slow_down the
		// interval grows by 5 s (RFC 8628 §3.5).
		if gap := polls[1] - polls[0]; gap < 5900 {
			t.Errorf("gap after slow_down = %d ms; want >= 6 s", gap)
		}
		tok, err := readToken(e)
		if err != nil {
			t.Fatal(err)
		}
		if code, sub := o.userinfo(t, tok); code != 200 || sub != "alice" {
			t.Errorf("userinfo with the mount's token = %d %q", code, sub)
		}
		if strings.Contains(errb.String(), oidcSecret) {
			t.Error("login's stderr shows the client secret")
		}
	})
	t.Run("denied, cancelled", func(t *testing.T) {
		e, o := oidcEnv(t, "DEVICE_INTERVAL=1")
		e.startMount(t)
		cmd, _, page, code, errb := deviceLogin(t, e)
		approveDevice(t, page, code, false)
		err := cmd.Wait()
		if err == nil || !strings.Contains(errb.String(), "denied") {
			t.Errorf("login --device after Abort: %v, stderr:\n%s", err, errb)
		}
		if _, err := readToken(e); err == nil {
			t.Error("the mount serves a token after a denied sign-in")
		}
		cmd, _, _, _, errb = deviceLogin(t, e)
		time.Sleep(1500 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err == nil || !strings.Contains(errb.String(), "cancelled") {
			t.Errorf("login --device after Ctrl-C: %v, stderr:\n%s", err, errb)
		}
		time.Sleep(300 * time.Millisecond) // a request already on its way may land
		n := len(o.stats(t).DevicePolls)
		time.Sleep(2500 * time.Millisecond)
		if m := len(o.stats(t).DevicePolls); m != n {
			t.Errorf("the broker polled %d times after Ctrl-C", m-n)
		}
	})
	t.Run("expired", func(t *testing.T) {
		e, _ := oidcEnv(t, "DEVICE_INTERVAL=1", "DEVICE_TTL=3")
		e.startMount(t)
		cmd, _, _, _, errb := deviceLogin(t, e)
		if err := cmd.Wait(); err == nil || !strings.Contains(errb.String(), "expired") {
			t.Errorf("login --device with an expired code: %v, stderr:\n%s", err, errb)
		}
	})
}
