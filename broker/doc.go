// Package broker is the credential core of oauthfs: the registry of
// configured integrations, every user's credentials, refresh-on-read
// (docs/design.md), reloads, sign-out with revocation, and the events
// that tell session mounts what changed. A cached token is served while
// it stays valid beyond the refresh margin; otherwise the refresh token is
// used first, with concurrent callers sharing one request to the token
// endpoint, and the rotated refresh token is saved before the new access
// token is handed out.
//
// Every secret lives in a memguard enclave and is decrypted only for the
// moment it is used. It talks to providers through package provider and
// saves through a store.Store. It must never import go-fuse, the session
// API or the sign-in pages; the filesystem reaches it through [Source].
package broker
