package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAuditLog runs the daemon with an audit log: an import, a token
// handed to 'oauthfs token' (with its pid and executable), a refresh, a
// sign-out with its revocation and a reload land in order, one JSON
// object a line; a rotated file is reopened on SIGHUP; no token, refresh
// token or client secret appears.
func TestAuditLog(t *testing.T) {
	d := newDaemonEnv(t)
	d.p.SetPrefix("CANARY")
	logFile := filepath.Join(d.dir, "audit.jsonl")
	cfg, _ := os.ReadFile(d.cfg)
	text := strings.Replace(string(cfg), "[broker]\n", fmt.Sprintf("[broker]\naudit_log = %q\nrefresh_margin = \"1s\"\n", logFile), 1)
	text = strings.ReplaceAll(text, "[[integration]]\n", "[[integration]]\nrevocation_url = \""+d.p.URL+"/revoke\"\n")
	os.WriteFile(d.cfg, []byte(text), 0o644)
	br := d.startBroker(t)
	access, refresh := d.seed(t, 2)
	if out, _, code := d.oauthfs(t, "token", "Test"); code != 0 || out != access {
		t.Fatalf("token = %q, exit %d", out, code)
	}
	time.Sleep(2100 * time.Millisecond)
	if _, _, code := d.oauthfs(t, "token", "Test"); code != 0 {
		t.Fatalf("token after expiry: exit %d", code)
	}
	if _, _, code := d.oauthfs(t, "logout", "Test"); code != 0 {
		t.Fatalf("logout: exit %d", code)
	}
	os.Rename(logFile, logFile+".1") // logrotate
	n := strings.Count(br.stderr.String(), "configuration reloaded")
	br.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Count(br.stderr.String(), "configuration reloaded") > n })
	br.cmd.Process.Signal(syscall.SIGTERM)
	<-br.done

	var kinds []string
	var all strings.Builder
	for _, f := range []string{logFile + ".1", logFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("not a JSON line: %q", sc.Text())
			}
			kind := fmt.Sprint(ev["event"], "/", ev["result"])
			if ev["event"] == "token" {
				if exe, _ := ev["exe"].(string); !strings.HasSuffix(exe, "/oauthfs") || ev["pid"] == nil || ev["user"] != "root" {
					t.Errorf("token event without the peer: %v", ev)
				}
			}
			kinds = append(kinds, kind)
		}
	}
	want := "sign_in/ok token/ok refresh/ok token/ok sign_out/ok revocation/ok reload/ok"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("audit events:\n  %s\nwant\n  %s", got, want)
	}
	for _, secret := range []string{access, refresh, "CANARY", "test-secret"} {
		if strings.Contains(all.String(), secret) {
			t.Errorf("the audit log holds %q", secret)
		}
	}
	// An audit log that cannot be opened stops the start, with the reason.
	os.WriteFile(d.cfg, []byte(strings.Replace(text, logFile, d.dir, 1)), 0o644)
	out, err := exec.Command(binary, "broker", "--config", d.cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "audit_log") || !strings.Contains(string(out), "is a directory") {
		t.Errorf("broker with a directory as audit_log: %v\n%s", err, out)
	}
}
