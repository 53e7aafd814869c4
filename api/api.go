// Package api is the session API's wire protocol (docs/api.md): the
// paths, the JSON of requests, answers and events, and the table of
// error codes, shared by the server (package session) and its clients
// (package client), as gocryptfs's ctlsock keeps its ABI in one file and
// tailscale its apitype.
//
// It owns nothing but these types. It must never import anything of
// oauthfs but credential: a client links the protocol, not the broker.
package api

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

// Paths. {id} is a guid (any case) or an exact name, path-escaped;
// {login} a login id.
const (
	PathInfo         = "/v1/info"                           // GET: an Info
	PathIntegrations = "/v1/integrations"                   // GET: the index
	PathIntegration  = "/v1/integrations/{id}"              // GET: one meta object
	PathToken        = "/v1/integrations/{id}/token"        // GET ?TokenQuery: a TokenAnswer
	PathCredentials  = "/v1/integrations/{id}/credentials"  // PUT: import; DELETE: sign out
	PathLogin        = "/v1/integrations/{id}/login"        // POST: start a sign-in
	PathDeviceLogin  = "/v1/integrations/{id}/device-login" // POST: start a device sign-in
	PathLoginStatus  = "/v1/logins/{login}"                 // GET ?wait=SECONDS; DELETE: cancel
	PathEvents       = "/v1/events"                         // POST: the full-duplex event stream
	PathSettings     = "/v1/settings"                       // POST: a one-time link to the settings page; DELETE: end every settings session
)

// Path fills the {id} or {login} of a path pattern.
func Path(pattern, arg string) string {
	r := strings.NewReplacer("{id}", url.PathEscape(arg), "{login}", url.PathEscape(arg))
	return r.Replace(pattern)
}

// Info answers GET PathInfo: what a session mount needs to know of the
// broker before it serves its filesystem.
type Info struct {
	// RequestTimeoutMillis is the broker's request_timeout: a session
	// mount bounds its calls by it, plus a little.
	RequestTimeoutMillis int64 `json:"request_timeout_ms"`
	// Version is the broker's version.
	Version string `json:"version"`
}

// RequestTimeout returns RequestTimeoutMillis as a duration.
func (i Info) RequestTimeout() time.Duration {
	return time.Duration(i.RequestTimeoutMillis) * time.Millisecond
}

// Event is one line of the event stream. The session acknowledges an
// event by writing its Seq and a newline on the request body once it has
// dropped what the event names.
type Event struct {
	Seq  uint64    `json:"seq"` // counts the events of one stream, from 1
	Kind EventKind `json:"kind"`
	GUID string    `json:"guid,omitempty"`
}

// EventKind says what an Event is about.
type EventKind string

// The kinds of [Event].
const (
	EventHello   EventKind = "hello"   // the stream is live; drop everything cached
	EventChanged EventKind = "changed" // one integration's tokens are gone or replaced: drop them now
	EventUpdated EventKind = "updated" // one integration was refreshed, or failed to: drop it soon
	EventReload  EventKind = "reload"  // the configuration changed; drop everything
)

// Change is what an event means to a filesystem.
func (e Event) Change() credential.Change { return credential.ChangeOf(string(e.Kind), e.GUID) }

// SignIn answers POST PathLogin: the link to open and how to wait
// (PathLoginStatus).
type SignIn struct {
	ID      string    `json:"login_id"`
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
	Name    string    `json:"name"`
	GUID    string    `json:"guid"`
}

// DeviceSignIn answers POST PathDeviceLogin: the page to open on any
// device, the code, and how to wait (PathLoginStatus).
type DeviceSignIn struct {
	ID                      string    `json:"login_id"`
	VerificationURI         string    `json:"verification_uri"`
	VerificationURIComplete string    `json:"verification_uri_complete,omitempty"`
	UserCode                string    `json:"user_code"`
	Expires                 time.Time `json:"expires"`
	Name                    string    `json:"name"`
	GUID                    string    `json:"guid"`
}

// SettingsLink answers POST PathSettings: a one-time link to the settings
// page.
type SettingsLink struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// SettingsEnded answers DELETE PathSettings.
type SettingsEnded struct {
	Ended int `json:"ended"` // how many sessions were ended
}

// SignInStatus answers GET PathLoginStatus.
type SignInStatus struct {
	Status  string `json:"status"` // SignInPending, SignInSignedIn or SignInFailed
	Message string `json:"message,omitempty"`
	Name    string `json:"name"`
	GUID    string `json:"guid"`
	// Account names the provider account that signed in, when the
	// provider said.
	Account string `json:"account,omitempty"`
}

// The values of SignInStatus.Status.
const (
	SignInPending  = "pending"
	SignInSignedIn = "signed_in"
	SignInFailed   = "failed"
)

// LogoutResult answers DELETE PathCredentials.
type LogoutResult struct {
	// SignedOut is true when there were tokens to forget.
	SignedOut bool `json:"signed_out"`
	// Revoked is true when the provider confirmed the revocation.
	Revoked bool `json:"revoked"`
	// RevocationError says why revocation failed or was skipped; the
	// tokens are forgotten in any case.
	RevocationError string `json:"revocation_error,omitempty"`
}

