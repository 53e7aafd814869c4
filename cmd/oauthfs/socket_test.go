package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/oauthfs/oauthfs/config"
)

// TestResolveSocketSkipsDeadOnes: a socket left by a dead broker (a
// killed oauthfs dev, say) does not hide a live one later in the search.
func TestResolveSocketSkipsDeadOnes(t *testing.T) {
	if answers(config.SystemSocket) {
		t.Skip("a system broker answers on " + config.SystemSocket)
	}
	xdg, tmp := t.TempDir(), t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	t.Setenv("TMPDIR", tmp)
	t.Setenv("OAUTHFS_BROKER", "")
	listen := func(path string) *net.UnixListener {
		os.MkdirAll(filepath.Dir(path), 0o700)
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	dead := listen(filepath.Join(xdg, "oauthfs", "broker.sock"))
	dead.SetUnlinkOnClose(false)
	dead.Close()
	live := listen(filepath.Join(config.TempRuntimeDir(), "broker.sock"))
	defer live.Close()

	got, err := resolveSocket("", "")
	if err != nil || got != live.Addr().String() {
		t.Errorf("resolveSocket = %q, %v; want the live %s", got, err, live.Addr())
	}
	live.Close()
	// With nothing alive, the first socket found is named in the error.
	if got, _ := resolveSocket("", ""); got != dead.Addr().String() {
		t.Errorf("resolveSocket with nothing alive = %q; want %s", got, dead.Addr())
	}
}
