// Package session is the server of the session API (docs/api.md): HTTP/1.1
// and JSON on a Unix socket, where each caller is known by its uid
// (SO_PEERCRED) and sees only its own credentials. It answers in the
// protocol of package api, turning the broker's and sign-in's answers and
// events into api types; clients are in package client, the socket in
// internal/unixsock.
//
// It must never import go-fuse or golang.org/x/oauth2.
package session
