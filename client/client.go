// Package client is the session API's client (docs/api.md): [Client], what
// the commands use, and [Cached], the source a session mount serves its
// filesystem from. It speaks the protocol of package api over the
// broker's Unix socket, after checking that the socket and the process
// answering on it are the caller's or root's.
//
// It must never import the broker, sign-in, the store or a provider: a
// command or a session mount links the protocol, not the broker. It may
// import api, credential and internal packages only.
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
	"strconv"
	"strings"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/api"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/internal/wirejson"
)

// Client is a session API client. It is safe for concurrent use by
// multiple goroutines.
type Client struct {
	socket string
	hc     *http.Client
	stream *http.Client // no overall timeout: for the event stream
}

// NewClient returns a client for the broker listening on the Unix socket path.
// Every request is bounded by timeout.
func NewClient(socket string, timeout time.Duration) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, socket)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: timeout}, stream: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

// Integrations lists every integration the caller can see.
func (c *Client) Integrations(ctx context.Context) ([]credential.Integration, error) {
	var out []credential.Integration
	return out, c.do(ctx, http.MethodGet, api.PathIntegrations, nil, &out)
}

// Integration describes one integration by guid or name.
func (c *Client) Integration(ctx context.Context, id string) (credential.Integration, error) {
	var out credential.Integration
	return out, c.do(ctx, http.MethodGet, api.Path(api.PathIntegration, id), nil, &out)
}

// Token returns a valid access token, refreshed by the broker if needed.
func (c *Client) Token(ctx context.Context, id string) (*credential.Token, error) {
	t, _, err := c.token(ctx, id, api.TokenQuery{})
	return t, err
}

// TokenFor is Token for the token q asks for: a variant, a token for a
// resource or scopes, one that stays valid for a while, or one refreshed
// first.
func (c *Client) TokenFor(ctx context.Context, id string, q api.TokenQuery) (*credential.Token, error) {
	t, _, err := c.token(ctx, id, q)
	return t, err
}

// TokenUntil is TokenFor, and also returns until when the token may be
// kept: its refresh time (refresh_at), the zero time for a token without
// expiry. A tool that caches what it is given (kubectl) should ask again
// then.
func (c *Client) TokenUntil(ctx context.Context, id string, q api.TokenQuery) (*credential.Token, time.Time, error) {
	return c.token(ctx, id, q)
}

// token also returns until when the broker would hand the token out
// (zero: no expiry).
func (c *Client) token(ctx context.Context, id string, q api.TokenQuery) (*credential.Token, time.Time, error) {
	// The answer is read into a locked buffer on a connection of its
	// own, not through net/http, whose buffers are recycled unwiped; the
	// token goes from there into its enclave.
	path := api.Path(api.PathToken, id)
	if s := q.Encode(); s != "" {
		path += "?" + s
	}
	resp, err := c.rawGet(ctx, path)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer resp.Destroy()
	status, body, err := splitResponse(resp.Bytes())
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("client: %s does not answer like an oauthfs broker (%v): %w", c.socket, err, credential.ErrUnavailable)
	}
	if status >= 300 {
		return nil, time.Time{}, c.remoteError(status, body)
	}
	var out api.TokenAnswer
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, time.Time{}, fmt.Errorf("client: %s does not answer like an oauthfs broker: %w", c.socket, credential.ErrUnavailable)
	}
	defer memguard.WipeBytes(out.AccessToken)
	defer memguard.WipeBytes(out.IDToken)
	value, err := unquoteToken(out.AccessToken)
	if err != nil || len(value) == 0 {
		return nil, time.Time{}, fmt.Errorf("client: the broker sent a malformed token: %w", credential.ErrUnavailable)
	}
	var idToken []byte
	if len(out.IDToken) > 0 {
		if idToken, err = unquoteToken(out.IDToken); err != nil {
			memguard.WipeBytes(value)
			return nil, time.Time{}, fmt.Errorf("client: the broker sent a malformed ID token: %w", credential.ErrUnavailable)
		}
	}
	t, err := credential.NewAccess(value, parseTime(out.Expiry), parseTime(out.Obtained), out.TokenType, out.Scopes, idToken, nil) // wipes value and idToken
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("client: %w: %w", err, credential.ErrUnavailable)
	}
	return t, parseTime(out.RefreshAt), nil
}

