package signin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// Behind a load balancer, each request of a browser may reach any broker
// of a cluster, while a sign-in lives in the broker that started it: its
// PKCE verifier, the tokens waiting for the final confirmation and the
// command waiting for the result never leave that process. So each
// broker records which sign-ins and settings visits it holds in a
// Router (the cluster's database), under a hash of their secret, and
// forwards a browser's request for one it does not hold to the broker
// that does. Single use, the binding to one browser and the final
// confirmation then work as on one host.

// Router records which broker of a cluster holds a sign-in or a settings
// visit, by its secret (a state, a one-time link's key, a visit's
// key).
type Router interface {
	// AddRoute records that the broker reached at owner holds secret's
	// sign-in or visit until expires.
	AddRoute(ctx context.Context, secret, owner string, expires time.Time) error
	// Route returns the owner of secret, or "" when there is none.
	Route(ctx context.Context, secret string) (string, error)
}

// forwardedHeader marks a request one broker forwarded to another, which
// never forwards it again; forwardedHeader+"-At" and "-Sig" sign it.
const forwardedHeader = "X-Oauthfs-Forwarded"

// forwardSkew bounds how old (or how far ahead) a signed forwarded
// request may be.
const forwardSkew = 30 * time.Second

// cluster is a Table's part in a cluster; nil on one host.
type cluster struct {
	router Router
	self   string            // where the other brokers reach this one's sign-in web server
	key    *memguard.Enclave // signs forwarded requests; every broker of the cluster derives the same
	proxy  *httputil.ReverseProxy
}

// ClusterOptions configure a broker's part in a cluster.
type ClusterOptions struct {
	// Key signs the requests brokers forward to each other (HMAC-SHA256):
	// every broker of the cluster must have the same, which the caller
	// derives from the store key they share. Required. The cluster keeps
	// it; the caller must not destroy it.
	Key *memguard.Enclave
	// RootCAs verifies the other brokers' certificates when cluster_url
	// is https; nil: the system's roots.
	RootCAs *x509.CertPool
}

// Cluster makes t one broker of a cluster: it records its sign-ins and
// settings visits in r under self, the URL where the other brokers
// reach its sign-in web server, and forwards browsers' requests for those
// of other brokers to them, signed, refusing forwarded requests that are
// not.
func (t *Table) Cluster(r Router, self string, opts ClusterOptions) error {
	u, err := url.Parse(self)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("signin: cluster_url %q: want the http(s) URL where the other brokers reach this one", self)
	}
	if opts.Key == nil {
		return fmt.Errorf("signin: cluster: no key to sign forwarded requests with")
	}
	c := &cluster{router: r, self: u.Scheme + "://" + u.Host, key: opts.Key}
	c.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			to, _ := url.Parse(pr.In.Header.Get(forwardedHeader + "-To"))
			pr.SetURL(to)
			pr.Out.Host = pr.In.Host // the public host, as the browser sent it
			pr.Out.Header.Del(forwardedHeader + "-To")
			pr.Out.Header.Set(forwardedHeader, c.self)
			at := strconv.FormatInt(time.Now().Unix(), 10)
			pr.Out.Header.Set(forwardedHeader+"-At", at)
			if sig, err := c.sign(pr.Out, at); err == nil {
				pr.Out.Header.Set(forwardedHeader+"-Sig", sig)
			}
		},
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute, // a code exchange waits for the provider
			MaxIdleConnsPerHost:   16,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			t.log.Warn("could not forward a browser's request to the broker that holds its sign-in", "to", r.URL.Host, "err", err)
			page(w, http.StatusBadGateway, "Sign-in unavailable", "The server that holds this sign-in did not answer. Start again with oauthfs login (or oauthfs settings).")
		},
	}
	t.mu.Lock()
	t.cluster = c
	t.mu.Unlock()
	return nil
}

// route records in the cluster that this broker holds secret until
// expires. On one host it does nothing. A failure is logged: the
// browser's requests that reach this broker still work.
func (t *Table) route(secret string, expires time.Time) {
	t.mu.Lock()
	c := t.cluster
	t.mu.Unlock()
	if c == nil {
		return
	}
	// Not a request's context: the route outlives the request that made
	// the sign-in or visit.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.router.AddRoute(ctx, secret, c.self, expires); err != nil {
		t.log.Warn("could not record a sign-in in the cluster; only this broker can finish it", "err", err)
	}
}

