// Package fs is the oauthfs filesystem of SPEC §2, built on go-fuse v2:
//
//	/oauth/
//	├── integrations.json        the index
//	├── by-name/<name> -> ../<guid>
//	└── <guid>/
//	    ├── access_token         refresh-on-read, direct I/O
//	    ├── expiry
//	    └── meta.json
//
// It reaches the broker only through the [Broker] interface, so the same
// tree serves an embedded broker or a remote one; it never imports
// golang.org/x/oauth2. Node methods return only syscall.Errno, and
// [errno] is the one place that maps broker errors to them.
package fs