// unquoteToken unquotes the JSON string raw into a new slice the caller
// wipes (or seals).
func unquoteToken(raw []byte) ([]byte, error) {
	n, err := wirejson.UnquotedLen(raw)
	if err != nil {
		return nil, err
	}
	value := make([]byte, n)
	return value, wirejson.Unquote(value, raw)
}

// maxTokenResponse bounds a token answer: the broker refuses tokens (and
// ID tokens) over 64 KiB, which JSON escaping can make six times longer.
const maxTokenResponse = 2*6*64<<10 + 4096

// rawGet sends a GET on a new connection and reads the whole answer (the
// broker closes the connection after it) into a locked buffer, which the
// caller destroys.
func (c *Client) rawGet(ctx context.Context, path string) (*secmem.Buffer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.hc.Timeout)
	defer cancel()
	conn, err := dial(ctx, c.socket)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: oauthfs\r\nConnection: close\r\n\r\n"); err != nil {
		return nil, c.transportError(ctx, err)
	}
	// Most answers fit the first buffer; a longer one (Content-Length
	// says) moves to one of its exact size.
	buf, err := secmem.NewBuffer(8 << 10)
	if err != nil {
		return nil, fmt.Errorf("client: %w: %w", err, credential.ErrUnavailable)
	}
	n, total := 0, -1
	for total < 0 || n < total {
		if n == buf.Size() {
			if total < 0 || total > maxTokenResponse {
				buf.Destroy()
				return nil, fmt.Errorf("client: the broker's answer is longer than %d bytes: %w", maxTokenResponse, credential.ErrUnavailable)
			}
			bigger, err := secmem.NewBuffer(total)
			if err != nil {
				buf.Destroy()
				return nil, fmt.Errorf("client: %w: %w", err, credential.ErrUnavailable)
			}
			copy(bigger.Bytes(), buf.Bytes()[:n])
			buf.Destroy()
			buf = bigger
		}
		k, err := conn.Read(buf.Bytes()[n:])
		n += k
		if total < 0 {
			total = answerLen(buf.Bytes()[:n])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			buf.Destroy()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, c.transportError(ctx, err)
		}
	}
	out, err := secmem.NewBuffer(max(1, n))
	if err != nil {
		buf.Destroy()
		return nil, fmt.Errorf("client: %w: %w", err, credential.ErrUnavailable)
	}
	copy(out.Bytes(), buf.Bytes()[:n])
	buf.Destroy()
	return out, nil
}

// answerLen returns the length of the whole answer whose start is b, from
// its Content-Length, or -1 while the header is incomplete.
func answerLen(b []byte) int {
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		return -1
	}
	if n, ok := contentLength(b[:i]); ok {
		return i + 4 + n
	}
	return 1 << 30 // no length: read to EOF, within the bound
}

// contentLength returns the Content-Length that the header head (the
// answer up to its blank line) gives, and whether it gives a valid one.
func contentLength(head []byte) (int, bool) {
	for _, h := range bytes.Split(head, []byte("\r\n")) {
		k, v, _ := bytes.Cut(h, []byte(":"))
		if strings.EqualFold(string(bytes.TrimSpace(k)), "Content-Length") {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			return n, err == nil && n >= 0
		}
	}
	return 0, false
}

// splitResponse returns the status and body of an HTTP/1.1 answer with
// Content-Length, as the broker writes it.
func splitResponse(b []byte) (int, []byte, error) {
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		return 0, nil, errors.New("no end of header")
	}
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return 0, nil, errors.New("no status line")
	}
	status, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, nil, errors.New("bad status")
	}
	if n, ok := contentLength(head); ok {
		if n > len(body) {
			return 0, nil, errors.New("truncated body")
		}
		body = body[:n]
	}
	return status, body, nil
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
	err := c.do(ctx, http.MethodDelete, api.Path(api.PathCredentials, id), nil, &out)
	return out, err
}

// ErrNoBroker is wrapped when nothing answers on the socket.
var ErrNoBroker = errors.New("no broker is running")