// sign returns the signature of a forwarded request r made at at (Unix
// seconds): an HMAC of its method, host, path and query, time and body
// (which it reads and puts back).
func (c *cluster) sign(r *http.Request, at string) (string, error) {
	var body []byte
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return "", err
		}
		r.Body, body = io.NopCloser(bytes.NewReader(b)), b
	}
	k, err := secmem.Open(c.key)
	if err != nil {
		return "", err
	}
	defer k.Destroy()
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, k.Bytes())
	for _, part := range []string{r.Method, r.Host, r.URL.RequestURI(), at, hex.EncodeToString(sum[:])} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

// signedByPeer reports whether r, which says another broker forwarded it,
// carries a valid and recent signature of this cluster.
func (c *cluster) signedByPeer(r *http.Request) bool {
	at := r.Header.Get(forwardedHeader + "-At")
	sec, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return false
	}
	if d := time.Since(time.Unix(sec, 0)); d > forwardSkew || d < -forwardSkew {
		return false
	}
	want, err := c.sign(r, at)
	return err == nil && hmac.Equal([]byte(want), []byte(r.Header.Get(forwardedHeader+"-Sig")))
}

// forward sends r to the broker that holds its sign-in or visit, when
// that is another broker, and reports whether it did (and answered w). A
// request that says another broker forwarded it is served here only when
// that broker signed it; anything else that claims so is refused.
func (t *Table) forward(w http.ResponseWriter, r *http.Request) bool {
	t.mu.Lock()
	c := t.cluster
	t.mu.Unlock()
	if r.Header.Get(forwardedHeader) != "" || r.Header.Get(forwardedHeader+"-Sig") != "" {
		if c == nil || !c.signedByPeer(r) {
			t.log.Warn("refused a request that claims to be forwarded by another broker but is not signed by one", "from", printable.String(r.Header.Get(forwardedHeader), 128))
			page(w, http.StatusForbidden, "Refused", "This request claims to come from another broker of the cluster, but is not signed by one.")
			return true
		}
		return false // forwarded to us: served here
	}
	if c == nil {
		return false
	}
	secret := t.routeSecret(r)
	if !secretRE.MatchString(secret) || t.holds(secret) {
		return false // not shaped like one of ours: no database query for it
	}
	owner, err := c.router.Route(r.Context(), secret)
	if err != nil {
		t.log.Warn("could not look up a sign-in in the cluster", "err", err)
		page(w, http.StatusServiceUnavailable, "Sign-in unavailable", "This server cannot reach the cluster's database to find your sign-in. Try again in a moment.")
		return true
	}
	if owner == "" || owner == c.self {
		return false // unknown: answered here, as unknown
	}
	r.Header.Set(forwardedHeader+"-To", owner)
	c.proxy.ServeHTTP(w, r)
	return true
}

// routeSecret returns the secret that names r's sign-in or settings
// visit: the state of the sign-in pages and the callback, the key of a
// one-time settings link, or the key of a settings page. A form's body is
// read and put back.
func (t *Table) routeSecret(r *http.Request) string {
	cb := "/callback"
	if t.callback != nil && t.callback.Path != "" {
		cb = t.callback.Path
	}
	q := r.URL.Query()
	switch p := r.URL.Path; {
	case p == "/start" && r.Method == http.MethodGet, p == cb:
		return q.Get("state")
	case p == "/start" || p == "/confirm":
		b, err := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		if err != nil {
			return ""
		}
		form, _ := url.ParseQuery(string(b))
		return form.Get("state")
	case p == "/settings/open":
		return q.Get("key")
	case p == "/settings" || (strings.HasPrefix(p, "/settings/") && !strings.HasPrefix(p, "/settings/assets/")):
		return q.Get("s")
	}
	return ""
}

// secretRE matches the secrets randomID makes (base64url of 32 bytes).
var secretRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// holds reports whether secret names a sign-in, link or visit of this
// broker.
func (t *Table) holds(secret string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byState[secret] != nil || t.links[secret] != nil || t.visits[secret] != nil
}
