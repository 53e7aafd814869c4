package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/oauthfs/oauthfs/internal/printable"
)

// Error is an error answer from a token endpoint (RFC 6749 §5.2).
//
// It is built from *oauth2.RetrieveError without keeping that error: the
// RetrieveError's message quotes the whole response body, which a faulty
// provider could fill with anything, including tokens. Error keeps only
// the status, the error code and a bounded description.
type Error struct {
	Status      int    // HTTP status
	Code        string // the "error" field, e.g. invalid_grant
	Description string // the "error_description" field, cleaned and cut
	// RetryAfter is how long the provider asked to be left alone
	// (Retry-After, with 429 or 503), at most MaxRetryAfter; 0: it did not.
	RetryAfter time.Duration
	// DPoP is set when the provider wants DPoP proofs (RFC 9449), which
	// oauthfs does not make.
	DPoP bool
}

// MaxRetryAfter bounds how long a provider's Retry-After is honoured.
const MaxRetryAfter = 10 * time.Minute

func (e *Error) Error() string {
	if e.DPoP {
		return "token endpoint requires DPoP (RFC 9449, proof-of-possession tokens), which oauthfs does not support; use a client registration without DPoP (" + e.Summary() + ")"
	}
	return "token endpoint answered " + e.Summary()
}

// Summary is the status, code and description, without the endpoint.
func (e *Error) Summary() string {
	s := fmt.Sprintf("HTTP %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// InvalidGrant reports whether the provider refused the grant itself
// (a revoked or expired refresh token, a used code): only signing in
// again helps.
func (e *Error) InvalidGrant() bool { return e.Code == "invalid_grant" }

// Bounds on what a provider's answer may add to logs, meta.json and the
// store.
const (
	maxCode        = 64
	maxDescription = 200
	MaxAccount     = 200
	MaxScopes      = 2 << 10
)

// NewError keeps a provider's error code and description, cleaned and
// bounded. The sign-in callback uses it for the error in its query.
func NewError(status int, code, description string) *Error {
	return &Error{Status: status, Code: printable.Code(code, maxCode), Description: printable.String(description, maxDescription)}
}

// retryAfter parses a Retry-After header (seconds, or an HTTP date) into
// a wait from now, at most MaxRetryAfter; 0 when there is none.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		d = time.Duration(min(max(n, 0), int64(MaxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// classify turns an error from x/oauth2 or net/http into one that is safe
// to log and says plainly what happened at which endpoint.
func classify(ctx context.Context, err error, timeout time.Duration, endpoint string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		pe := NewError(status, re.ErrorCode, re.ErrorDescription)
		if re.Response != nil {
			pe.RetryAfter = retryAfter(re.Response.Header.Get("Retry-After"), time.Now())
			pe.DPoP = strings.HasPrefix(strings.ToLower(re.Response.Header.Get("WWW-Authenticate")), "dpop") ||
				pe.Code == "invalid_dpop_proof" || pe.Code == "use_dpop_nonce"
		}
		switch {
		case pe.Status >= 300 && pe.Status < 400:
			return fmt.Errorf("%s answered HTTP %d, a redirect, which oauthfs does not follow (it would carry secrets to another address)", endpoint, pe.Status)
		case pe.Code == "" && pe.Status >= 200 && pe.Status < 300:
			return errors.New(endpoint + " sent a malformed answer")
		}
		return pe
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Errorf("%s did not answer within %v", endpoint, timeout)
	case errors.As(err, new(*net.OpError)):
		return fmt.Errorf("%s unreachable: %w", endpoint, err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s unreachable: it closed the connection without an answer", endpoint)
	}
	// x/oauth2 reports unparsable bodies and missing fields with its own
	// messages, which never quote the body.
	return fmt.Errorf("%s sent a malformed answer (%s)", endpoint, printable.String(err.Error(), maxDescription))
}