// noBroker is the error for socket, where nothing answers.
func noBroker(socket string) error {
	return fmt.Errorf("client: %w at %s: %w", ErrNoBroker, socket, credential.ErrUnavailable)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	data, err := c.raw(ctx, method, path, body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("client: %s does not answer like an oauthfs broker: %w", c.socket, credential.ErrUnavailable)
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
		return nil, fmt.Errorf("client: broker at %s: %v: %w", c.socket, err, credential.ErrUnavailable)
	}
	if resp.StatusCode >= 300 {
		return nil, c.remoteError(resp.StatusCode, data)
	}
	return data, nil
}

// remoteError turns an error answer into a remoteErr that unwraps to
// the sentinel of its code.
func (c *Client) remoteError(status int, data []byte) error {
	var e struct{ Error, Message string }
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		return fmt.Errorf("client: %s does not answer like an oauthfs broker (HTTP %d): %w", c.socket, status, credential.ErrUnavailable)
	}
	msg := printable.String(e.Message, 1000)
	if s := api.Meaning(e.Error); s != nil {
		return &remoteErr{Code: e.Error, Message: msg, sentinel: s}
	}
	return &remoteErr{Code: printable.Code(e.Error, 64), Message: msg}
}

// transportError says why a request did not reach the broker, or got no
// answer: what dial said of the socket (nothing there, or not to be
// trusted) as it said it, whichever request it was.
func (c *Client) transportError(ctx context.Context, err error) error {
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // net/http's "Get URL:" says nothing of use here
	}
	var oe *net.OpError
	switch {
	case errors.Is(err, credential.ErrUnavailable):
		return err // dial's own, complete
	case errors.As(err, &oe) && oe.Op == "dial":
		return noBroker(c.socket)
	}
	return fmt.Errorf("client: broker at %s: %v: %w", c.socket, err, credential.ErrUnavailable)
}

// remoteErr is an error answered by the broker. It unwraps to the
// sentinel its code stands for.
type remoteErr struct {
	Code, Message string
	sentinel      error
}

func (e *remoteErr) Error() string { return e.Message }
func (e *remoteErr) Unwrap() error { return e.sentinel }

// Login starts a sign-in and returns the link to open.
func (c *Client) Login(ctx context.Context, id string) (*api.SignIn, error) {
	var out api.SignIn
	return &out, c.do(ctx, http.MethodPost, api.Path(api.PathLogin, id), nil, &out)
}

// DeviceLogin starts a device sign-in and returns the page and code to
// show the user.
func (c *Client) DeviceLogin(ctx context.Context, id string) (*api.DeviceSignIn, error) {
	var out api.DeviceSignIn
	return &out, c.do(ctx, http.MethodPost, api.Path(api.PathDeviceLogin, id), nil, &out)
}

// Settings returns a one-time link to the settings page.
func (c *Client) Settings(ctx context.Context) (*api.SettingsLink, error) {
	var out api.SettingsLink
	return &out, c.do(ctx, http.MethodPost, api.PathSettings, nil, &out)
}

// EndSettings ends every settings session of the caller and returns how
// many there were.
func (c *Client) EndSettings(ctx context.Context) (int, error) {
	var out api.SettingsEnded
	return out.Ended, c.do(ctx, http.MethodDelete, api.PathSettings, nil, &out)
}

// WaitLogin waits up to wait (at most a minute) for the sign-in to end and
// returns its status, which is still "pending" if it has not.
func (c *Client) WaitLogin(ctx context.Context, loginID string, wait time.Duration) (api.SignInStatus, error) {
	var out api.SignInStatus
	return out, c.do(ctx, http.MethodGet, fmt.Sprintf("%s?wait=%d", api.Path(api.PathLoginStatus, loginID), int(wait/time.Second)), nil, &out)
}

// CancelLogin ends a pending sign-in.
func (c *Client) CancelLogin(ctx context.Context, loginID string) error {
	var out map[string]bool
	return c.do(ctx, http.MethodDelete, api.Path(api.PathLoginStatus, loginID), nil, &out)
}

// Info returns what the broker says of itself: its request timeout and
// version.
func (c *Client) Info(ctx context.Context) (api.Info, error) {
	var out api.Info
	return out, c.do(ctx, http.MethodGet, api.PathInfo, nil, &out)
}
