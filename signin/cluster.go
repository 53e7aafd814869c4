package signin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Behind a load balancer, each request of a browser may reach any broker
// of a cluster, while a sign-in lives in the broker that started it: its
// PKCE verifier, the tokens waiting for the final confirmation and the
// command waiting for the result never leave that process. So each
// broker records which sign-ins and settings sessions it holds in a
// Router (the cluster's database), under a hash of their secret, and
// forwards a browser's request for one it does not hold to the broker
// that does. Single use, the binding to one browser and the final
// confirmation then work as on one host.

// Router records which broker of a cluster holds a sign-in or a settings
// session, by its secret (a state, a one-time link's key, a session's
// key).
type Router interface {
	// AddRoute records that the broker reached at owner holds secret's
	// sign-in or session until expires.
	AddRoute(ctx context.Context, secret, owner string, expires time.Time) error
	// Route returns the owner of secret, or "" when there is none.
	Route(ctx context.Context, secret string) (string, error)
}

// forwardedHeader marks a request one broker forwarded to another, which
// never forwards it again.
const forwardedHeader = "X-Oauthfs-Forwarded"

// cluster is a Table's part in a cluster; nil on one host.
type cluster struct {
	router Router
	self   string // where the other brokers reach this one's sign-in web server
	proxy  *httputil.ReverseProxy
}

// Cluster makes t one broker of a cluster: it records its sign-ins and
// settings sessions in r under self, the URL where the other brokers
// reach its sign-in web server, and forwards browsers' requests for those
// of other brokers to them.
func (t *Table) Cluster(r Router, self string) error {
	u, err := url.Parse(self)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("signin: cluster_url %q: want the http(s) URL where the other brokers reach this one", self)
	}
	c := &cluster{router: r, self: u.Scheme + "://" + u.Host}
	c.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			to, _ := url.Parse(pr.In.Header.Get(forwardedHeader + "-To"))
			pr.SetURL(to)
			pr.Out.Host = pr.In.Host // the public host, as the browser sent it
			pr.Out.Header.Del(forwardedHeader + "-To")
			pr.Out.Header.Set(forwardedHeader, c.self)
		},
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.router.AddRoute(ctx, secret, c.self, expires); err != nil {
		t.log.Warn("could not record a sign-in in the cluster; only this broker can finish it", "err", err)
	}
}

// forward sends r to the broker that holds its sign-in or session, when
// that is another broker, and reports whether it did (and answered w).
func (t *Table) forward(w http.ResponseWriter, r *http.Request) bool {
	t.mu.Lock()
	c := t.cluster
	t.mu.Unlock()
	if c == nil || r.Header.Get(forwardedHeader) != "" {
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
// session: the state of the sign-in pages and the callback, the key of a
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

// holds reports whether secret names a sign-in, link or session of this
// broker.
func (t *Table) holds(secret string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byState[secret] != nil || t.links[secret] != nil || t.sessions[secret] != nil
}
