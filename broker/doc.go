// Package broker owns everything secret in oauthfs: client secrets,
// refresh tokens and access tokens, per user. It hands out access tokens
// with refresh-on-read (docs/design.md): a cached token is served while it stays
// valid beyond the refresh margin, otherwise the refresh token is used
// first, with concurrent callers sharing one request to the token endpoint.
//
// Every secret lives in a memguard Enclave and is decrypted only for the
// moment it is used. The package never imports go-fuse; the filesystem
// reaches it through the small interface it defines, which [Session]
// implements for one user.
package broker
