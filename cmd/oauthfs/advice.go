package main

import (
	"errors"

	"github.com/oauthfs/oauthfs/api"
	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/internal/unixsock"
	"github.com/oauthfs/oauthfs/store"
)

// explainToken is explain for the error of the token q asks for: a
// token variant that is not found is not an integration that is not.
func explainToken(err error, id string, q api.TokenQuery) error {
	if q.Variant != "" && errors.Is(err, credential.ErrNotFound) {
		return withHint(err, "run 'oauthfs list --json' to see the integrations and their token variants (tokens)")
	}
	return explain(err, id)
}

// explain adds the advice a user needs to an error about the integration
// id (or "" when none is concerned). The packages below cmd state facts;
// this is the one place that says what to do about them.
func explain(err error, id string) error {
	var he *hintError
	if err == nil || errors.As(err, &he) {
		return err
	}
	name := id
	if name == "" {
		name = "NAME"
	}
	switch {
	case errors.Is(err, unixsock.ErrUntrusted):
		return withHint(err, "use a broker socket of your own: unset OAUTHFS_BROKER or pass --broker; if XDG_RUNTIME_DIR is unset (cron, su, sudo), set it to a directory that is yours")
	case errors.Is(err, client.ErrNoBroker):
		return withHint(err, "is 'oauthfs mount' running? pass --broker SOCKET or set OAUTHFS_BROKER if it listens elsewhere")
	case errors.Is(err, unixsock.ErrSocketInUse):
		return withHint(err, "stop the other broker, remove what is at that path, or set [broker] socket to another path")
	case errors.Is(err, credential.ErrNotFound):
		return withHint(err, "run 'oauthfs list' to see the configured integrations")
	case errors.Is(err, credential.ErrNotSignedIn), errors.Is(err, credential.ErrExpired):
		return withHint(err, "sign in with 'oauthfs login %s'", name)
	case errors.Is(err, credential.ErrSignIn) && id != "":
		return withHint(err, "run 'oauthfs login %s' to try again", id)
	case errors.Is(err, store.ErrNotPrivate):
		return withHint(err, "make it yours (or root's) and not writable by group or others (chown, chmod go-w; the key file chmod 600), or choose another state_dir")
	case errors.Is(err, store.ErrKeyMissing):
		return withHint(err, "restore the key file, or move the store files away to start afresh")
	case errors.Is(err, store.ErrUnusable):
		return withHint(err, "restore the file (or the key_file it was sealed with), or move it away to sign in afresh")
	case errors.Is(err, secmem.ErrExhausted):
		return withHint(err, "more secrets are in use at once than RLIMIT_MEMLOCK allows: try again, raise LimitMEMLOCK= in the unit, or give the broker CAP_IPC_LOCK")
	case errors.Is(err, fusefs.ErrNoFUSE):
		return withHint(err, "install the fuse3 package (fusermount3); /dev/fuse must be open to users (mode 0666 on Debian): ask your administrator")
	}
	return err
}
