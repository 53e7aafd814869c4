package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/testutil"
)

// scrapeMetrics fetches the broker's /metrics, parses it with the
// official text parser and returns the families and the raw text.
func scrapeMetrics(t *testing.T, addr string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: HTTP %d %s", resp.StatusCode, raw)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("the text parser refuses the metrics: %v", err)
	}
	return mf, string(raw)
}

// TestMetrics runs the daemon with metrics_listen through a browser
// sign-in, an import, a refresh, a transient failure, a refused refresh
// token, reads that fail and a sign-out with its revocation, and checks
// each counter in a scrape parsed by the Prometheus text parser. No
// token, code or client secret appears in any scrape. A metrics address
// that cannot be listened on stops the start, with the reason.
func TestMetrics(t *testing.T) {
	d := newDaemonEnv(t)
	d.p.SetPrefix("CANARY")
	addr := freeAddr(t)
	cfg, _ := os.ReadFile(d.cfg)
	text := strings.Replace(string(cfg), "[broker]\n", fmt.Sprintf("[broker]\nmetrics_listen = %q\n", addr), 1)
	text = strings.ReplaceAll(text, "[[integration]]\n", "[[integration]]\nrevocation_url = \""+d.p.URL+"/revoke\"\n")
	os.WriteFile(d.cfg, []byte(text), 0o644)
	br := d.startBroker(t)
	d.startClientMount(t)
	var scrapes strings.Builder
	scrape := func() map[string]*dto.MetricFamily {
		mf, raw := scrapeMetrics(t, addr)
		scrapes.WriteString(raw)
		return mf
	}
	// The mount opens its event stream just after it is mounted.
	waitFor(t, func() bool { return testutil.MetricValue(scrape(), "oauthfs_session_mounts", "") == 1 })

	// A browser sign-in to Other: the code exchanged at the token endpoint.
	cmd := exec.Command(binary, "login", "--no-browser", "--broker", d.socket, "Other")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Scan()
	if code, page := browse(t, sc.Text()); code != 200 {
		t.Fatalf("sign-in: HTTP %d %s", code, page)
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("login: %v", err)
	}
	if tok, err := d.readToken("Other"); err != nil || !d.p.Issued(tok) {
		t.Fatalf("read Other = %q, %v", tok, err)
	}

	// Imports to Test of a token that expires in a second: once it has,
	// each read asks the token endpoint, which answers, then fails, then
	// refuses the refresh token.
	var tokens []string
	for _, c := range []struct {
		mode  localprovider.Mode
		errno string // "": a refreshed token
	}{
		{localprovider.OK, ""},
		{localprovider.ServerError, "input/output error"},
		{localprovider.InvalidGrant, "key has expired"},
	} {
		d.p.SetMode(c.mode)
		a, r := d.seed(t, 1)
		tokens = append(tokens, a, r)
		time.Sleep(1100 * time.Millisecond)
		tok, err := d.readToken("Test")
		switch {
		case c.errno == "" && (err != nil || tok == a || !d.p.Issued(tok)):
			t.Fatalf("read Test = %q, %v; want a refreshed token", tok, err)
		case c.errno != "" && (err == nil || !strings.Contains(err.Error(), c.errno)):
			t.Fatalf("read Test in mode %d: %v; want %q", c.mode, err, c.errno)
		}
	}
	d.p.SetMode(localprovider.OK)
	if _, _, code := d.oauthfs(t, "token", "Nope"); code == 0 {
		t.Fatal("oauthfs token Nope succeeded")
	}

	mf := scrape()
	if got := testutil.MetricValue(mf, "oauthfs_users_signed_in", "integration=Other"); got != 1 {
		t.Errorf("users signed in to Other = %v, want 1", got)
	}
	if _, _, code := d.oauthfs(t, "logout", "Other"); code != 0 {
		t.Fatalf("logout: exit %d", code)
	}
	version, _ := exec.Command(binary, "version").Output()

	mf = scrape()
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"oauthfs_token_requests_total", "grant=authorization_code,integration=Other,outcome=ok", 1},
		{"oauthfs_token_request_duration_seconds", "grant=authorization_code,integration=Other", 1},
		{"oauthfs_token_requests_total", "grant=refresh_token,integration=Test,outcome=ok", 1},
		{"oauthfs_token_requests_total", "grant=refresh_token,integration=Test,outcome=transient", 1},
		{"oauthfs_token_requests_total", "grant=refresh_token,integration=Test,outcome=invalid_grant", 1},
		{"oauthfs_token_request_duration_seconds", "grant=refresh_token,integration=Test", 3},
		{"oauthfs_sign_ins_total", "integration=Other,outcome=ok,via=browser", 1},
		{"oauthfs_sign_ins_total", "integration=Test,outcome=ok,via=import", 3},
		{"oauthfs_sign_outs_total", "integration=Other,outcome=ok", 1},
		{"oauthfs_revocations_total", "integration=Other,outcome=ok", 1},
		{"oauthfs_reads_total", "errno=EKEYEXPIRED,integration=Test", 1},
		{"oauthfs_reads_total", "errno=EIO,integration=Test", 1},
		{"oauthfs_reads_total", "errno=ENOENT,integration=", 1},
		{"oauthfs_users_signed_in", "integration=Other", 0},
		{"oauthfs_users_signed_in", "integration=Test", 0},
		{"oauthfs_session_mounts", "", 1},
		{"oauthfs_store_writes_total", "outcome=failed", -1},
		{"oauthfs_build_info", "goversion=" + runtime.Version() + ",version=" + strings.TrimSpace(strings.TrimPrefix(string(version), "oauthfs ")), 1},
	} {
		t.Run(c.name+"{"+c.labels+"}", func(t *testing.T) {
			if got := testutil.MetricValue(mf, c.name, c.labels); got != c.want {
				t.Errorf("= %v, want %v", got, c.want)
			}
		})
	}
	// Reads that got a token: Other's first read and Test's refreshed one.
	if got := testutil.MetricValue(mf, "oauthfs_reads_total", "errno=OK,integration=Test") + testutil.MetricValue(mf, "oauthfs_reads_total", "errno=OK,integration=Other"); got < 2 {
		t.Errorf("reads that got a token = %v, want at least 2", got)
	}
	// Every sign-in, refresh and sign-out was written: 3 imports, 1
	// browser sign-in, 2 refreshes that changed the record (ok, and
	// invalid_grant), 1 sign-out.
	if got := testutil.MetricValue(mf, "oauthfs_store_writes_total", "outcome=ok"); got < 7 {
		t.Errorf("store writes = %v, want at least 7", got)
	}
	for _, s := range append(tokens, "CANARY", "test-secret") {
		if strings.Contains(scrapes.String(), s) {
			t.Errorf("a scrape holds %q", s)
		}
	}
	if strings.Contains(scrapes.String(), `user="`) || strings.Contains(scrapes.String(), `uid="`) {
		t.Error("a metric has a per-user label")
	}
	if !strings.Contains(br.stderr.String(), "metrics listening") {
		t.Errorf("the broker did not log its metrics address:\n%s", br.stderr)
	}

	t.Run("another user holding the metrics server's connections stalls no token read", func(t *testing.T) {
		requireE2E(t, os.Geteuid() == 0, "root (to add a Unix user)")
		_, err := os.Stat("/usr/bin/python3")
		requireE2E(t, err == nil, "/usr/bin/python3")
		mallory := addUser(t, "oauthfs-scraper")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// 64 connections, each sending half a request and waiting.
		script := `import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
held = []
for _ in range(64):
    try:
        c = socket.create_connection((host, int(port)), timeout=2)
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        held.append(c)
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(60)
`
		cmd := mallory.as(ctx, "/usr/bin/python3", "-c", script, addr)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		sc := bufio.NewScanner(out)
		if !sc.Scan() {
			t.Fatal("the other user's script printed nothing")
		}
		a, _ := d.seed(t, 3600)
		if got, _, code := d.oauthfs(t, "token", "Test"); code != 0 || got != a {
			t.Errorf("token while another user holds the metrics server (%s connections): %q, exit %d", sc.Text(), got, code)
		}
		cmd.Process.Kill()
		cmd.Wait()
		waitFor(t, func() bool {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	})
	t.Run("an address that cannot be listened on stops the start", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		busy := filepath.Join(d.dir, "busy.toml")
		os.WriteFile(busy, []byte(strings.Replace(text, addr, l.Addr().String(), 1)), 0o644)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, binary, "broker", "--config", busy).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "metrics_listen "+l.Addr().String()) ||
			!strings.Contains(string(out), "address already in use") || !strings.Contains(string(out), "hint:") {
			t.Errorf("broker with a busy metrics_listen: %v\n%s", err, out)
		}
	})
	t.Run("a malformed address is a configuration error", func(t *testing.T) {
		bad := filepath.Join(d.dir, "bad.toml")
		os.WriteFile(bad, []byte(strings.Replace(text, addr, "9464", 1)), 0o644)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, binary, "broker", "--config", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), `metrics_listen "9464": want host:port`) {
			t.Errorf("broker with metrics_listen = \"9464\": %v\n%s", err, out)
		}
	})
}

