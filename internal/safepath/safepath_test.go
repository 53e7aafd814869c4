package safepath

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCheckDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make directories of another owner")
	}
	top := t.TempDir()
	mk := func(rel string, mode os.FileMode, uid int) string {
		p := filepath.Join(top, rel)
		os.MkdirAll(p, 0o700)
		os.Chmod(p, mode)
		os.Chown(p, uid, uid)
		return p
	}
	for _, tc := range []struct {
		name string
		dir  string
		ok   bool
	}{
		{"private", mk("a/state", 0o700, 0), true},
		{"under a sticky world-writable directory", mk("sticky/state", 0o700, 0), true},
		{"under a world-writable directory", mk("open/state", 0o700, 0), false},
		{"under a group-writable directory", mk("group/state", 0o700, 0), false},
		{"under another user's directory", mk("theirs/state", 0o700, 0), false},
		{"itself world-writable", mk("self", 0o777, 0), false},
	} {
		// The parents' modes, set after their children were made.
		os.Chmod(filepath.Join(top, "sticky"), os.ModeSticky|0o777)
		os.Chmod(filepath.Join(top, "open"), 0o777)
		os.Chmod(filepath.Join(top, "group"), 0o770)
		os.Chown(filepath.Join(top, "theirs"), 12345, 12345)
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDirs("state_dir", tc.dir)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrUnsafe) {
				t.Errorf("CheckDirs(%s) = %v; want ok=%v", tc.dir, err, tc.ok)
			}
		})
	}
}

func TestCheckFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files of another owner")
	}
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) *os.File {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("x"), mode)
		os.Chmod(p, mode)
		os.Chown(p, uid, uid)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600)
	fifo, _ := os.OpenFile(filepath.Join(dir, "fifo"), os.O_RDWR, 0)
	defer fifo.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
		ok   bool
	}{
		{"mine, private", mk("key", 0o600, 0), true},
		{"readable by others", mk("open", 0o644, 0), false},
		{"another user's", mk("theirs", 0o600, 12345), false},
		{"not a regular file", fifo, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckFile("key_file", tc.f, 0o077)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrUnsafe) {
				t.Errorf("CheckFile(%s) = %v; want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}
