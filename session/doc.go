// Package session is the session API (docs/api.md): HTTP/1.1 and JSON on
// a Unix socket, where each caller is known by its uid (SO_PEERCRED) and
// sees only its own credentials. It holds the wire protocol (protocol.go),
// the [Server] a broker host runs, the [Client] the commands use, and
// [Cached], the client a session mount serves its filesystem from. It
// also owns the socket: listening, per-uid connection caps, and the
// checks a client makes before it trusts one.
//
// It must never import go-fuse or golang.org/x/oauth2.
package session
