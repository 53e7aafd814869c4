package fusefs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// ErrMountpoint is wrapped by every error about an unusable mount point.
var ErrMountpoint = errors.New("unusable mount point")

// ErrNoFUSE is wrapped when a normal user cannot
// mount: fusermount3 is missing or /dev/fuse is not open to them.
var ErrNoFUSE = errors.New("FUSE unavailable to this user")

// Mount mounts root at dir and returns the running server; the caller
// unmounts it with server.Unmount. A stale mount left at dir by a killed
// process is cleared first; a live one is refused. A root made by NewRoot
// starts watching its source for changes once the server is up.
func Mount(dir string, root fs.InodeEmbedder, uid, gid uint32) (*fuse.Server, error) {
	if err := PrepareMountpoint(dir); err != nil {
		return nil, err
	}
	// Every node says how long the kernel may keep its name and
	// attributes (a zero here keeps go-fuse from putting its default
	// in place of a node's zero); a name that is not there is not kept,
	// so a newly configured integration shows up at once.
	zero := time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		UID:             uid,
		GID:             gid,
		MountOptions: fuse.MountOptions{
			FsName: "oauthfs",
			Name:   "oauthfs",
			// Read-only, and nothing on it is a program or a device.
			// default_permissions: the kernel checks each node's mode
			// and owner itself, refreshing attributes it does not
			// keep first; so an open of a token file that cannot be
			// had (an unavailableNode, whose attributes are never
			// kept) asks the filesystem and fails with the errno,
			// while a write-open fails with EROFS before that.
			Options: []string{"ro", "nosuid", "nodev", "noexec", "default_permissions"},
			// root mounts with mount(2); others need fusermount3.
			DirectMountStrict: os.Geteuid() == 0,
			DisableXAttrs:     true,
			// The filesystem says when cached pages go (a file's
			// version never changes); the kernel need not guess from
			// attributes.
			ExplicitDataCacheControl: true,
			// A by-name link's target never changes for its inode (the
			// inode number includes the guid), so the kernel may keep it.
			EnableSymlinkCaching: true,
		},
	}
	server, err := fs.Mount(dir, root, opts)
	if err != nil {
		if os.Geteuid() != 0 {
			if _, lerr := exec.LookPath("fusermount3"); lerr != nil {
				return nil, fmt.Errorf("fusefs: mount %s: %w (fusermount3 is missing): %w", dir, err, ErrNoFUSE)
			}
			if f, oerr := os.OpenFile("/dev/fuse", os.O_RDWR, 0); oerr != nil {
				return nil, fmt.Errorf("fusefs: mount %s: %w (%v): %w", dir, err, oerr, ErrNoFUSE)
			} else {
				f.Close()
			}
		}
		return nil, fmt.Errorf("fusefs: mount %s: %w", dir, err)
	}
	if r, ok := root.(*rootDir); ok {
		go r.watch()
	}
	return server, nil
}

// MountSystem mounts a system mount's root (NewSystemRoot) at dir for
// every user of the host (allow_other), as root only; the caller unmounts
// it with server.Unmount. dir is made when it is missing; it must be an
// empty directory that is not already a mount, except for a stale mount
// left by a killed process, which is cleared first.
func MountSystem(dir string, root fs.InodeEmbedder) (*fuse.Server, error) {
	if err := PrepareSystemMountpoint(dir); err != nil {
		return nil, err
	}
	zero := time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName: "oauthfs",
			Name:   "oauthfs",
			// Every user's processes use it (allow_other); the kernel
			// checks each node's owner and mode (default_permissions),
			// so a user's view is theirs alone.
			AllowOther:        true,
			Options:           []string{"ro", "nosuid", "nodev", "noexec", "default_permissions"},
			DirectMountStrict: true,
			DisableXAttrs:     true,
			// As for a single user's mount (see Mount).
			ExplicitDataCacheControl: true,
			// No symlink caching: the top-level links' targets are the
			// caller's own.
			EnableSymlinkCaching: false,
		},
	}
	server, err := fs.Mount(dir, root, opts)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount %s: %w", dir, err)
	}
	if r, ok := root.(*systemRoot); ok {
		go r.s.run()
	}
	return server, nil
}

