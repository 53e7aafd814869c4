package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"html"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/internal/fusetest"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/pgtest"
)

// clusterEnv is two broker hosts on one machine sharing one PostgreSQL
// database: two daemons (two sockets, two sign-in web servers, one key
// file), each with a session mount.
type clusterEnv struct {
	tls    bool // the sign-in web servers serve https (tls_cert_file)
	dir    string
	public string // the sign-in web servers' public address: A's, as if a load balancer stood there
	p      *localprovider.Provider
	dsn    string
	a      *clusterHost
	b      *clusterHost
}

// clusterHost is one broker of a clusterEnv.
type clusterHost struct {
	name, cfg, socket, mnt string
	web                    string // where its sign-in web server listens
	broker                 *proc
}

func newClusterEnv(t *testing.T, dsn string, lifetime time.Duration, brokerConfig ...string) *clusterEnv {
	t.Helper()
	fusetest.Require(t)
	e := &clusterEnv{dir: t.TempDir(), p: localprovider.New(), dsn: dsn, tls: strings.Contains(strings.Join(brokerConfig, "\n"), "tls_cert_file")}
	t.Cleanup(e.p.Close)
	e.p.SetLifetime(lifetime)
	e.p.SetRotate(true) // strict rotation: a refresh token works once
	os.WriteFile(filepath.Join(e.dir, "dsn"), []byte(dsn+"\n"), 0o600)
	webA, webB := freeAddr(t), freeAddr(t)
	e.public = webA
	e.a, e.b = e.host(t, "a", webA, brokerConfig...), e.host(t, "b", webB, brokerConfig...)
	e.a.start(t)
	e.b.start(t)
	for _, h := range []*clusterHost{e.a, e.b} {
		os.Mkdir(h.mnt, 0o700)
		startProc(t, exec.Command(binary, "mount", "--broker", h.socket, "--log-level", "debug", h.mnt), syscall.SIGTERM, h.mnt,
			func(*proc) bool { return isMounted(h.mnt) })
	}
	return e
}

