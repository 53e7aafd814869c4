// Package signin is browser sign-in: the table of sign-ins in progress,
// the start link and its confirmation page, and the callback, with PKCE
// (S256) and a single-use state bound to the user who started it and to
// the browser that opened it. It reaches a broker through the small
// [Keeper] interface and a provider through provider.Client.
//
// It must never import the broker, the session API or the filesystem.
package signin
