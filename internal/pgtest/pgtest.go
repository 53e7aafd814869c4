// Package pgtest runs real, throwaway PostgreSQL servers for tests: each
// cluster is made by initdb in a new temporary directory and served by
// postgres on 127.0.0.1 at a free port, with no Unix socket, fsync off and
// trust authentication for the superuser role oauthfs. Close stops the
// server and removes the directory.
//
// Shared gives a test a new empty database in one cluster that the whole
// test binary shares, which Main closes when the tests are done; Own gives
// a test a cluster of its own, for tests that stop and start the server.
// Where PostgreSQL is not installed the tests are skipped, unless
// OAUTHFS_REQUIRE_E2E=1 is set (as .ci/run does), which turns the skip
// into a failure.
//
// PostgreSQL refuses to run as root, so under root initdb and postgres
// run as the postgres user that Debian's package creates, and the
// temporary directory belongs to that user, who must be able to reach it
// through TMPDIR (/tmp and make test's TMPDIR are 1777; t.TempDir's are
// not). The clients (psql) run as the current user.
//
// postgres runs in the foreground as a child of the test binary, not
// daemonized by pg_ctl, with a parent-death signal of SIGQUIT (immediate
// shutdown): when the test binary is killed, the server goes too, and
// only its temporary directory is left behind. Because Linux sends that
// signal when the thread that started the child ends, the child is
// started and waited for on a goroutine locked to its thread.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// User is the superuser role of every cluster; it needs no password.
const User = "oauthfs"

// Timeout bounds each step of a cluster's life: initdb, the server's
// startup and its shutdown, and each psql command.
const Timeout = 30 * time.Second

// Available returns nil when PostgreSQL's server binaries are installed
// (and, under root, the postgres user to run them as exists), or an
// error that says what is missing.
func Available() error {
	_, err := binDir()
	if err == nil && os.Geteuid() == 0 {
		_, err = serverUser()
	}
	return err
}

// binDir returns the directory of the newest /usr/lib/postgresql/*/bin
// (Debian's layout) holding initdb, postgres and psql, or else the one
// holding postgres on the PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	if p, err := exec.LookPath("postgres"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, dir := range dirs {
		ok := true
		for _, name := range []string{"initdb", "postgres", "psql"} {
			if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode()&0o111 == 0 {
				ok = false
			}
		}
		if ok {
			return dir, nil
		}
	}
	return "", errors.New("pgtest: no PostgreSQL binaries (initdb, postgres, psql) in /usr/lib/postgresql/*/bin or on the PATH (install postgresql)")
}

// serverUser returns the credentials to run initdb and postgres with:
// nil as a normal user, the postgres user's as root.
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to: no postgres user to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgtest: postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// A Cluster is one PostgreSQL server and its data directory. Its methods
// are safe for concurrent use.
type Cluster struct {
	bin  string
	dir  string // the temporary directory: data/ and server.log
	cred *syscall.Credential
	port int

	mu     sync.Mutex
	server *process // nil while stopped
	closed bool
}

// NewCluster makes a new cluster in a new temporary directory and starts
// its server on a free port. Close it when done.
func NewCluster() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "oauthfs-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{bin: bin, dir: dir, cred: cred}
	if err := c.init(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The free port may be taken before postgres binds it (by another
	// test binary's cluster): try another.
	for try := 0; ; try++ {
		if c.port, err = freePort(); err == nil {
			err = c.Start()
		}
		if err == nil || try == 4 || !strings.Contains(err.Error(), "could not bind") {
			break
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// init runs initdb in c.dir/data.
func (c *Cluster) init() error {
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if err := searchable(filepath.Dir(c.dir), c.cred); err != nil {
			return err
		}
	}
	var out strings.Builder
	cmd := c.serverCommand("initdb", "-D", c.dataDir(), "-U", User, "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := start(cmd)
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w", err)
	}
	select {
	case <-p.exited:
	case <-time.After(Timeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("pgtest: initdb did not finish in %v: %s", Timeout, out.String())
	}
	if p.err != nil {
		return fmt.Errorf("pgtest: initdb: %w: %s", p.err, out.String())
	}
	return nil
}

// Start starts the stopped server again, on the same port, and returns
// once it accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: start: cluster closed")
	}
	if c.server != nil {
		return errors.New("pgtest: start: already running")
	}
	log, err := os.OpenFile(c.logFile(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer log.Close() // postgres has its own copy
	cmd := c.serverCommand("postgres", "-D", c.dataDir(), "-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		// Dynamic shared memory in the data directory, not /dev/shm, so
		// that nothing outlives the directory.
		"-c", "dynamic_shared_memory_type=mmap",
		"-c", "huge_pages=off")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	p, err := start(cmd)
	if err != nil {
		return fmt.Errorf("pgtest: postgres: %w", err)
	}
	if err := c.waitReady(p); err != nil {
		p.stop(syscall.SIGQUIT)
		return err
	}
	c.server = p
	return nil
}

// waitReady returns once the server p says in its postmaster.pid that it
// accepts connections, as pg_ctl -w waits, or an error with the end of
// its log if it exits or is not ready within Timeout.
func (c *Cluster) waitReady(p *process) error {
	deadline := time.Now().Add(Timeout)
	for {
		b, _ := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
		lines := strings.Split(string(b), "\n")
		// Line 1 is the pid, 8 the status.
		if len(lines) >= 8 && lines[0] == strconv.Itoa(p.cmd.Process.Pid) && strings.TrimSpace(lines[7]) == "ready" {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("pgtest: postgres exited (%v) at startup; its log ends:\n%s", p.err, c.logTail())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres not ready in %v; its log ends:\n%s", Timeout, c.logTail())
		}
	}
}

// Stop stops the server, keeping its data for Start; connections fail
// until then. Stopping a stopped cluster does nothing.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server == nil {
		return nil
	}
	err := c.server.stop(syscall.SIGINT)
	c.server = nil
	if err != nil {
		return fmt.Errorf("pgtest: stop: %w; the log ends:\n%s", err, c.logTail())
	}
	return nil
}

// Close stops the server and removes its directory. Closing twice does
// nothing.
func (c *Cluster) Close() error {
	err := c.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return err
	}
	c.closed = true
	if rerr := os.RemoveAll(c.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("pgtest: %w", rerr))
	}
	return err
}

