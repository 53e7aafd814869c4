// Package client talks to a broker's session API over its Unix socket. A
// [Client] implements the filesystem's broker interface, so a mount can be
// served by a remote broker, and it backs the token, list, login and
// logout commands.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/broker/api"
)

// Client is a session API client. It is safe for concurrent use by
// multiple goroutines.
type Client struct {
	socket string
	hc     *http.Client
	stream *http.Client // no overall timeout: for the event stream
}

// New returns a client for the broker listening on the Unix socket path.
// Every request is bounded by timeout.
func New(socket string, timeout time.Duration) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: timeout}, stream: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

// Integrations lists every integration the caller can see.
func (c *Client) Integrations(ctx context.Context) ([]api.Integration, error) {
	var out []api.Integration
	return out, c.do(ctx, http.MethodGet, "/v1/integrations", nil, &out)
}

// Integration describes one integration by guid or name.
func (c *Client) Integration(ctx context.Context, id string) (api.Integration, error) {
	var out api.Integration
	return out, c.do(ctx, http.MethodGet, "/v1/integrations/"+url.PathEscape(id), nil, &out)
}

// Token returns a valid access token, refreshed by the broker if needed.
func (c *Client) Token(ctx context.Context, id string) (*api.Token, error) {
	t, _, err := c.token(ctx, id)
	return t, err
}

// token also returns until when the broker would hand the token out
// (zero: no expiry).
func (c *Client) token(ctx context.Context, id string) (*api.Token, time.Time, error) {
	var out struct {
		AccessToken json.RawMessage `json:"access_token"`
		Expiry      *string         `json:"expiry"`
		Obtained    *string         `json:"obtained"`
		RefreshAt   *string         `json:"refresh_at"`
	}
	// The body and the raw token are wiped once the token is sealed.
	body, err := c.raw(ctx, http.MethodGet, "/v1/integrations/"+url.PathEscape(id)+"/token", nil)
	defer memguard.WipeBytes(body)
	if err != nil {
		return nil, time.Time{}, err
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, time.Time{}, fmt.Errorf("client: %s does not answer like an oauthfs broker: %w", c.socket, api.ErrUnavailable)
	}
	defer memguard.WipeBytes(out.AccessToken)
	var value []byte
	if raw := out.AccessToken; len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		value = append([]byte(nil), raw[1:len(raw)-1]...)
	} else {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, time.Time{}, fmt.Errorf("client: the broker sent a malformed token: %w", api.ErrUnavailable)
		}
		value = []byte(s)
	}
	t := api.NewToken(value, parseTime(out.Expiry), parseTime(out.Obtained)) // wipes value
	if t == nil {
		return nil, time.Time{}, fmt.Errorf("client: the broker sent an empty token: %w", api.ErrUnavailable)
	}
	return t, parseTime(out.RefreshAt), nil
}

func parseTime(s *string) time.Time {
	if s == nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339, *s)
	return t
}

// Logout forgets the caller's credentials for the integration, and
// revokes them at the provider when the broker is configured to.
func (c *Client) Logout(ctx context.Context, id string) (api.LogoutResult, error) {
	var out api.LogoutResult
	err := c.do(ctx, http.MethodDelete, "/v1/integrations/"+url.PathEscape(id)+"/credentials", nil, &out)
	return out, err
}

// codes maps session API error codes back to the sentinels.
var codes = map[string]error{
	"not_found":      api.ErrNotFound,
	"not_signed_in":  api.ErrNotSignedIn,
	"expired":        api.ErrExpired,
	"forbidden":      api.ErrPermission,
	"sign_in_failed": api.ErrSignIn,
	"unavailable":    api.ErrUnavailable,
	"timeout":        api.ErrUnavailable,
}

// ErrNoBroker is wrapped when nothing answers on the socket.
var ErrNoBroker = errors.New("no broker is running")

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	data, err := c.raw(ctx, method, path, body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("client: %s does not answer like an oauthfs broker: %w", c.socket, api.ErrUnavailable)
	}
	return nil
}

// raw makes a request and returns the body of a successful answer.
func (c *Client) raw(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://oauthfs"+path, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("client: broker at %s: %v: %w", c.socket, err, api.ErrUnavailable)
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error, Message string }
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			return nil, fmt.Errorf("client: %s does not answer like an oauthfs broker (HTTP %d): %w", c.socket, resp.StatusCode, api.ErrUnavailable)
		}
		if s, ok := codes[e.Error]; ok {
			return nil, &RemoteError{Code: e.Error, Message: e.Message, sentinel: s}
		}
		return nil, &RemoteError{Code: e.Error, Message: e.Message}
	}
	return data, nil
}

func (c *Client) transportError(ctx context.Context, err error) error {
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return ctx.Err()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Errorf("client: %w at %s (start one with 'oauthfs mount --config FILE MOUNTPOINT' or 'oauthfs broker'): %w", ErrNoBroker, c.socket, api.ErrUnavailable)
	}
	return fmt.Errorf("client: broker at %s: %v: %w", c.socket, err, api.ErrUnavailable)
}

// RemoteError is an error answered by the broker. It unwraps to the
// sentinel its code stands for.
type RemoteError struct {
	Code, Message string
	sentinel      error
}

func (e *RemoteError) Error() string { return e.Message }
func (e *RemoteError) Unwrap() error { return e.sentinel }

// Login starts a sign-in and returns the link to open.
func (c *Client) Login(ctx context.Context, id string) (*api.SignIn, error) {
	var out api.SignIn
	return &out, c.do(ctx, http.MethodPost, "/v1/integrations/"+url.PathEscape(id)+"/login", nil, &out)
}

// WaitLogin waits up to wait (at most a minute) for the sign-in to end and
// returns its status, which is still "pending" if it has not.
func (c *Client) WaitLogin(ctx context.Context, loginID string, wait time.Duration) (api.SignInStatus, error) {
	var out api.SignInStatus
	return out, c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/logins/%s?wait=%d", url.PathEscape(loginID), int(wait/time.Second)), nil, &out)
}

// CancelLogin ends a pending sign-in.
func (c *Client) CancelLogin(ctx context.Context, loginID string) error {
	var out map[string]bool
	return c.do(ctx, http.MethodDelete, "/v1/logins/"+url.PathEscape(loginID), nil, &out)
}
