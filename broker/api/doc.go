// Package api holds the vocabulary shared by the broker, its socket client
// and the filesystem: the integration metadata shown in meta.json, the
// [Token] snapshot handed to readers, and the sentinel errors behind the
// errno table of SPEC §2.
//
// It imports neither golang.org/x/oauth2 nor go-fuse, so both sides of the
// broker/filesystem boundary can depend on it.
package api