func (e *clusterEnv) host(t *testing.T, name, web string, brokerConfig ...string) *clusterHost {
	h := &clusterHost{name: name, cfg: filepath.Join(e.dir, name+".toml"), socket: filepath.Join(e.dir, name, "broker.sock"),
		mnt: filepath.Join(e.dir, name+"-oauth"), web: web}
	cfg := fmt.Sprintf(`[broker]
socket = %q
listen = %q
callback_url = "%s://%s/callback"
cluster_url = "%s://%s"
state_dir = %q
key_file = %q
request_timeout = "2s"
%s
[store]
backend = "postgres"
dsn_file = %q

[[integration]]
name = "Test"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "%s/authorize"
token_url = "%s/token"
revocation_url = "%s/revoke"
`, h.socket, web, e.scheme(), e.public, e.scheme(), web, filepath.Join(e.dir, name, "state"), filepath.Join(e.dir, "key"), strings.Join(brokerConfig, "\n"), filepath.Join(e.dir, "dsn"), e.p.URL, e.p.URL, e.p.URL)
	if err := os.WriteFile(h.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// scheme is the sign-in web servers' scheme: https when the brokers
// serve TLS themselves.
func (e *clusterEnv) scheme() string {
	if e.tls {
		return "https"
	}
	return "http"
}

// start runs the host's broker daemon.
func (h *clusterHost) start(t *testing.T) {
	t.Helper()
	h.broker = startProc(t, exec.Command(binary, "broker", "--config", h.cfg, "--log-level", "debug"), syscall.SIGTERM, "",
		func(p *proc) bool { return strings.Contains(p.stderr.String(), "broker listening") })
}

func (h *clusterHost) read() (string, error) {
	b, err := os.ReadFile(filepath.Join(h.mnt, "by-name", "Test", "access_token"))
	return string(b), err
}

// cli runs an oauthfs command against the host's broker.
func (h *clusterHost) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "OAUTHFS_BROKER="+h.socket)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// seed stores a fresh grant for root through host h's socket.
func (e *clusterEnv) seed(t *testing.T, h *clusterHost, expiresIn int) string {
	t.Helper()
	at, rt, _ := e.p.Grant()
	ce := &cliEnv{socket: h.socket}
	code, body := ce.api(t, "PUT", "/v1/integrations/Test/credentials",
		fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"expires_in":%d}`, at, rt, expiresIn))
	if code != 200 {
		t.Fatalf("seed through %s = %d %s", h.name, code, body)
	}
	return at
}

// TestCluster runs two brokers on one database: what one host does,
// the other sees; a token due on both is refreshed once; a sign-out on
// one is ENOKEY on the other within a second; a broker killed during a
// refresh loses nothing.
func TestCluster(t *testing.T) {
	e := newClusterEnv(t, pgtest.Shared(t), time.Hour)

	t.Run("a grant stored on A is read on B", func(t *testing.T) {
		at := e.seed(t, e.a, 3600)
		for _, h := range []*clusterHost{e.a, e.b} {
			if got, err := h.read(); err != nil || got != at {
				t.Errorf("%s reads %q, %v; want the seeded token", h.name, got, err)
			}
		}
	})

	t.Run("one refresh across the cluster", func(t *testing.T) {
		e.p.SetLifetime(time.Hour)
		before := e.p.Refreshes()
		e.seed(t, e.a, 2)
		e.a.read() // both hosts hold it, read: both would refresh it ahead
		e.b.read()
		time.Sleep(2500 * time.Millisecond) // expired everywhere
		var wg sync.WaitGroup
		got := make(chan string, 64)
		start := make(chan struct{})
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tok, err := []*clusterHost{e.a, e.b}[i%2].read()
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
				}
				got <- tok
			}()
		}
		close(start)
		wg.Wait()
		close(got)
		seen := map[string]bool{}
		for tok := range got {
			seen[tok] = true
		}
		if n := e.p.Refreshes() - before; n != 1 || len(seen) != 1 {
			t.Errorf("a token read on two hosts, then 64 readers on both, caused %d token requests and saw %d tokens; want 1 and 1", n, len(seen))
		}
		for tok := range seen {
			if !e.p.Accepts(tok) {
				t.Errorf("the readers got a token the provider does not accept")
			}
		}
	})

	t.Run("a sign-in on A is read on B", func(t *testing.T) {
		old, _ := e.b.read()
		cmd := exec.Command(binary, "login", "--no-browser", "--broker", e.a.socket, "Test")
		out, _ := cmd.StdoutPipe()
		cmd.Start()
		var link string
		fmt.Fscanln(out, &link)
		if code, page := browse(t, link); code != 200 {
			t.Fatalf("sign-in through A: %d %s", code, page)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("login through A: %v", err)
		}
		fromA, _ := e.a.read()
		if fromA == old {
			t.Fatal("A still reads the old token after the sign-in")
		}
		waitFor(t, func() bool { got, _ := e.b.read(); return got == fromA })
	})

	t.Run("a sign-in started on A completes through B", func(t *testing.T) {
		cmd := exec.Command(binary, "login", "--no-browser", "--broker", e.a.socket, "Test")
		out, _ := cmd.StdoutPipe()
		cmd.Start()
		var link string
		fmt.Fscanln(out, &link)
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Path == "/callback" {
				return http.ErrUseLastResponse
			}
			return nil
		}}
		resp := openSignIn(t, c, link) // on A; the provider approves at once
		resp.Body.Close()
		cb, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || cb.Path != "/callback" {
			t.Fatalf("the provider sent the browser to %q", resp.Header.Get("Location"))
		}
		// The load balancer sends the callback, and then the final
		// confirmation, to B.
		cb.Host = e.b.web
		resp, err = c.Get(cb.String())
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(page), `action="/confirm"`) {
			t.Fatalf("the callback through B = %d:\n%s", resp.StatusCode, page)
		}
		form := url.Values{"action": {"confirm"}}
		for _, m := range hiddenRE.FindAllStringSubmatch(string(page), -1) {
			form.Set(m[1], html.UnescapeString(m[2]))
		}
		req, _ := http.NewRequest("POST", "http://"+e.b.web+"/confirm", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "http://"+e.public) // the browser's: the public origin
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-User", "?1")
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		page, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(page), "Signed in to Test") {
			t.Fatalf("the confirmation through B = %d:\n%s", resp.StatusCode, page)
		}
		var result string
		fmt.Fscanln(out, &result)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("login on A, finished through B: %v", err)
		}
		// The same callback again, through either host, is refused.
		for _, web := range []string{e.a.web, e.b.web} {
			cb.Host = web
			resp, _ := c.Get(cb.String())
			if resp != nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					t.Errorf("the callback used again through %s was accepted", web)
				}
			}
		}
	})

	t.Run("a settings link of A works through B", func(t *testing.T) {
		link, err := e.a.cli(t, "settings", "--no-browser")
		if err != nil {
			t.Fatalf("settings on A: %v %s", err, link)
		}
		u, _ := url.Parse(strings.TrimSpace(strings.Split(link, "\n")[0]))
		u.Host = e.b.web
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar}
		code, fwd := httpGet(t, c, u.String())
		m := regexp.MustCompile(`url=(/settings\?s=[^"]+)"`).FindStringSubmatch(fwd)
		if code != 200 || m == nil {
			t.Fatalf("A's settings link through B = %d %q", code, fwd)
		}
		code, page := httpGet(t, c, "http://"+e.b.web+m[1])
		if code != 200 || !strings.Contains(page, "Managed Credentials") || !strings.Contains(page, "Signed in") {
			t.Errorf("A's settings page through B = %d", code)
		}
	})

	t.Run("a sign-out on B is ENOKEY on A within a second", func(t *testing.T) {
		if _, err := e.a.read(); err != nil {
			t.Fatal(err)
		}
		active := e.p.ActiveRefreshTokens()
		if out, err := e.b.cli(t, "logout", "Test"); err != nil {
			t.Fatalf("logout through B: %v\n%s", err, out)
		}
		done := time.Now()
		if n := e.p.ActiveRefreshTokens(); n != active-1 {
			t.Errorf("the sign-out on B left %d refresh tokens active at the provider; want %d (the stored one revoked)", n, active-1)
		}
		for {
			_, err := e.a.read()
			if errors.Is(err, syscall.ENOKEY) {
				break
			}
			if time.Since(done) > time.Second {
				t.Fatalf("A still reads %v a second after the sign-out on B", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("a broker killed during a refresh loses nothing", func(t *testing.T) {
		e.p.SetLifetime(time.Second)
		e.p.SetSlowDelay(5 * time.Second)
		e.seed(t, e.b, 1)
		rounds := 50
		if testing.Short() {
			rounds = 5
		}
		for i := range rounds {
			time.Sleep(1100 * time.Millisecond) // the stored token is due
			e.p.SetMode(localprovider.Slow)
			before := e.p.Requests()
			bg := exec.Command(binary, "token", "--broker", e.a.socket, "Test")
			bg.Start()
			waitFor(t, func() bool { return e.p.Requests() > before }) // A's refresh is at the provider
			e.a.broker.cmd.Process.Kill()
			<-e.a.broker.done
			bg.Wait()
			e.p.SetMode(localprovider.OK)
			out, err := e.b.cli(t, "token", "Test")
			// Issued, not Accepts: a token handed out in its last
			// moments may have expired by the time the test asks.
			if err != nil || !e.p.Issued(out) {
				t.Fatalf("round %d: B after A was killed during a refresh: %v %q", i, err, out)
			}
			e.a.start(t)
		}
		// A, back, reads what B refreshed.
		if out, err := e.a.cli(t, "token", "Test"); err != nil || !e.p.Issued(out) {
			t.Errorf("A after the rounds: %v %q", err, out)
		}
	})
}

// TestClusterRefreshAhead: two hosts, one user reading on both all the
// time (a loop on each host, and a burst of 24 readers, 12 per host, at
// each lifetime), refresh ahead on, strict rotation. Over three token
// lifetimes each refresh reaches the provider once for the whole cluster
// (every token a refresh got is handed out; none is refused), and the
// cluster hands out one token at a time: once a reader on either host has
// the next token, no reader on either host gets the one before.
func TestClusterRefreshAhead(t *testing.T) {
	const lifetime = 8 * time.Second
	e := newClusterEnv(t, pgtest.Shared(t), lifetime, `refresh_margin = "2s"`)
	requests0, refreshes0 := e.p.Requests(), e.p.Refreshes()
	start := time.Now()
	seeded := e.seed(t, e.a, int(lifetime/time.Second))
	type readAt struct {
		host       string
		begin, end time.Duration
		tok        string
	}
	var mu sync.Mutex
	var reads []readAt
	read := func(h *clusterHost) {
		begin := time.Since(start)
		tok, err := h.read()
		end := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("%s at %v: %v", h.name, begin, err)
			return
		}
		reads = append(reads, readAt{h.name, begin, end, tok})
	}
	var refreshedAt []time.Duration // when the provider's count of refreshes went up
	stop := make(chan struct{})
	var bg sync.WaitGroup
	for _, h := range []*clusterHost{e.a, e.b} {
		// A loop reading as fast as it can, which keeps the first and the
		// last read of each run of one token: enough to tell when it
		// first had a token and when it last read the one before.
		bg.Go(func() {
			var first, last readAt
			for {
				select {
				case <-stop:
					mu.Lock()
					reads = append(reads, first, last)
					mu.Unlock()
					return
				default:
				}
				r := readAt{host: h.name, begin: time.Since(start)}
				tok, err := h.read()
				r.end, r.tok = time.Since(start), tok
				if err != nil {
					t.Errorf("%s at %v: %v", h.name, r.begin, err)
					continue
				}
				if tok != last.tok && last.tok != "" {
					mu.Lock()
					reads = append(reads, first, last)
					mu.Unlock()
					first = r
				}
				if first.tok == "" {
					first = r
				}
				last = r
			}
		})
	}
	bg.Go(func() {
		last := e.p.Refreshes()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if n := e.p.Refreshes(); n != last {
				mu.Lock()
				for range n - last {
					refreshedAt = append(refreshedAt, time.Since(start))
				}
				mu.Unlock()
				last = n
			}
		}
	})
	for k := 1; k <= 3; k++ {
		time.Sleep(time.Until(start.Add(time.Duration(k) * lifetime)))
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Go(func() { read([]*clusterHost{e.a, e.b}[i%2]) })
		}
		wg.Wait()
	}
	close(stop)
	bg.Wait()

	// Tokens in the order the provider issued them (by their expiry:
	// they all live as long).
	order := func(tok string) time.Time {
		exp, ok := e.p.Expiry(tok)
		if !ok {
			t.Fatalf("a reader got a token the provider never issued")
		}
		return exp
	}
	sort.Slice(reads, func(i, j int) bool { return reads[i].end < reads[j].end })
	var latest time.Time // the newest token any read completed with, so far
	var latestEnds []time.Duration
	var latestAt []time.Time
	seen := map[string]int{} // token -> lifetime it was first seen in
	for _, r := range reads {
		if o := order(r.tok); o.After(latest) {
			latest = o
			latestEnds = append(latestEnds, r.end)
			latestAt = append(latestAt, o)
		}
		if _, ok := seen[r.tok]; !ok {
			seen[r.tok] = int(r.end / lifetime)
		}
	}
	stale := 0
	for _, r := range reads {
		// The newest token a read completed with before r began.
		i := sort.Search(len(latestEnds), func(i int) bool { return latestEnds[i] >= r.begin })
		if i > 0 && order(r.tok).Before(latestAt[i-1]) {
			if stale++; stale <= 3 {
				t.Errorf("%s read at %v the token before the one a reader had at %v", r.host, r.begin, latestEnds[i-1])
			}
		}
	}
	requests, refreshes := e.p.Requests()-requests0, e.p.Refreshes()-refreshes0
	delete(seen, seeded)
	for k := range 4 {
		n, d := 0, 0
		for _, at := range refreshedAt {
			if int(at/lifetime) == k {
				n++
			}
		}
		for _, lt := range seen {
			if lt == k {
				d++
			}
		}
		t.Logf("lifetime %d: %d token requests, %d new tokens handed out", k+1, n, d)
	}
	t.Logf("%d reads kept on two hosts; %d token requests, %d refreshes, %d refreshed tokens handed out, %d stale reads", len(reads), requests, refreshes, len(seen), stale)
	if requests != refreshes {
		t.Errorf("%d token requests, of which %d succeeded; want none refused (a refresh token sent twice)", requests, refreshes)
	}
	if refreshes != len(seen) {
		t.Errorf("%d refreshes handed out %d tokens; want one refresh per token handed out", refreshes, len(seen))
	}
	if refreshes < 3 {
		t.Errorf("%d refreshes in three lifetimes; want at least one a lifetime", refreshes)
	}
}

// TestClusterRefreshAheadOnEitherHost: a token host A refreshed ahead,
// which host B learned of from the database, is refreshed ahead by B
// when it is read on B: B's readers never wait for the provider.
func TestClusterRefreshAheadOnEitherHost(t *testing.T) {
	const lifetime = 8 * time.Second
	e := newClusterEnv(t, pgtest.Shared(t), lifetime, `refresh_margin = "2s"`)
	// Every refresh answers after 0.9 s: within the 1 s by which a token
	// is refreshed ahead of its hand-out time, but long for a reader.
	e.p.SetSlowDelay(900 * time.Millisecond)
	e.p.SetMode(localprovider.Slow)
	e.seed(t, e.a, int(lifetime/time.Second))
	// B holds the grant but has not read it; A reads it, and so refreshes
	// it ahead.
	if out, err := e.b.cli(t, "list"); err != nil {
		t.Fatalf("list on B: %v %s", err, out)
	}
	if _, err := e.a.read(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.p.Refreshes() == 1 })
	// Only B reads from now on, for two more lifetimes.
	var slowest time.Duration
	for end := time.Now().Add(2 * lifetime); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		began := time.Now()
		if _, err := e.b.read(); err != nil {
			t.Fatalf("B: %v", err)
		}
		slowest = max(slowest, time.Since(began))
	}
	t.Logf("B's slowest read: %v; %d refreshes", slowest, e.p.Refreshes())
	if slowest >= 600*time.Millisecond {
		t.Errorf("a read on B waited %v for the provider; want B to refresh the token ahead, as A did", slowest)
	}
}

// TestClusterForwardingIsSignedAndEncrypted: brokers forward a browser's
// requests to each other over TLS (cluster_url https, verified with
// cluster_ca_file), signed with a key derived from the store key; a
// request that only claims to be forwarded is refused.
func TestClusterForwardingIsSignedAndEncrypted(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile)
	e := newClusterEnv(t, pgtest.Shared(t), time.Hour,
		fmt.Sprintf("tls_cert_file = %q\ntls_key_file = %q\ncluster_ca_file = %q", certFile, keyFile, certFile))
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	// A's settings link, opened through B: B forwards to A over https.
	link, err := e.a.cli(t, "settings", "--no-browser")
	if err != nil {
		t.Fatalf("settings on A: %v %s", err, link)
	}
	u, _ := url.Parse(strings.TrimSpace(strings.Split(link, "\n")[0]))
	if u.Scheme != "https" {
		t.Fatalf("the settings link %q is not https", u)
	}
	u.Host = e.b.web
	code, fwd := httpGet(t, c, u.String())
	m := regexp.MustCompile(`url=(/settings\?s=[^"]+)"`).FindStringSubmatch(fwd)
	if code != 200 || m == nil {
		t.Fatalf("A's settings link through B = %d %q", code, fwd)
	}
	if code, page := httpGet(t, c, "https://"+e.b.web+m[1]); code != 200 || !strings.Contains(page, "Managed Credentials") {
		t.Errorf("A's settings page through B = %d", code)
	}

	// Claiming to be forwarded, unsigned or badly signed, to A directly.
	for _, h := range []map[string]string{
		{"X-Oauthfs-Forwarded": "https://" + e.b.web},
		{"X-Oauthfs-Forwarded": "https://" + e.b.web, "X-Oauthfs-Forwarded-At": strconv.FormatInt(time.Now().Unix(), 10), "X-Oauthfs-Forwarded-Sig": "forged"},
	} {
		req, _ := http.NewRequest("GET", "https://"+e.a.web+m[1], nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("a request to A claiming to be forwarded (%v) = %d; want 403", h, resp.StatusCode)
		}
	}
	// Nothing speaks plain http there.
	if resp, err := http.Get("http://" + e.a.web + "/settings"); err == nil && resp.StatusCode == 200 {
		t.Errorf("A's sign-in web server answered plain http")
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key, PEM.
func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "oauthfs test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}

// TestClusterDatabaseOutage stops the database for 10 s under load: cached
// tokens are served while valid, expired ones fail fast with EIO and
// meta.json says why, and everything recovers by itself.
func TestClusterDatabaseOutage(t *testing.T) {
	db := pgtest.Own(t)
	if err := db.CreateDB("oauthfs"); err != nil {
		t.Fatal(err)
	}
	e := newClusterEnv(t, db.DSN("oauthfs"), 4*time.Second)
	e.seed(t, e.a, 4)
	e.a.read()
	e.b.read()
	if err := db.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var served, failed int
	var slowest time.Duration
	for time.Since(stopped) < 10*time.Second {
		for _, h := range []*clusterHost{e.a, e.b} {
			began := time.Now()
			_, err := h.read()
			took := time.Since(began)
			slowest = max(slowest, took)
			switch {
			case err == nil:
				served++
			case errors.Is(err, syscall.EIO):
				failed++
			default:
				t.Errorf("%s during the outage: %v; want the token or EIO", h.name, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if served == 0 || failed == 0 {
		t.Errorf("during the outage: %d reads served, %d failed; want both (the token expired after 4 s)", served, failed)
	}
	if slowest > 2*time.Second+2*time.Second {
		t.Errorf("the slowest read during the outage took %v; want at most request_timeout (2 s) plus the mount's slack", slowest)
	}
	meta, _ := os.ReadFile(filepath.Join(e.a.mnt, "by-name", "Test", "meta.json"))
	if !strings.Contains(string(meta), "credential database") && !strings.Contains(string(meta), "refresh failed") {
		t.Errorf("meta.json during the outage does not say why: %s", meta)
	}
	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for _, h := range []*clusterHost{e.a, e.b} {
		waitFor(t, func() bool {
			tok, err := h.read()
			return err == nil && e.p.Accepts(tok)
		})
	}
	t.Logf("outage: %d reads served from cache, %d EIO, slowest %v; recovered %v after the database came back", served, failed, slowest, time.Since(back))
}

// TestStoreMigrate moves a file store's credentials into the database
// with 'oauthfs store migrate' and serves them from there, with no
// sign-in.
func TestStoreMigrate(t *testing.T) {
	d := newDaemonEnv(t)
	br := d.startBroker(t)
	access, _ := d.seed(t, 3600)
	br.cmd.Process.Signal(syscall.SIGTERM)
	<-br.done
	f, err := os.OpenFile(d.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[store]\nbackend = \"postgres\"\ndsn = %q\n", pgtest.Shared(t))
	f.Close()
	migrate := func() string {
		t.Helper()
		out, err := exec.Command(binary, "store", "migrate", "--from", "file", "--to", "postgres", "--config", d.cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("store migrate: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := migrate(); !strings.Contains(out, "moved root Test (") || !strings.HasSuffix(out, "1 of 1 credentials moved\n") {
		t.Errorf("store migrate printed %q", out)
	}
	if out := migrate(); !strings.Contains(out, "kept root Test") || !strings.HasSuffix(out, "0 of 1 credentials moved\n") {
		t.Errorf("store migrate again printed %q", out)
	}
	d.startBroker(t)
	d.startClientMount(t)
	if got, err := d.readToken("Test"); err != nil || got != access {
		t.Errorf("the token served from the database = %q, %v; want the migrated one", got, err)
	}
	if out, _ := exec.Command(binary, "store", "migrate", "--from", "postgres", "--to", "file", "--config", d.cfg).CombinedOutput(); !strings.Contains(string(out), "--from file --to postgres") {
		t.Errorf("store migrate the other way printed %q", out)
	}
}
