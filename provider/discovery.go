package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/internal/printable"
)

// An integration that names an issuer gets its endpoints, where the
// configuration leaves them out, from the issuer's metadata (OpenID
// Connect Discovery 1.0, RFC 8414), and the metadata say whether the
// issuer puts itself in authorization responses (RFC 9207), which the
// sign-in callback then checks. A [Directory] fetches and keeps them.

// ErrMetadata is wrapped when an issuer's metadata were fetched but are
// unusable (not found, not JSON, another issuer, an endpoint that is not
// https): a configuration error that asking again does not fix. Other
// discovery errors (the issuer unreachable, slow or failing) are
// transient.
var ErrMetadata = errors.New("unusable authorization server metadata")

// ErrIssuer is wrapped when an authorization response fails the RFC 9207
// check: it names another issuer, or none when the integration's issuer
// always names itself.
var ErrIssuer = errors.New("possible mix-up attack (RFC 9207)")

// Metadata is what oauthfs takes from an authorization server's
// metadata. It is immutable once made.
type Metadata struct {
	// Issuer is the issuer identifier, exactly the configured one.
	Issuer string
	// URL is where the metadata were read.
	URL string
	// The endpoints; empty where the metadata name none.
	AuthURL, TokenURL, RevocationURL, DeviceAuthURL, UserinfoURL string
	// IssParameter is authorization_response_iss_parameter_supported
	// (RFC 9207 §3): every authorization response carries iss.
	IssParameter bool
}

// maxMetadata bounds a metadata document. Real ones are a few KiB.
const maxMetadata = 256 << 10

// metadataURLs returns where the metadata of issuer are looked for, in
// order: OpenID Connect Discovery's (the path appended) and RFC 8414's
// (the well-known path inserted before the issuer's path, §3.1).
func metadataURLs(issuer string) []string {
	u, _ := url.Parse(issuer)
	origin, path := u.Scheme+"://"+u.Host, strings.TrimSuffix(u.EscapedPath(), "/")
	return []string{origin + path + "/.well-known/openid-configuration", origin + "/.well-known/oauth-authorization-server" + path}
}

// Discover reads the metadata of issuer with hc (which must not follow
// redirects; see [NewHTTPClient]) within ctx: the OpenID Connect
// document, or, when there is none (404), the RFC 8414 one. It checks
// that they name issuer exactly (RFC 8414 §3.3) and that every endpoint
// they give passes [config.CheckURL]. Errors name the URL; those about
// the metadata themselves wrap [ErrMetadata].
func Discover(ctx context.Context, hc *http.Client, issuer string) (*Metadata, error) {
	if err := config.CheckIssuer(issuer); err != nil {
		return nil, fmt.Errorf("issuer %w: %w", err, ErrMetadata)
	}
	urls := metadataURLs(issuer)
	for i, u := range urls {
		m, err := fetchMetadata(ctx, hc, issuer, u)
		if errors.Is(err, errNotFound) && i+1 < len(urls) {
			continue
		}
		if errors.Is(err, errNotFound) {
			return nil, fmt.Errorf("issuer %s has no metadata: %s and %s answered 404; check issuer, or set auth_url and token_url and leave issuer out: %w", issuer, urls[0], urls[1], ErrMetadata)
		}
		return m, err
	}
	panic("unreachable")
}

var errNotFound = errors.New("not found")

