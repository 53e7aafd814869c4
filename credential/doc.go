// Package credential is the vocabulary every other part of oauthfs
// shares: a user's view of an integration (the object in meta.json and
// integrations.json), its sign-in [Status], the [Token] snapshot handed to
// readers, the [Tokens] a sign-in stores, and the sentinel errors behind
// the filesystem's errno table (docs/design.md).
//
// It owns nothing but these types. It must never import
// golang.org/x/oauth2 or go-fuse, so that both sides of the
// broker/filesystem boundary can depend on it.
package credential