// PrepareSystemMountpoint checks that the system mount can be made at dir
// (see MountSystem), making dir when it is missing.
func PrepareSystemMountpoint(dir string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("fusefs: the system mount at %s needs root (it serves every user): %w", dir, ErrMountpoint)
	}
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("fusefs: make the mount point: %w: %w", err, ErrMountpoint)
		}
	}
	if err := PrepareMountpoint(dir); err != nil {
		return err
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
		if err == nil {
			err = fmt.Errorf("it holds %d entries, such as %q", len(ents), ents[0].Name())
		}
		return fmt.Errorf("fusefs: mount point %s is not an empty directory (%v); oauthfs mounts only over an empty one: %w", dir, err, ErrMountpoint)
	}
	return nil
}

// PrepareMountpoint checks that dir can be mounted on: it must be an
// existing directory that is not already a mount of a live filesystem. A
// dead FUSE mount there (left by a killed process) is unmounted.
//
// Whether a FUSE mount is dead is asked with statfs(2), which always
// reaches the filesystem's server: a stat may be answered from the
// kernel's attribute cache for a while after the server died, which made
// an immediate restart (systemd's Restart=) see a live mount.
func PrepareMountpoint(dir string) error {
	if fstype, ok := mountedAt(dir); ok {
		if !strings.HasPrefix(fstype, "fuse") || !dead(dir) {
			return fmt.Errorf("fusefs: %s is already mounted (%s); unmount it first (umount %s): %w", dir, fstype, dir, ErrMountpoint)
		}
		if err := unmountStale(dir); err != nil {
			return fmt.Errorf("fusefs: %s holds a stale mount that could not be cleared: %w: %w", dir, err, ErrMountpoint)
		}
	}
	st, err := os.Stat(dir)
	if errors.Is(err, syscall.ENOTCONN) {
		// Dead, but not in our mount table (another mount namespace's
		// view, or a race with its unmount).
		if err := unmountStale(dir); err != nil {
			return fmt.Errorf("fusefs: %s holds a stale mount that could not be cleared: %w: %w", dir, err, ErrMountpoint)
		}
		st, err = os.Stat(dir)
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("fusefs: mount point %s does not exist (create it with mkdir -p %s): %w", dir, dir, ErrMountpoint)
	case err != nil:
		return fmt.Errorf("fusefs: mount point %s: %w: %w", dir, err, ErrMountpoint)
	case !st.IsDir():
		return fmt.Errorf("fusefs: mount point %s is not a directory: %w", dir, ErrMountpoint)
	}
	if fstype, ok := mountedAt(dir); ok {
		return fmt.Errorf("fusefs: %s is already mounted (%s); unmount it first (umount %s): %w", dir, fstype, dir, ErrMountpoint)
	}
	return nil
}

// dead reports whether the FUSE server of the mount at dir is gone.
func dead(dir string) bool {
	var st syscall.Statfs_t
	err := syscall.Statfs(dir, &st)
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

func unmountStale(dir string) error { return detach(dir) }

// detach unmounts dir lazily: the mount point is usable again at once,
// and files still open on the old mount keep working until they are
// closed. root uses umount2(MNT_DETACH); others need fusermount3.
func detach(dir string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Unmount unmounts the filesystem server serves at dir cleanly, waiting
// up to five seconds for done (closed when the server has stopped), or,
// when files are still open, detaches it so that the process can exit and
// the mount point is usable again.
func Unmount(server *fuse.Server, dir string, done <-chan struct{}) error {
	if err := server.Unmount(); err != nil {
		if derr := detach(dir); derr != nil {
			return fmt.Errorf("fusefs: unmount %s: %w; detach: %w", dir, err, derr)
		}
		return nil
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	return nil
}

// mountedAt reports whether dir is itself a mount point, and of what type.
func mountedAt(dir string) (string, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescape(fields[4]) != abs {
			continue
		}
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) {
				return fields[i+1], true
			}
		}
		return "unknown", true
	}
	return "", false
}

// unescape undoes the octal escapes (\040 for space) of /proc mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
