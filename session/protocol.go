package session

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/signin"
	"github.com/oauthfs/oauthfs/store"
)

// This file is the session API's wire protocol, shared by Server and
// Client: paths, event kinds, sign-in states, request and answer types,
// and the table of error codes. docs/api.md describes the same protocol
// for people; a test keeps the two in step.

// Paths. {id} is a guid (any case) or an exact name, path-escaped;
// {login} a login id.
const (
	PathIntegrations = "/v1/integrations"                   // GET: the index
	PathIntegration  = "/v1/integrations/{id}"              // GET: one meta object
	PathToken        = "/v1/integrations/{id}/token"        // GET: a TokenAnswer
	PathCredentials  = "/v1/integrations/{id}/credentials"  // PUT: import; DELETE: sign out
	PathLogin        = "/v1/integrations/{id}/login"        // POST: start a sign-in
	PathDeviceLogin  = "/v1/integrations/{id}/device-login" // POST: start a device sign-in
	PathLoginStatus  = "/v1/logins/{login}"                 // GET ?wait=SECONDS; DELETE: cancel
	PathEvents       = "/v1/events"                         // POST: the full-duplex event stream
	PathSettings     = "/v1/settings"                       // POST: a one-time link to the settings page; DELETE: end every settings session
)

// path fills the {id} or {login} of a path pattern.
func path(pattern, arg string) string {
	r := strings.NewReplacer("{id}", url.PathEscape(arg), "{login}", url.PathEscape(arg))
	return r.Replace(pattern)
}

// Event is one line of the event stream. Its kinds are EventHello (the
// stream is live), EventChanged (one integration's credentials were
// replaced or withdrawn), EventUpdated (one integration was refreshed, or
// failed to be) and EventReload (drop everything). The session acknowledges an event by
// writing its Seq and a newline on the request body once it has dropped
// what the event names.
type Event = broker.Event

// EventKind says what an Event is about.
type EventKind = broker.EventKind

// The kinds of Event.
const (
	EventHello   = broker.EventHello
	EventChanged = broker.EventChanged
	EventUpdated = broker.EventUpdated
	EventReload  = broker.EventReload
)

// SignIn answers POST PathLogin: the link to open and how to wait.
type SignIn = signin.Link

// DeviceSignIn answers POST PathDeviceLogin: the page to open on any
// device, the code, and how to wait (PathLoginStatus).
type DeviceSignIn = signin.DeviceLink

// SettingsLink answers POST PathSettings.
type SettingsLink = signin.SettingsLink

// SettingsEnded answers DELETE PathSettings.
type SettingsEnded struct {
	Ended int `json:"ended"` // how many sessions were ended
}

// SignInStatus answers GET PathLoginStatus.
type SignInStatus = signin.Result

// SignInState is SignInStatus.Status.
type SignInState = signin.State

// The values of SignInState.
const (
	SignInPending  = signin.Pending
	SignInSignedIn = signin.SignedIn
	SignInFailed   = signin.Failed
)

// LogoutResult answers DELETE PathCredentials.
type LogoutResult = broker.LogoutResult

// TokenAnswer answers GET PathToken. The server writes it from a locked
// buffer, with Content-Length, and closes the connection after it; the
// client reads it on a connection of its own. AccessToken holds the JSON
// string as sent, to be unquoted into a wiped buffer. Expiry and
// RefreshAt are null for a token without expiry; RefreshAt is the
// token's expiry less the refresh margin, until when a session may keep
// it.
type TokenAnswer struct {
	AccessToken RawString `json:"access_token"`
	Expiry      *string   `json:"expiry"`
	Obtained    *string   `json:"obtained"`
	RefreshAt   *string   `json:"refresh_at"`
}

// RawString is a JSON string kept as its raw bytes, quotes included.
type RawString []byte

// UnmarshalJSON keeps a copy of the raw value.
func (r *RawString) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// CredentialsKeys are the keys of a PUT PathCredentials body, a JSON
// object; they are matched exactly (case matters) and no others are taken:
// access_token (a string, required), refresh_token (a string), expires_in
// (seconds, 0 = no expiry) and scope (space-separated).
var CredentialsKeys = []string{"access_token", "refresh_token", "expires_in", "scope"}

// ErrorAnswer is the body of every error answer.
type ErrorAnswer struct {
	Error   string `json:"error"`   // a code of errorCodes
	Message string `json:"message"` // for people; never a secret
}

// errorCode is one row of the error-code table.
type errorCode struct {
	Code   string
	Status int
	// Is finds the errors the server answers with this code (the first
	// row that matches wins); nil matches everything.
	Is func(error) bool
	// Means is the sentinel the client wraps for this code.
	Means error
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

// errorCodes is the error-code table: the server answers with the first
// row whose Is matches, and the client maps a code back to its Means.
var errorCodes = []errorCode{
	{"not_found", http.StatusNotFound, is(credential.ErrNotFound), credential.ErrNotFound},
	{"not_signed_in", http.StatusUnauthorized, is(credential.ErrNotSignedIn), credential.ErrNotSignedIn},
	{"expired", http.StatusUnauthorized, is(credential.ErrExpired), credential.ErrExpired},
	{"forbidden", http.StatusForbidden, is(credential.ErrPermission), credential.ErrPermission},
	{"bad_request", http.StatusBadRequest, is(credential.ErrBadRequest), credential.ErrBadRequest},
	{"sign_in_failed", http.StatusConflict, is(credential.ErrSignIn), credential.ErrSignIn},
	{"store", http.StatusInternalServerError, is(store.ErrUnusable), credential.ErrUnavailable},
	{"timeout", http.StatusGatewayTimeout, func(err error) bool {
		return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	}, credential.ErrUnavailable},
	{"unavailable", http.StatusBadGateway, nil, credential.ErrUnavailable},
}

// codeOf returns the row of errorCodes that the server answers err with.
func codeOf(err error) errorCode {
	for _, c := range errorCodes {
		if c.Is == nil || c.Is(err) {
			return c
		}
	}
	return errorCodes[len(errorCodes)-1]
}

// meaning returns the sentinel of an error code, or nil for a code this
// client does not know.
func meaning(code string) error {
	for _, c := range errorCodes {
		if c.Code == code {
			return c.Means
		}
	}
	return nil
}
