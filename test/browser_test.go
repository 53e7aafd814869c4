package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBrowserSignIn signs in through oidc-provider's real login and
// consent pages in headless Chromium: 'oauthfs login' opens the link with
// $BROWSER, which is a playwright-core script driving /usr/bin/chromium.
func TestBrowserSignIn(t *testing.T) {
	_, err := os.Stat("/usr/bin/chromium")
	requireE2E(t, err == nil, "/usr/bin/chromium (Debian package chromium)")
	_, err = os.Stat("oidc/node_modules/playwright-core")
	requireE2E(t, err == nil, "test/oidc/node_modules/playwright-core (npm ci)")
	e, o := oidcEnv(t)
	e.startMount(t)

	script, _ := filepath.Abs("oidc/browser.mjs")
	logFile := filepath.Join(e.dir, "browser.log")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "login", "--broker", e.socket, "Demo")
	cmd.Env = append(os.Environ(), "BROWSER=node "+script, "BROWSER_LOG="+logFile,
		"SCREENSHOT="+filepath.Join(e.dir, "signed-in.png"), "DISPLAY=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	browserLog, _ := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("login: %v\nstdout: %s\nstderr: %s\nbrowser: %s", err, out, stderr.String(), browserLog)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "http://") || lines[1] != "signed in to Demo as alice" {
		t.Errorf("login stdout = %q; want the link, then 'signed in to Demo as alice'", out)
	}
	if !strings.Contains(stderr.String(), "Opened the sign-in link in a browser") {
		t.Errorf("login stderr = %q; want it to say the browser was opened", stderr.String())
	}
	// login exits when the callback completes; the browser, which login
	// started and left running, logs the page it landed on just after.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(string(browserLog), "callback page: ") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		browserLog, _ = os.ReadFile(logFile)
	}
	// The browser was handed a local file, never the secret link.
	if !strings.Contains(string(browserLog), "argv: file://") || strings.Contains(string(browserLog), "state=") {
		t.Errorf("the browser's command line: want a file:// page and no state; log:\n%s", browserLog)
	}
	if !strings.Contains(string(browserLog), "confirmation page: Sign in to Demo for user root on host ") {
		t.Errorf("the confirmation page did not name the user and host; log:\n%s", browserLog)
	}
	if !strings.Contains(string(browserLog), "callback page: Signed in to Demo as alice") {
		t.Errorf("browser log:\n%s", browserLog)
	}
	tok, err := readToken(e)
	if err != nil {
		t.Fatal(err)
	}
	if code, sub := o.userinfo(t, tok); code != 200 || sub != "alice" {
		t.Errorf("userinfo with the token = %d %q", code, sub)
	}
}
