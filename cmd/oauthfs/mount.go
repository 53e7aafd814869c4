package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/host"
)

// fuseSlack is added to the broker's request timeout for the deadline of
// a FUSE operation, so that the broker's own, more precise, error wins.
const fuseSlack = 2 * time.Second

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

var mountCommand = &command{
	name: "mount", args: "[--config FILE | --broker SOCKET] MOUNTPOINT",
	summary: "serve /oauth at MOUNTPOINT until unmounted",
	help: "Serve the oauthfs filesystem at MOUNTPOINT in the foreground until it is\n" +
		"unmounted (umount, fusermount3 -u) or the process gets SIGINT or SIGTERM.\n" +
		"With --config (the default) the broker runs inside this process and\n" +
		"listens on the config's socket; with --broker it is a client of a\n" +
		"running broker.",
	flags: mountFlags,
}

// mountFlags declares the flags of oauthfs mount.
func mountFlags(fs *flag.FlagSet) runFunc {
	cfgFile := fs.String("config", "", "configuration `file` (default "+config.DefaultFile()+")")
	sock := fs.String("broker", "", "use the running broker at this `socket` instead of an embedded one")
	level := fs.String("log-level", envOr("OAUTHFS_LOG_LEVEL", "info"), "log `level`: debug, info, warn or error ($OAUTHFS_LOG_LEVEL)")
	return func(_, stderr io.Writer) error {
		mountpoint, err := oneArg(fs, "MOUNTPOINT")
		if err != nil {
			return err
		}
		if *cfgFile != "" && *sock != "" {
			return withHint(&usageError{"--config and --broker cannot be used together"},
				"--config runs a broker in this process; --broker uses one that is already running")
		}
		log, err := newLogger(stderr, *level)
		if err != nil {
			return err
		}
		defer memguard.Purge()

		uid, gid := os.Getuid(), os.Getgid()
		var (
			src     fusefs.Source
			timeout time.Duration
			stop    = func() {}
		)
		if *sock != "" {
			// The broker says its request_timeout, which bounds every call
			// the mount makes (a broker too old to say: the default).
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			reqTimeout := config.DefaultRequestTimeout
			if info, err := client.NewClient(*sock, 5*time.Second).Info(ctx); err == nil && info.RequestTimeout() > 0 {
				reqTimeout = info.RequestTimeout()
			}
			c := client.NewClient(*sock, reqTimeout+fuseSlack)
			_, err := c.Integrations(ctx)
			cancel()
			if err != nil {
				return explain(err, "")
			}
			if err := fusefs.PrepareMountpoint(mountpoint); err != nil {
				return err
			}
			src, timeout = client.NewCached(c, log), reqTimeout+2*fuseSlack
			log.Info("using the broker", "socket", *sock, "request_timeout", reqTimeout)
		} else {
			if *cfgFile == "" {
				*cfgFile = config.DefaultFile()
			}
			cfg, err := loadConfig(*cfgFile, log)
			if err != nil {
				return err
			}
			if err := fusefs.PrepareMountpoint(mountpoint); err != nil {
				return err
			}
			h, err := startHost(cfg, host.Options{Owner: uid, Socket: cfg.Settings.Socket, SocketMode: 0o600, DirMode: 0o700, Log: log})
			if err != nil {
				return err
			}
			stop = h.Stop
			if err := h.Broker.Load(uid); err != nil {
				h.Stop()
				return explain(err, "")
			}
			src, timeout = h.Source(uid), cfg.Settings.RequestTimeout+fuseSlack
		}
		defer stop()

		// The filesystem watches its source for changes until it is
		// unmounted (or the broker stops).
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		root := fusefs.NewRoot(fusefs.Options{Source: src, UID: uint32(uid), GID: uint32(gid), Timeout: timeout, Logger: log, Context: ctx})
		server, err := fusefs.Mount(mountpoint, root, uint32(uid), uint32(gid))
		if err != nil {
			return err
		}
		log.Info("mounted", "mountpoint", mountpoint)
		done := make(chan struct{})
		go func() { server.Wait(); close(done) }()
		if s := waitForStop(done, nil); s != nil {
			log.Info("unmounting", "signal", s.String(), "mountpoint", mountpoint)
			if err := fusefs.Unmount(server, mountpoint, done); err != nil {
				log.Error("unmount failed", "mountpoint", mountpoint, "err", err)
			}
		} else {
			log.Info("unmounted", "mountpoint", mountpoint)
		}
		return nil
	}
}

// loadConfig loads the configuration file and logs its warnings.
func loadConfig(file string, log *slog.Logger) (*config.Config, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, configError(err)
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	return cfg, nil
}

// startHost starts a broker host, with the advice a user needs when it
// cannot.
func startHost(cfg *config.Config, opts host.Options) (*host.Host, error) {
	opts.Version = versionString()
	h, err := host.Start(cfg, opts)
	switch {
	case errors.Is(err, host.ErrWebListen):
		return nil, withHint(err, "set [broker] listen (and callback_url) in %s to a free address", cfg.File)
	case errors.Is(err, host.ErrMetricsListen):
		return nil, withHint(err, "set [broker] metrics_listen in %s to a free address, or remove it", cfg.File)
	case errors.Is(err, host.ErrMetadata):
		return nil, withHint(err, "fix issuer in %s (exactly the issuer's identifier, as its metadata name it), or set auth_url and token_url and leave issuer out", cfg.File)
	case err != nil:
		return nil, explain(err, "")
	}
	return h, nil
}

func configError(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return withHint(err, "write a configuration (docs/design.md, section 4) or pass --config FILE")
	}
	return err
}

// socketFlags adds --broker and --config to a client command.
func socketFlags(fs *flag.FlagSet) (sock, cfg *string) {
	sock = fs.String("broker", "", "the broker's `socket` (default: the search order of docs/design.md, section 5)")
	cfg = fs.String("config", "", "read the broker's socket from this configuration `file`")
	return sock, cfg
}

// resolveSocket finds the broker's socket: --broker; $OAUTHFS_BROKER;
// the socket of --config; then the first of these where a broker
// answers (or, when none does, the first that is a socket):
// $XDG_RUNTIME_DIR/oauthfs/broker.sock (an embedded broker's default),
// /run/oauthfs/broker.sock (the system daemon's), and last the fallback
// in the temporary directory, where another user could have put a socket
// first. Whatever is found, the client trusts it only after checking who
// owns its directory and who answers on it.
func resolveSocket(flagSock, flagCfg string) (string, error) {
	switch {
	case flagSock != "":
		return flagSock, nil
	case os.Getenv("OAUTHFS_BROKER") != "":
		return os.Getenv("OAUTHFS_BROKER"), nil
	case flagCfg != "":
		cfg, err := config.Load(flagCfg)
		if err != nil {
			return "", configError(err)
		}
		return cfg.Settings.Socket, nil
	}
	var cands []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		cands = append(cands, filepath.Join(d, "oauthfs", "broker.sock"))
	}
	cands = append(cands, config.SystemSocket, filepath.Join(config.TempRuntimeDir(), "broker.sock"))
	for _, p := range cands {
		if answers(p) {
			return p, nil
		}
	}
	for _, p := range cands { // a dead one, for the error to name
		if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
			return p, nil
		}
	}
	return cands[0], nil
}

// answers reports whether something accepts connections on the Unix
// socket at path (a socket left by a dead broker refuses them). Who
// answers is checked when the client connects.
func answers(path string) bool {
	if st, err := os.Stat(path); err != nil || st.Mode()&os.ModeSocket == 0 {
		return false
	}
	c, err := net.DialTimeout("unix", path, 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
