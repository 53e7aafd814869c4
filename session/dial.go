package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/oauthfs/oauthfs/credential"
)

// ErrUntrusted is wrapped when the socket or the process answering on it
// is not the caller's or root's: another user may have put it there to
// hand out tokens (or sign-in links) of their choosing.
var ErrUntrusted = errors.New("untrusted broker socket")

// dial connects to the broker at socket, after checking that only the
// caller or root can have put the socket there, and then that the process
// answering runs as the caller or as root (SO_PEERCRED).
func dial(ctx context.Context, socket string) (net.Conn, error) {
	if err := CheckSocketDir(filepath.Dir(socket)); err != nil {
		return nil, fmt.Errorf("session: refusing %s: %w: %w", socket, err, credential.ErrUnavailable)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	uid, err := peerUID(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("session: refusing %s: the credentials of the process answering there cannot be read (%v): %w: %w", socket, err, ErrUntrusted, credential.ErrUnavailable)
	}
	if me := os.Geteuid(); uid != me && uid != 0 {
		c.Close()
		return nil, fmt.Errorf("session: refusing %s: the process answering there runs as uid %d, not as you (uid %d) or root: %w: %w", socket, uid, me, ErrUntrusted, credential.ErrUnavailable)
	}
	return c, nil
}
