package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/broker/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/fusefs"
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

func runMount(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("mount", "[--config FILE | --broker SOCKET] MOUNTPOINT",
		"Serve the oauthfs filesystem at MOUNTPOINT in the foreground until it is\n"+
			"unmounted (umount, fusermount3 -u) or the process gets SIGINT or SIGTERM.\n"+
			"With --config (the default) the broker runs inside this process and\n"+
			"listens on the config's socket; with --broker it is a client of a\n"+
			"running broker.", stderr)
	cfgFile := fs.String("config", "", "configuration `file` (default "+config.DefaultFile()+")")
	sock := fs.String("broker", "", "use the running broker at this `socket` instead of an embedded one")
	level := fs.String("log-level", envOr("OAUTHFS_LOG_LEVEL", "info"), "log `level`: debug, info, warn or error ($OAUTHFS_LOG_LEVEL)")
	if err := parse(fs, args); err != nil {
		return err
	}
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
		b       fusefs.Source
		timeout time.Duration
		stop    = func() {}
	)
	if *sock != "" {
		c := client.New(*sock, config.DefaultRequestTimeout+fuseSlack)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Integrations(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("mount: %w", err)
		}
		if err := fusefs.PrepareMountpoint(mountpoint); err != nil {
			return err
		}
		cached := client.NewCached(c, log)
		watchCtx, stopWatch := context.WithCancel(context.Background())
		go cached.Watch(watchCtx)
		stop = stopWatch
		b, timeout = cached, config.DefaultRequestTimeout+2*fuseSlack
		log.Info("using the broker", "socket", *sock)
	} else {
		if *cfgFile == "" {
			*cfgFile = config.DefaultFile()
		}
		cfg, err := config.Load(*cfgFile)
		if err != nil {
			return configError(err)
		}
		for _, w := range cfg.Warnings {
			log.Warn(w)
		}
		if err := fusefs.PrepareMountpoint(mountpoint); err != nil {
			return err
		}
		br, err := broker.New(cfg, broker.Options{Logger: log})
		if err != nil {
			return err
		}
		if err := br.Load(uid); err != nil {
			return err
		}
		l, err := broker.Listen(cfg.Settings.Socket, 0o600, 0o700)
		if err != nil {
			return err
		}
		web, err := net.Listen("tcp", cfg.Settings.Listen)
		if err != nil {
			l.Close()
			return withHint(fmt.Errorf("mount: sign-in web server: %w", err), "set [broker] listen (and callback_url) in %s to a free address", cfg.File)
		}
		srv := &broker.Server{B: br, Owner: uid, Log: log}
		go srv.Serve(l)
		webSrv := broker.NewWebServer(br.SignInHandler(), log)
		go webSrv.Serve(broker.CapConns(web, broker.MaxWebConns, false, log))
		stop = func() { br.Close(); l.Close(); webSrv.Close() }
		b, timeout = broker.Session{B: br, UID: uid}, cfg.Settings.RequestTimeout+fuseSlack
		log.Info("broker listening", "socket", cfg.Settings.Socket, "sign_in", cfg.Settings.CallbackURL,
			"integrations", len(cfg.Integrations), "state_dir", *cfg.Settings.StateDir)
	}
	defer stop()

	root := fusefs.NewRoot(fusefs.Options{Source: b, UID: uint32(uid), GID: uint32(gid), Timeout: timeout, Logger: log})
	server, err := fusefs.Mount(mountpoint, root, uint32(uid), uint32(gid))
	if err != nil {
		return err
	}
	log.Info("mounted", "mountpoint", mountpoint)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	select {
	case <-done:
		log.Info("unmounted", "mountpoint", mountpoint)
	case s := <-sigs:
		log.Info("unmounting", "signal", s.String(), "mountpoint", mountpoint)
		unmount(log, server.Unmount, mountpoint, done)
	}
	return nil
}

// unmount unmounts cleanly, or, when files are still open, detaches the
// mount so that the process can exit and the mount point is usable again.
func unmount(log *slog.Logger, clean func() error, dir string, done <-chan struct{}) {
	err := clean()
	if err == nil {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		return
	}
	log.Warn("clean unmount failed; detaching", "mountpoint", dir, "err", err)
	if os.Geteuid() == 0 {
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	} else {
		var out []byte
		out, err = exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if err != nil {
		log.Error("detach failed", "mountpoint", dir, "err", err)
	}
}

func configError(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return withHint(err, "write a configuration (see README, Configuration) or pass --config FILE")
	}
	return err
}

// socketFlags adds --broker and --config to a client command.
func socketFlags(fs *flag.FlagSet) (sock, cfg *string) {
	sock = fs.String("broker", "", "the broker's `socket` (default: see README, Finding the broker)")
	cfg = fs.String("config", "", "read the broker's socket from this configuration `file`")
	return sock, cfg
}

// resolveSocket finds the broker's socket: --broker; $OAUTHFS_BROKER;
// the socket of --config; then the first of these that is a socket:
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
		if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
			return p, nil
		}
	}
	return cands[0], nil
}
