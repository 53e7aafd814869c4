// Package fusetest mounts oauthfs filesystems for tests: in a temporary
// directory, through the real fs.Mount, unmounted when the test ends.
//
// Where FUSE is not available the tests are skipped, unless
// OAUTHFS_REQUIRE_FUSE=1 is set (as .ci/run does), which turns the skip
// into a failure so that CI proves the real thing.
package fusetest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/fusefs"
)

// Require skips the test, or fails it under OAUTHFS_REQUIRE_FUSE=1, when
// this machine cannot mount FUSE filesystems.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	} else if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			why = "not root and no fusermount3 (install fuse3)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("OAUTHFS_REQUIRE_FUSE") == "1" {
		t.Fatalf("FUSE is required (OAUTHFS_REQUIRE_FUSE=1) but unavailable: %s", why)
	}
	t.Skipf("FUSE unavailable: %s", why)
}

// Mount mounts root on a new temporary directory owned by the current
// user and returns the directory. It is unmounted when the test ends,
// even on failure.
func Mount(t testing.TB, root fs.InodeEmbedder) string {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	server, err := fusefs.Mount(dir, root, uint32(os.Getuid()), uint32(os.Getgid()))
	if err != nil {
		t.Fatalf("Mount(%s) = %v", dir, err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("Unmount(%s) = %v; detaching", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// Watched is a filesystem source that tells when the filesystem started
// watching it for changes: until then the kernel keeps nothing, so a test
// of what it keeps, or a benchmark, waits for it.
type Watched struct {
	fusefs.Source
	ready chan struct{}
	once  sync.Once
}

// NewWatched wraps src.
func NewWatched(src fusefs.Source) *Watched {
	return &Watched{Source: src, ready: make(chan struct{})}
}

// Watch passes every change on to f, and marks the source watched after
// the first.
func (w *Watched) Watch(ctx context.Context, f func(credential.Change)) {
	w.Source.Watch(ctx, func(c credential.Change) {
		f(c)
		w.once.Do(func() { close(w.ready) })
	})
}

// Wait returns once the filesystem watches the source, and fails the
// test after 10 s.
func (w *Watched) Wait(t testing.TB) {
	t.Helper()
	select {
	case <-w.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the filesystem does not watch its source")
	}
}