// Port returns the server's TCP port on 127.0.0.1, which Start keeps.
func (c *Cluster) Port() int { return c.port }

// DSN returns the URL of database db for the oauthfs role, without TLS.
func (c *Cluster) DSN(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(User),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDB creates the empty database name.
func (c *Cluster) CreateDB(name string) error {
	_, err := c.Psql("postgres", "CREATE DATABASE "+quoteIdent(name))
	return err
}

// Psql runs the SQL commands sql in database db with psql and returns
// what they print, unaligned and without headers (rows on lines, columns
// separated by |), with the final newline trimmed.
func (c *Cluster) Psql(db, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "psql"), "-X", "-q", "-A", "-t",
		"-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", strconv.Itoa(c.port),
		"-U", User, "-d", db, "-c", sql)
	cmd.Env = env(c.bin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("pgtest: psql %q: %w: %s", sql, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSuffix(string(out), "\n"), nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) logFile() string { return filepath.Join(c.dir, "server.log") }

// logTail returns the last few kilobytes of the server's log.
func (c *Cluster) logTail() string {
	f, err := os.Open(c.logFile())
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 4096 {
		f.Seek(-4096, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// serverCommand returns the command to run the server binary name as the
// server's user, in c.dir, with a clean environment.
func (c *Cluster) serverCommand(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = env(c.bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

// env is the environment of PostgreSQL's commands: no PG* variables of
// the caller's, a fixed locale and time zone (TZ also spares initdb a
// scan of the zone database).
func env(bin string) []string {
	return []string{"PATH=" + bin + ":/usr/bin:/bin", "LC_ALL=C", "TZ=UTC", "HOME=/nonexistent"}
}

// searchable returns an error when the user of cred may not search dir
// and each directory above it, as postgres must to reach its data.
func searchable(dir string, cred *syscall.Credential) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		mode, sys := st.Mode().Perm(), st.Sys().(*syscall.Stat_t)
		ok := mode&0o001 != 0 ||
			sys.Gid == cred.Gid && mode&0o010 != 0 ||
			sys.Uid == cred.Uid && mode&0o100 != 0
		if !ok {
			return fmt.Errorf("pgtest: the postgres user (uid %d) may not search %s (mode %#o), above the cluster's directory: give TMPDIR a searchable one, such as mode 1777", cred.Uid, d, mode)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// quoteIdent quotes name as an SQL identifier.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// A process is a child started by start; err is its exit status, set
// before exited is closed.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// start starts cmd, and waits for it, on a goroutine locked to its
// thread, so that a parent-death signal in cmd.SysProcAttr comes only
// when the test binary ends, not when the Go runtime ends the thread.
func start(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, exited: make(chan struct{})}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// stop sends the server p sig, SIGINT for a fast shutdown (connections
// are ended, data is written) or SIGQUIT for an immediate one, and waits
// for it to exit, killing it after Timeout.
func (p *process) stop(sig syscall.Signal) error {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(Timeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("postgres did not shut down in %v; killed it", Timeout)
	}
}
