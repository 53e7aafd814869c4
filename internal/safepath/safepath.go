// Package safepath checks that a path cannot be swapped by another user:
// every directory on the way to it belongs to this user or root and is
// writable by nobody else (unless sticky, as /tmp is), and a file opened
// there is checked on the open descriptor itself, not by path.
package safepath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafe is wrapped by every error about a path another user could
// change.
var ErrUnsafe = errors.New("another user could change it")

// CheckDirs checks dir and each directory above it: each must belong to
// this user or root, and none may be writable by group or others unless
// it has the sticky bit (then only the owner of a name may replace it).
// what names the path in the error (a configuration key, say).
func CheckDirs(what, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	me := os.Geteuid()
	for d := abs; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, d, err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		switch {
		case int(sys.Uid) != me && sys.Uid != 0:
			return fmt.Errorf("%s: the directory %s belongs to uid %d, not to you (uid %d) or root, who could move what is in it: %w",
				what, d, sys.Uid, me, ErrUnsafe)
		case st.Mode().Perm()&0o022 != 0 && st.Mode()&os.ModeSticky == 0:
			return fmt.Errorf("%s: the directory %s has mode %04o: group or others can replace what is in it; make it writable by its owner only (chmod go-w %s): %w",
				what, d, st.Mode().Perm(), d, ErrUnsafe)
		}
		if d == "/" || d == filepath.Dir(d) {
			return nil
		}
	}
}

// CheckFile checks an open file, by its descriptor: it must be a regular
// file that belongs to this user or root and has none of the permission
// bits in forbidden. Checking the descriptor, not the path, leaves no
// moment in which the file could be swapped between the check and the
// use.
func CheckFile(what string, f *os.File, forbidden os.FileMode) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, f.Name(), err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file: %w", what, f.Name(), ErrUnsafe)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && sys.Uid != 0 {
		return fmt.Errorf("%s %s belongs to uid %d, not to you (uid %d) or root: another user could have planted it: %w",
			what, f.Name(), sys.Uid, os.Geteuid(), ErrUnsafe)
	}
	if p := st.Mode().Perm(); p&forbidden != 0 {
		return fmt.Errorf("%s %s has mode %04o, open to group or others (it must not have %04o): %w",
			what, f.Name(), p, p&forbidden, ErrUnsafe)
	}
	return nil
}
