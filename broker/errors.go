package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/oauth2"
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

// maxDescription bounds what a provider's error description may add to
// logs and meta.json.
const maxDescription = 200

// classify turns an error from x/oauth2 or net/http into one that is safe
// to log and says plainly what happened at which endpoint.
func classify(ctx context.Context, err error, timeout time.Duration, endpoint string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		pe := &ProviderError{Code: re.ErrorCode, Description: printable(re.ErrorDescription, maxDescription)}
		if re.Response != nil {
			pe.Status = re.Response.StatusCode
		}
		if pe.Code == "" && pe.Status >= 200 && pe.Status < 300 {
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
	return fmt.Errorf("%s sent a malformed answer (%v)", endpoint, err)
}

// printable keeps at most n bytes of s, with control characters replaced.
func printable(s string, n int) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		out = append(out, r)
	}
	s = string(out)
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
