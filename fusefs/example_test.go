package fusefs_test

import (
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/host"
)

// ExampleMount serves a user's own mount from a running broker, as
// 'oauthfs mount --broker' does: every read of access_token asks the
// broker (refresh-on-read), and the kernel keeps a token until its
// refresh time. It needs /dev/fuse, and fusermount3 for a user other
// than root, so it is compiled but not run; the tests mount for real.
func ExampleMount() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	c := client.NewClient("/run/oauthfs/broker.sock", 12*time.Second)
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	root := fusefs.NewRoot(fusefs.Options{
		Source:  client.NewCached(c, logger), // answers Peek from what the broker sent last
		UID:     uid,
		GID:     gid,
		Timeout: 14 * time.Second, // a little over the broker's request_timeout
		Logger:  logger,
	})
	dir := os.ExpandEnv("$HOME/oauth")
	server, err := fusefs.Mount(dir, root, uid, gid)
	if err != nil {
		log.Fatal(err)
	}
	server.Wait() // until umount or fusermount3 -u
}

// ExampleNewSystemRoot serves the system mount, as 'oauthfs broker' does
// with [broker] mount = "/oauth": one filesystem for every user, where
// each caller's paths lead to a view of its own credentials, served by
// the broker of the same process. It runs as root only, so it is
// compiled but not run.
func ExampleNewSystemRoot() {
	cfg, err := config.Load("/etc/oauthfs/config.toml")
	if err != nil {
		log.Fatal(err)
	}
	h, err := host.Start(cfg, host.Options{Owner: -1, Socket: cfg.Settings.Socket, SocketMode: 0o666, DirMode: 0o755})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Stop()
	root := fusefs.NewSystemRoot(fusefs.SystemOptions{
		// The caller's view: the broker's source for its uid, and the
		// group its files belong to (here the uid's own number).
		View: func(uid uint32) (fusefs.Source, uint32, error) {
			return h.Source(int(uid)), uid, nil
		},
		Watch:   h.Source(0).Watch, // reloads reach every user
		Timeout: cfg.Settings.RequestTimeout + 2*time.Second,
	})
	server, err := fusefs.MountSystem("/oauth", root)
	if err != nil {
		log.Fatal(err)
	}
	server.Wait()
}
