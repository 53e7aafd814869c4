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
// It owns the node types, the errno mapping and mounting. It reaches a
// broker only through the [Source] interface, so the same tree serves an
// embedded broker or a remote one; it must never import
// golang.org/x/oauth2 or the broker. Node methods return only
// syscall.Errno, and errno is the one place that maps broker errors to
// them.
package fusefs
