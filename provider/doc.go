// Package provider talks to the OAuth 2.0 provider of one integration:
// the authorization URL of a sign-in, the token endpoint (authorization
// code and refresh token grants), RFC 7009 revocation and the userinfo
// endpoint that names an account. It owns the integration's client secret
// and the HTTP client every provider request goes through, which never
// follows a redirect.
//
// Everything a provider sends passes through here once: tokens come back
// as byte slices the caller owns and wipes, and error codes, descriptions
// and account names are bounded and cleaned of control characters where
// they enter. Errors never quote a response body.
//
// It is the only package besides config that imports golang.org/x/oauth2.
// It must never import the broker, the filesystem or the session API.
package provider