// TestHostHeaderChecked: the sign-in web server and the metrics server
// answer only for their own names (callback_url's host, a loopback name
// or address, metrics_listen's host): a page of another site whose name
// resolves to 127.0.0.1 (DNS rebinding) gets 421 Misdirected Request.
func TestHostHeaderChecked(t *testing.T) {
	d := newDaemonEnv(t)
	metricsAddr := freeAddr(t)
	cfg, _ := os.ReadFile(d.cfg)
	text := strings.Replace(string(cfg), "[broker]\n", fmt.Sprintf("[broker]\nmetrics_listen = %q\n", metricsAddr), 1)
	web := regexp.MustCompile(`(?m)^listen = "([^"]+)"`).FindStringSubmatch(text)[1]
	os.WriteFile(d.cfg, []byte(text), 0o600)
	d.startBroker(t)
	_, port, _ := net.SplitHostPort(web)
	for _, tc := range []struct {
		name, url, host string
		want            int
	}{
		{"sign-in, its own address", "http://" + web + "/settings", web, 401},
		{"sign-in, localhost", "http://" + web + "/settings", "localhost:" + port, 401},
		{"sign-in, a rebound name", "http://" + web + "/settings", "evil.example:" + port, 421},
		{"sign-in, a rebound name without port", "http://" + web + "/start?state=x", "evil.example", 421},
		{"metrics, its own address", "http://" + metricsAddr + "/metrics", metricsAddr, 200},
		{"metrics, a rebound name", "http://" + metricsAddr + "/metrics", "attacker.example", 421},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tc.url, nil)
			req.Host = tc.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("GET %s with Host %s = %d; want %d", tc.url, tc.host, resp.StatusCode, tc.want)
			}
		})
	}
}