// fetchMetadata reads and checks the metadata document at u.
func fetchMetadata(ctx context.Context, hc *http.Client, issuer, u string) (*Metadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("metadata at %s: %w: %w", u, err, ErrMetadata)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, fmt.Errorf("metadata at %s: no answer in time", u)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, said once already
		}
		return nil, fmt.Errorf("metadata at %s: unreachable: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadata+1))
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, errNotFound
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, fmt.Errorf("metadata at %s: answered HTTP %d, a redirect, which oauthfs does not follow; is issuer exactly the issuer's identifier? %w", u, resp.StatusCode, ErrMetadata)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return nil, fmt.Errorf("metadata at %s: answered HTTP %d", u, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("metadata at %s: answered HTTP %d: %w", u, resp.StatusCode, ErrMetadata)
	case err != nil:
		return nil, fmt.Errorf("metadata at %s: unreachable: the answer broke off: %w", u, err)
	case len(body) > maxMetadata:
		return nil, fmt.Errorf("metadata at %s: larger than %d KiB: %w", u, maxMetadata>>10, ErrMetadata)
	}
	var doc struct {
		Issuer        *string `json:"issuer"`
		Authorization string  `json:"authorization_endpoint"`
		Token         string  `json:"token_endpoint"`
		Revocation    string  `json:"revocation_endpoint"`
		Device        string  `json:"device_authorization_endpoint"`
		Userinfo      string  `json:"userinfo_endpoint"`
		Iss           bool    `json:"authorization_response_iss_parameter_supported"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("metadata at %s: not a JSON object: %w", u, ErrMetadata)
	}
	switch {
	case doc.Issuer == nil:
		return nil, fmt.Errorf("metadata at %s name no issuer: %w", u, ErrMetadata)
	case *doc.Issuer != issuer:
		// RFC 8414 §3.3: the issuer must be exactly the one asked for, or
		// another server could hand out its own endpoints.
		return nil, fmt.Errorf("metadata at %s name the issuer %q, not %q; set issuer to exactly the issuer's identifier: %w",
			u, printable.String(*doc.Issuer, 200), issuer, ErrMetadata)
	}
	m := &Metadata{Issuer: issuer, URL: u, AuthURL: doc.Authorization, TokenURL: doc.Token, RevocationURL: doc.Revocation,
		DeviceAuthURL: doc.Device, UserinfoURL: doc.Userinfo, IssParameter: doc.Iss}
	for _, e := range []struct{ key, val string }{
		{"authorization_endpoint", m.AuthURL}, {"token_endpoint", m.TokenURL}, {"revocation_endpoint", m.RevocationURL},
		{"device_authorization_endpoint", m.DeviceAuthURL}, {"userinfo_endpoint", m.UserinfoURL},
	} {
		if e.val == "" {
			continue
		}
		if err := config.CheckURL(e.val); err != nil {
			return nil, fmt.Errorf("metadata at %s: %s: %s: %w", u, e.key, printable.String(err.Error(), 300), ErrMetadata)
		}
	}
	return m, nil
}

// discoveryRetry is how long a failed lookup is answered with its error
// before the issuer is asked again.
const discoveryRetry = 10 * time.Second

// Directory keeps the metadata of the issuers of a broker's integrations.
// [Directory.Fetch] reads them all (at start and on each reload); an
// issuer that could not be reached is looked up again when an integration
// needs it ([Client.Ready]), at most once every 10 s. It is safe for
// concurrent use.
type Directory struct {
	http *http.Client
	now  func() time.Time

	mu      sync.Mutex        // guards entries and each entry's fields
	entries map[string]*entry // by issuer
}

// entry is one issuer's metadata, or why there are none yet.
type entry struct {
	meta    *Metadata
	err     error         // the last failure, while meta is nil
	retryAt time.Time     // no lookup before this after a failure
	busy    chan struct{} // closed when the lookup on its way ends; nil when none is
}

// NewDirectory returns an empty directory that asks issuers with hc,
// which bounds every request (see [NewHTTPClient]).
func NewDirectory(hc *http.Client) *Directory {
	return &Directory{http: hc, now: time.Now, entries: map[string]*entry{}}
}

// Cached returns the metadata of issuer that the directory holds, or nil.
func (d *Directory) Cached(issuer string) *Metadata {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.entries[issuer]; e != nil {
		return e.meta
	}
	return nil
}

// Lookup returns the metadata of issuer: those held, or those read now.
// After a failure it returns the same error, without asking, for 10 s.
// Concurrent lookups of one issuer share one request, which ends within
// the HTTP client's timeout whatever ctx does; ctx only stops waiting.
func (d *Directory) Lookup(ctx context.Context, issuer string) (*Metadata, error) {
	d.mu.Lock()
	e := d.entries[issuer]
	if e == nil {
		e = &entry{}
		d.entries[issuer] = e
	}
	switch {
	case e.meta != nil:
		d.mu.Unlock()
		return e.meta, nil
	case e.busy != nil:
		busy := e.busy
		d.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, fmt.Errorf("issuer %s: metadata: %w", issuer, ctx.Err())
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		return e.meta, e.err
	case e.err != nil && d.now().Before(e.retryAt):
		err := e.err
		d.mu.Unlock()
		return nil, err
	}
	busy := make(chan struct{})
	e.busy = busy
	d.mu.Unlock()
	m, err := Discover(context.WithoutCancel(ctx), d.http, issuer)
	d.mu.Lock()
	e.meta, e.err, e.busy = m, err, nil
	if err != nil {
		e.retryAt = d.now().Add(discoveryRetry)
	}
	d.mu.Unlock()
	close(busy)
	return m, err
}

// Fetch reads the metadata of every issuer that ins name, all at once,
// within ctx, and keeps them in place of what the directory held; it
// forgets issuers that ins do not name. An issuer that cannot be reached
// (transient) keeps what the directory held of it, or is left to be
// looked up on use; each such failure is in unreachable, naming the
// integrations. When one issuer's metadata are unusable ([ErrMetadata]),
// Fetch changes nothing and returns that error, naming the integration.
func (d *Directory) Fetch(ctx context.Context, ins []*config.Integration) (unreachable []error, err error) {
	users := map[string][]string{} // issuer -> the integrations that name it
	var issuers []string
	for _, in := range ins {
		if in.Issuer == "" {
			continue
		}
		if users[in.Issuer] == nil {
			issuers = append(issuers, in.Issuer)
		}
		users[in.Issuer] = append(users[in.Issuer], fmt.Sprintf("%q", in.Name))
	}
	type result struct {
		m   *Metadata
		err error
	}
	results := make([]result, len(issuers))
	var wg sync.WaitGroup
	for i, iss := range issuers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := Discover(ctx, d.http, iss)
			results[i] = result{m, err}
		}()
	}
	wg.Wait()
	fresh := map[string]*entry{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, iss := range issuers {
		r := results[i]
		name := "integration " + strings.Join(users[iss], ", integration ")
		switch {
		case errors.Is(r.err, ErrMetadata):
			return nil, fmt.Errorf("provider: %s: %w", name, r.err)
		case r.err != nil:
			if old := d.entries[iss]; old != nil && old.meta != nil {
				// The last good metadata stay in force.
				fresh[iss] = &entry{meta: old.meta}
				unreachable = append(unreachable, fmt.Errorf("provider: %s: %w; the metadata read before stay in force", name, r.err))
				continue
			}
			fresh[iss] = &entry{err: r.err, retryAt: d.now().Add(discoveryRetry)}
			unreachable = append(unreachable, fmt.Errorf("provider: %s: %w; it is asked again when needed", name, r.err))
		default:
			fresh[iss] = &entry{meta: r.m}
		}
	}
	d.entries = fresh
	return unreachable, nil
}
