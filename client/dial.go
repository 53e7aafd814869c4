package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/unixsock"
)

// dial connects to the broker at socket, after checking that only the
// caller or root can have put the socket there, and then that the process
// answering runs as the caller or as root (SO_PEERCRED).
func dial(ctx context.Context, socket string) (net.Conn, error) {
	if err := unixsock.CheckSocketDir(filepath.Dir(socket)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, noBroker(socket) // no broker ever made the directory
		}
		return nil, fmt.Errorf("client: refusing %s: %w: %w", socket, err, credential.ErrUnavailable)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	uid, err := unixsock.PeerUID(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("client: refusing %s: the credentials of the process answering there cannot be read (%v): %w: %w", socket, err, unixsock.ErrUntrusted, credential.ErrUnavailable)
	}
	if me := os.Geteuid(); uid != me && uid != 0 {
		c.Close()
		return nil, fmt.Errorf("client: refusing %s: the process answering there runs as uid %d, not as you (uid %d) or root: %w: %w", socket, uid, me, unixsock.ErrUntrusted, credential.ErrUnavailable)
	}
	return c, nil
}
