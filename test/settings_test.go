package test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitLog waits until file has a line "step: step" or an error line, for
// at most d, and returns the file.
func waitLog(t *testing.T, file, step string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(file)
		if strings.Contains(string(b), "step: "+step+"\n") {
			return string(b)
		}
		if strings.Contains(string(b), "error: ") || time.Now().After(deadline) {
			t.Fatalf("browser did not reach %q; log:\n%s", step, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSettingsPage works the Managed Credentials page in headless
// Chromium: 'oauthfs settings' opens the one-time link with $BROWSER (a
// playwright-core script); the page lists both integrations, shows and
// copies Demo's GUID, signs in through oidc-provider's real pages (the
// mount serves the token), refuses a cross-site post of its Sign out
// form, and signs out (the mount answers ENOKEY). The link works once.
func TestSettingsPage(t *testing.T) {
	_, err := os.Stat("/usr/bin/chromium")
	requireE2E(t, err == nil, "/usr/bin/chromium (Debian package chromium)")
	_, err = os.Stat("oidc/node_modules/playwright-core")
	requireE2E(t, err == nil, "test/oidc/node_modules/playwright-core (npm ci)")
	e, o := oidcEnv(t)
	e.startMount(t)
	out, _, _ := e.oauthfs(t, "list")
	guid := ""
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "Demo ("); ok {
			guid = rest[:36]
		}
	}

	script, _ := filepath.Abs("oidc/settings.mjs")
	logFile := filepath.Join(e.dir, "browser.log")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "settings", "--broker", e.socket)
	cmd.Env = append(os.Environ(), "BROWSER=node "+script, "BROWSER_LOG="+logFile, "STEP_DIR="+e.dir,
		"EVIL="+o.url+"/test/evil", "SCREENSHOT="+filepath.Join(e.dir, "settings.png"), "DISPLAY=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		b, _ := os.ReadFile(logFile)
		t.Fatalf("settings: %v\nstdout: %s\nstderr: %s\nbrowser: %s", err, stdout, stderr.String(), b)
	}
	link := strings.TrimSpace(string(stdout))
	if !strings.HasPrefix(link, "http://") || strings.Contains(link, "\n") {
		t.Fatalf("settings stdout = %q; want the link on its own line", stdout)
	}

	log := waitLog(t, logFile, "signed in", 90*time.Second)
	for _, want := range []string{
		"argv: file://",
		"page: /settings\n",
		"who: For the local user root on ",
		"integration: Demo = Not signed in\n",
		"integration: Other API = Not signed in\n",
		"guid: " + guid + "\n",
		"client id: oauthfs\n",
		"copied: " + guid + "\n",
		"flash: Signed in to Demo as alice.\n",
		"status: Signed in as alice\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("browser log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "key=") {
		t.Errorf("the browser was handed the link itself:\n%s", log)
	}
	tok, err := readToken(e)
	if err != nil {
		t.Fatalf("reading the mount after the page's sign-in: %v", err)
	}
	if code, sub := o.userinfo(t, tok); code != 200 || sub != "alice" {
		t.Errorf("userinfo with the mount's token = %d %q", code, sub)
	}
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("the one-time link used again = %d; want 400", resp.StatusCode)
	}

	os.WriteFile(filepath.Join(e.dir, "go1"), nil, 0o600)
	log = waitLog(t, logFile, "signed out", 60*time.Second)
	for _, want := range []string{
		"cross-site post: refused\n",
		"status after the cross-site post: Signed in as alice\n",
		"flash: Signed out of Demo.",
		"status: Not signed in\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("browser log lacks %q:\n%s", want, log)
		}
	}
	if _, err := readToken(e); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("reading the mount after the page's sign-out = %v; want ENOKEY", err)
	}
	if st := o.stats(t); st.ActiveRefreshTokens != 0 {
		t.Errorf("%d refresh tokens still active at the provider after the page's sign-out", st.ActiveRefreshTokens)
	}
}
