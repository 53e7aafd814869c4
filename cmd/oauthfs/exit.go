package main

import (
	"errors"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/host"
)

// Exit codes, the same for every command. They follow the errno table of
// docs/design.md so scripts can branch on them.
const (
	exitOK          = 0
	exitError       = 1 // anything not listed below
	exitUsage       = 2 // the command line could not be understood
	exitNotFound    = 3 // no such integration (ENOENT)
	exitNotSignedIn = 4 // not signed in (ENOKEY)
	exitExpired     = 5 // sign-in expired: sign in again (EKEYEXPIRED)
	exitUnavailable = 6 // provider or broker unavailable (EIO)
	exitPermission  = 7 // permission denied (EACCES)
	exitConfig      = 8 // the configuration is invalid
	exitMount       = 9 // the mount point cannot be used
)

const exitCodeHelp = `  0 success          3 no such integration    6 provider or broker unavailable
  1 other error      4 not signed in          7 permission denied
  2 usage error      5 sign-in expired        8 invalid configuration
                                              9 unusable mount point
`

func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, credential.ErrNotFound):
		return exitNotFound
	case errors.Is(err, credential.ErrNotSignedIn):
		return exitNotSignedIn
	case errors.Is(err, credential.ErrExpired):
		return exitExpired
	case errors.Is(err, credential.ErrPermission):
		return exitPermission
	case errors.Is(err, credential.ErrUnavailable):
		return exitUnavailable
	case errors.Is(err, config.ErrInvalid), errors.Is(err, host.ErrMetadata):
		return exitConfig
	case errors.Is(err, fusefs.ErrMountpoint):
		return exitMount
	default:
		return exitError
	}
}
