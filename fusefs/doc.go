// Package fusefs is the oauthfs filesystem (docs/design.md), built on
// go-fuse v2, in the way gocryptfs names its FUSE front end:
//
//	/oauth/
//	├── integrations.json        the index
//	├── by-name/<name> -> ../<guid>
//	└── <guid>/
//	    ├── access_token         refresh-on-read
//	    ├── expiry
//	    └── meta.json
//
// It owns the node types and mounting: a user's own mount ([NewRoot],
// [Mount]), and the system mount ([NewSystemRoot], [MountSystem]), one
// filesystem at /oauth where each caller's paths lead to a view of its
// own credentials (docs/design.md, "The system mount"). It reaches a
// broker only through the [Source] interface, so the same tree serves an
// embedded broker or a remote one; it must never import
// golang.org/x/oauth2 or the broker. Node methods return only
// syscall.Errno, which credential.Errno, the one mapping of broker errors
// to errnos, gives them.
package fusefs
