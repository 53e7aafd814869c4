package provider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"golang.org/x/oauth2"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// ErrNoDeviceAuth is returned by StartDevice for an integration that has
// no device authorization endpoint.
var ErrNoDeviceAuth = errors.New("no device authorization endpoint")

// maxDeviceText bounds what a device authorization answer may show a
// user: the verification URIs and the user code.
const maxDeviceText = 2048

// maxDeviceInterval bounds, in seconds, how far polling backs off after
// failed requests.
const maxDeviceInterval = 60

// Device is a started device sign-in (RFC 8628): what to tell the user,
// and, inside, the device code to poll with.
type Device struct {
	// UserCode is what the user enters, or checks, at the verification
	// page.
	UserCode string
	// VerificationURI is the page where the user enters the code;
	// VerificationURIComplete, when the provider gave one, carries the
	// code already.
	VerificationURI, VerificationURIComplete string
	// Expiry is when the codes stop working; zero when the provider did
	// not say.
	Expiry time.Time

	resp *oauth2.DeviceAuthResponse
}

// StartDevice asks the integration's device authorization endpoint for a
// user code, authenticating the client as auth_style says (RFC 8628 §3.1).
func (c *Client) StartDevice(ctx context.Context) (*Device, error) {
	if err := c.readyFor(ctx, func(in *config.Integration) string { return in.DeviceAuthURL }); err != nil {
		return nil, err
	}
	in := c.Config()
	if in.DeviceAuthURL == "" {
		return nil, fmt.Errorf("integration %s has no device_auth_url: %w", in.Name, ErrNoDeviceAuth)
	}
	secret, err := secmem.Open(c.secret)
	if err != nil {
		return nil, err
	}
	defer secret.Destroy()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	// Copies, not LockedBuffer.String(): see Refresh.
	cfg := c.oauthConfig(string(secret.Bytes()))
	var opts []oauth2.AuthCodeOption
	hc := c.http
	if in.AuthStyle == config.AuthStylePost {
		opts = append(opts, oauth2.SetAuthURLParam("client_secret", cfg.ClientSecret))
	} else {
		hc = basicAuthClient(c.http, in.DeviceAuthURL, cfg.ClientID, cfg.ClientSecret)
	}
	resp, err := cfg.DeviceAuth(context.WithValue(ctx, oauth2.HTTPClient, hc), opts...)
	if err != nil {
		return nil, classify(ctx, err, c.timeout, "device authorization endpoint")
	}
	d := &Device{
		UserCode:                printable.String(resp.UserCode, 64),
		VerificationURI:         printable.String(resp.VerificationURI, maxDeviceText),
		VerificationURIComplete: printable.String(resp.VerificationURIComplete, maxDeviceText),
		Expiry:                  resp.Expiry,
		resp:                    resp,
	}
	switch {
	case resp.DeviceCode == "" || d.UserCode == "":
		return nil, errors.New("device authorization endpoint sent no device or user code")
	case !webURL(d.VerificationURI):
		return nil, errors.New("device authorization endpoint sent no http(s) verification_uri")
	}
	if !webURL(d.VerificationURIComplete) {
		d.VerificationURIComplete = ""
	}
	return d, nil
}

// PollDevice polls the token endpoint until the user approves or denies
// the sign-in, or its codes expire, or ctx ends; x/oauth2 honours the
// interval and slow_down. It returns the tokens and names the account,
// like Exchange.
func (c *Client) PollDevice(ctx context.Context, d *Device) (*Answer, error) {
	secret, err := secmem.Open(c.secret)
	if err != nil {
		return nil, err
	}
	// A copy, as in Refresh; the locked buffer is not held for the
	// minutes a device sign-in may take.
	cfg := c.oauthConfig(string(secret.Bytes()))
	secret.Destroy()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	da := *d.resp
	var tok *oauth2.Token
	for {
		tok, err = cfg.DeviceAccessToken(ctx, &da)
		var re *oauth2.RetrieveError
		expired := !da.Expiry.IsZero() && !time.Now().Before(da.Expiry)
		if err == nil || errors.As(err, &re) || ctx.Err() != nil || expired {
			break
		}
		// The request did not reach the provider or its answer did not
		// come back (a reset connection, a restart): poll on, backing
		// off as RFC 8628 §3.5 asks, until the codes expire.
		// DeviceAccessToken waits the interval before it polls.
		da.Interval = min(max(2*da.Interval, da.Interval+5), maxDeviceInterval)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && !d.Expiry.IsZero() && !time.Now().Before(d.Expiry) {
			return nil, NewError(0, "expired_token", "the code was not used in time")
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		err = classify(ctx, err, c.timeout, "token endpoint")
		c.observed("device_code", time.Time{}, err)
		return nil, err
	}
	a, err := c.answer(tok)
	c.observed("device_code", time.Time{}, err)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	a.Account = c.account(actx, tok)
	return a, nil
}

// webURL reports whether s is an absolute http or https URL with no user
// name (https://github.com@evil.example/ is evil.example) and nothing
// but the URL on its line.
func webURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.User == nil &&
		!strings.ContainsFunc(s, unicode.IsSpace)
}

// basicAuthClient is hc with HTTP Basic client authentication (RFC 6749
// §2.3.1, form-encoded id and secret) added to requests for target:
// x/oauth2 sends a device authorization request with the client id only.
func basicAuthClient(hc *http.Client, target, id, secret string) *http.Client {
	c := *hc
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.URL.String() == target || strings.TrimSuffix(r.URL.String(), "?") == target {
			r = r.Clone(r.Context())
			r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		}
		return base.RoundTrip(r)
	})
	return &c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