// TokenAnswer answers GET PathToken. The server writes it from a locked
// buffer, with Content-Length, and closes the connection after it; the
// client reads it on a connection of its own. AccessToken and IDToken
// hold the JSON strings as sent, to be unquoted into wiped buffers.
// Expiry and RefreshAt are null for a token without expiry; RefreshAt is
// the token's expiry less the refresh margin, until when a session may
// keep it. IDToken is absent when the token came with none.
type TokenAnswer struct {
	AccessToken RawString `json:"access_token"`
	TokenType   string    `json:"token_type"`
	Expiry      *string   `json:"expiry"`
	Obtained    *string   `json:"obtained"`
	RefreshAt   *string   `json:"refresh_at"`
	Scopes      []string  `json:"scopes"`
	IDToken     RawString `json:"id_token,omitempty"`
}

// TokenQuery is the query of GET PathToken: which of the grant's tokens,
// and how long it must stay valid. Its zero value asks for the token the
// files show.
type TokenQuery struct {
	// Variant names a token variant of the integration.
	Variant string
	// Resource and Scopes ask for a token no variant names (RFC 8707
	// resource, a subset of the granted scopes); not with Variant.
	Resource string
	Scopes   []string
	// MinValid is how long the token must stay valid; whole seconds.
	MinValid time.Duration
	// Force refreshes the token first.
	Force bool
}

// IsZero reports whether q asks for nothing but the token the files show.
func (q TokenQuery) IsZero() bool {
	return q.Variant == "" && q.Resource == "" && len(q.Scopes) == 0 && q.MinValid == 0 && !q.Force
}

// Encode returns q as a query string ("" for the zero query), without
// the "?".
func (q TokenQuery) Encode() string {
	v := url.Values{}
	if q.Variant != "" {
		v.Set("variant", q.Variant)
	}
	if q.Resource != "" {
		v.Set("resource", q.Resource)
	}
	if len(q.Scopes) > 0 {
		v.Set("scope", strings.Join(q.Scopes, " "))
	}
	if q.MinValid > 0 {
		v.Set("min_valid", strconv.FormatInt(int64((q.MinValid+time.Second-1)/time.Second), 10))
	}
	if q.Force {
		v.Set("force", "1")
	}
	return v.Encode()
}

// ParseTokenQuery reads a TokenQuery, saying what is wrong with one that
// does not parse.
func ParseTokenQuery(v url.Values) (TokenQuery, error) {
	q := TokenQuery{Variant: v.Get("variant"), Resource: v.Get("resource"), Scopes: strings.Fields(v.Get("scope"))}
	if s := v.Get("min_valid"); s != "" {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil || n < 0 {
			return q, errors.New("min_valid must be a whole number of seconds, 0 or more")
		}
		q.MinValid = time.Duration(n) * time.Second
	}
	switch v.Get("force") {
	case "", "0":
	case "1":
		q.Force = true
	default:
		return q, errors.New("force must be 1 or 0")
	}
	if q.Variant != "" && (q.Resource != "" || len(q.Scopes) > 0) {
		return q, errors.New("ask for a variant, or for a resource and scopes, not both")
	}
	return q, nil
}

// RawString is a JSON string kept as its raw bytes, quotes included.
type RawString []byte

// UnmarshalJSON keeps a copy of the raw value.
func (r *RawString) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// CredentialsKeys are the keys of a PUT PathCredentials body, a JSON
// object; they are matched exactly (case matters) and no others are taken:
// access_token (a string, required), refresh_token (a string), expires_in
// (seconds, 0 = no expiry), scope (space-separated), id_token (a string)
// and token_type (a string; Bearer when absent).
var CredentialsKeys = []string{"access_token", "refresh_token", "expires_in", "scope", "id_token", "token_type"}

// ErrorAnswer is the body of every error answer.
type ErrorAnswer struct {
	Error   string `json:"error"`   // a code of ErrorCodes
	Message string `json:"message"` // for people; never a secret
}

// ErrorCode is one row of the error-code table: a code, its HTTP status,
// and the sentinel a client's error wraps for it.
type ErrorCode struct {
	Code   string
	Status int
	Means  error
}

// ErrorCodes is the error-code table. The server answers each error with
// one of these codes; the client maps a code back to its Means.
var ErrorCodes = []ErrorCode{
	{"not_found", http.StatusNotFound, credential.ErrNotFound},
	{"not_signed_in", http.StatusUnauthorized, credential.ErrNotSignedIn},
	{"expired", http.StatusUnauthorized, credential.ErrExpired},
	{"forbidden", http.StatusForbidden, credential.ErrPermission},
	{"bad_request", http.StatusBadRequest, credential.ErrBadRequest},
	{"sign_in_failed", http.StatusConflict, credential.ErrSignIn},
	{"store", http.StatusInternalServerError, credential.ErrUnavailable},
	{"timeout", http.StatusGatewayTimeout, credential.ErrUnavailable},
	{"unavailable", http.StatusBadGateway, credential.ErrUnavailable},
}

// Meaning returns the sentinel of an error code, or nil for a code this
// client does not know.
func Meaning(code string) error {
	for _, c := range ErrorCodes {
		if c.Code == code {
			return c.Means
		}
	}
	return nil
}
