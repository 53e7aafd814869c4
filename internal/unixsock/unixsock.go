// Package unixsock is the session API's Unix socket: listening with the
// socket's and its directory's modes, the checks a client makes before it
// trusts a socket, the peer's credentials (SO_PEERCRED) that tell callers
// apart, and caps on the connections each uid may hold.
//
// It must never import anything of oauthfs.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// ErrSocketInUse is wrapped when the socket path is taken.
var ErrSocketInUse = errors.New("socket path in use")

// ErrUntrusted is wrapped when the socket or the process answering on it
// is not the caller's or root's: another user may have put it there to
// hand out tokens (or sign-in links) of their choosing.
var ErrUntrusted = errors.New("untrusted broker socket")

type peerKey struct{}

// peerCred is what SO_PEERCRED said of a connection's peer.
type peerCred struct{ uid, pid int }

// Peer returns the uid of the connection's peer, as recorded by
// ConnContext.
func Peer(ctx context.Context) (int, bool) {
	p, ok := ctx.Value(peerKey{}).(peerCred)
	return p.uid, ok
}

// PeerPID returns the pid of the connection's peer when it connected, or
// 0.
func PeerPID(ctx context.Context) int {
	p, _ := ctx.Value(peerKey{}).(peerCred)
	return p.pid
}

// ConnContext records the peer's uid and pid, which a listener made by
// CapConns with perUser read with SO_PEERCRED: an http.Server's
// ConnContext. A connection whose credentials could not be read gets no
// uid, and a server must refuse its requests.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*capConn); ok && pc.uid >= 0 {
		return context.WithValue(ctx, peerKey{}, peerCred{pc.uid, pc.pid})
	}
	return ctx
}

// WithPeer returns ctx as ConnContext makes it for a peer with uid and
// pid: for a handler's tests.
func WithPeer(ctx context.Context, uid, pid int) context.Context {
	return context.WithValue(ctx, peerKey{}, peerCred{uid, pid})
}

// PeerUID returns the uid of the process at the other end of a Unix
// socket connection, from SO_PEERCRED.
func PeerUID(c net.Conn) (int, error) {
	uid, _, err := peerUIDPID(c)
	return uid, err
}

// peerUIDPID returns the uid and pid of the process at the other end of
// a Unix socket connection, from SO_PEERCRED.
func peerUIDPID(c net.Conn) (int, int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1, 0, errors.New("not a Unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, 0, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return -1, 0, err
	}
	if cerr != nil {
		return -1, 0, cerr
	}
	return int(cred.Uid), int(cred.Pid), nil
}

// capListener caps the connections it hands out: per peer uid on a Unix
// socket, in all (uid -1) elsewhere. A connection over the cap is closed
// at once, so one user's flood cannot take the file descriptors that
// other users' reads need.
type capListener struct {
	net.Listener
	max  int
	byID bool // count per peer uid
	log  *slog.Logger

	mu     sync.Mutex
	held   map[int]int
	warned map[int]time.Time
}

type capConn struct {
	net.Conn
	uid  int
	pid  int
	l    *capListener
	once sync.Once
}

func (c *capConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.held[c.uid]--; c.l.held[c.uid] <= 0 {
			delete(c.l.held, c.uid)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, pid := -1, 0
		if l.byID {
			if uid, pid, err = peerUIDPID(c); err != nil {
				uid = -2 // no credentials: refused by the handler
			}
		}
		l.mu.Lock()
		if l.held[uid] >= l.max {
			if time.Since(l.warned[uid]) > time.Minute {
				l.warned[uid] = time.Now()
				l.log.Warn("connection refused: too many open connections", "uid", uid, "max", l.max)
			}
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.held[uid]++
		l.mu.Unlock()
		return &capConn{Conn: c, uid: uid, pid: pid, l: l}, nil
	}
}

// CapConns wraps l so that each peer uid (perUser) or everyone together
// holds at most max connections.
func CapConns(l net.Listener, max int, perUser bool, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &capListener{Listener: l, max: max, byID: perUser, log: log, held: map[int]int{}, warned: map[int]time.Time{}}
}

// Listen creates the Unix socket at path with mode, and its directory
// with dirMode when it does not exist. An existing directory must belong
// to this user or root and not be writable by others, so nobody else can
// swap the socket. A socket left by a dead process is replaced; one that a
// live process still answers on is refused.
func Listen(path string, mode, dirMode os.FileMode) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("unixsock: socket directory: %w", err)
	}
	if err := CheckSocketDir(dir); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("unixsock: %s exists and is not a socket: %w", path, ErrSocketInUse)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("unixsock: a broker is already listening on %s: %w", path, ErrSocketInUse)
		}
		os.Remove(path) // left by a dead process
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("unixsock: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("unixsock: chmod %s: %w", path, err)
	}
	return l, nil
}

// CheckSocketDir refuses a socket directory that belongs to someone other
// than this user or root, or that others may write to: whoever can write
// there can put their own socket in place of the broker's.
func CheckSocketDir(dir string) error {
	if err := ownedLink(dir); err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("unixsock: socket directory: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	me := os.Geteuid()
	switch {
	case int(sys.Uid) != me && sys.Uid != 0:
		return fmt.Errorf("unixsock: socket directory %s belongs to uid %d, not to you (uid %d) or root, so its socket cannot be trusted: %w", dir, sys.Uid, me, ErrUntrusted)
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("unixsock: socket directory %s is writable by others (mode %04o), so its socket cannot be trusted: %w", dir, st.Mode().Perm(), ErrUntrusted)
	}
	return nil
}

// ownedLink refuses path when it is a symbolic link that someone other
// than this user or root made: it could lead anywhere.
func ownedLink(path string) error {
	lst, err := os.Lstat(path)
	if err != nil || lst.Mode()&os.ModeSymlink == 0 {
		return nil
	}
	if sys, ok := lst.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && sys.Uid != 0 {
		return fmt.Errorf("unixsock: %s is a symbolic link made by uid %d, not by you or root, so it cannot be trusted: %w", path, sys.Uid, ErrUntrusted)
	}
	return nil
}
