package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/oauth2"

	"github.com/oauthfs/oauthfs/internal/printable"
)

// ProviderError is an error answer from a token endpoint (RFC 6749 §5.2).
//
// It is built from *oauth2.RetrieveError without keeping that error: the
// RetrieveError's message quotes the whole response body, which a faulty
// provider could fill with anything, including tokens. ProviderError keeps
// only the status, the error code and a bounded description.
type ProviderError struct {
	Status      int    // HTTP status
	Code        string // the "error" field, e.g. invalid_grant
	Description string // the "error_description" field, truncated
}

func (e *ProviderError) Error() string {
	return "token endpoint answered " + e.summary()
}

func (e *ProviderError) summary() string {
	s := fmt.Sprintf("HTTP %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Bounds on what a provider's answer may add to logs, meta.json and the
// store. Every string from a provider passes through printable once, here
// or where it enters, so nothing downstream has to.
const (
	maxCode        = 64
	maxDescription = 200
	maxAccount     = 200
)

// classify turns an error from x/oauth2 or net/http into one that is safe
// to log and says plainly what happened at which endpoint.
func classify(ctx context.Context, err error, timeout time.Duration, endpoint string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		pe := providerError(re.ErrorCode, re.ErrorDescription)
		if re.Response != nil {
			pe.Status = re.Response.StatusCode
		}
		switch {
		case pe.Status >= 300 && pe.Status < 400:
			return fmt.Errorf("%s answered HTTP %d, a redirect, which oauthfs does not follow (it would carry secrets to another address); set the endpoint's final URL in the configuration", endpoint, pe.Status)
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
	}
	// x/oauth2 reports unparsable bodies and missing fields with its own
	// messages, which never quote the body.
	return fmt.Errorf("%s sent a malformed answer (%s)", endpoint, printable.String(err.Error(), maxDescription))
}

// providerError keeps a provider's error code and description, cleaned and
// bounded.
func providerError(code, description string) *ProviderError {
	return &ProviderError{Code: printable.Code(code, maxCode), Description: printable.String(description, maxDescription)}
}
