package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/awnumar/memguard"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/fusefs"
	"github.com/oauthfs/oauthfs/host"
)

// systemConfig is the system broker's default configuration file.
const systemConfig = "/etc/oauthfs/config.toml"

var brokerCommand = &command{
	name: "broker", args: "[--config FILE]",
	summary: "run the broker daemon for every user of this host",
	help: "Run the broker daemon for every user of this host: the session API on\n" +
		"the config's socket (default " + config.SystemSocket + "), where each\n" +
		"caller sees only its own credentials, the sign-in web server, and one\n" +
		"encrypted store file per user. SIGHUP reloads the configuration;\n" +
		"SIGINT and SIGTERM stop it.",
	flags: brokerFlags,
}

// brokerFlags declares the flags of oauthfs broker.
func brokerFlags(fs *flag.FlagSet) runFunc {
	def := systemConfig
	if os.Geteuid() != 0 {
		def = config.DefaultFile()
	}
	cfgFile := fs.String("config", def, "configuration `file`")
	level := fs.String("log-level", envOr("OAUTHFS_LOG_LEVEL", "info"), "log `level`: debug, info, warn or error ($OAUTHFS_LOG_LEVEL)")
	return func(_, stderr io.Writer) error {
		if fs.NArg() != 0 {
			return usageErrorf("broker takes no arguments")
		}
		log, err := newLogger(stderr, *level)
		if err != nil {
			return err
		}
		defer memguard.Purge()
		cfg, err := loadConfig(*cfgFile, log)
		if err != nil {
			return err
		}
		if dir := cfg.Settings.Mount; dir != "" {
			if err := fusefs.PrepareSystemMountpoint(dir); err != nil {
				return withHint(err, "the system mount needs root and an empty directory at [broker] mount in %s; set mount = \"\" to serve none", *cfgFile)
			}
		}
		// Every user connects; SO_PEERCRED tells them apart.
		h, err := startHost(cfg, host.Options{Owner: -1, Socket: cfg.Settings.SocketFor(true), SocketMode: 0o666, DirMode: 0o755, Log: log})
		if err != nil {
			return err
		}
		defer h.Stop()
		var done chan struct{}
		if dir := cfg.Settings.Mount; dir != "" {
			server, err := mountSystem(h, dir, cfg.Settings.RequestTimeout+fuseSlack, log)
			if err != nil {
				return err
			}
			done = make(chan struct{})
			go func() { server.Wait(); close(done) }()
			defer func() {
				log.Info("unmounting the system mount", "mountpoint", dir)
				if err := fusefs.Unmount(server, dir, done); err != nil {
					log.Error("unmount failed", "mountpoint", dir, "err", err)
				}
			}()
		}
		s := waitForStop(done, func() { reload(log, h, *cfgFile) })
		if s == nil {
			return fmt.Errorf("the system mount at %s was unmounted under the broker; it stops too (systemd restarts it)", cfg.Settings.Mount)
		}
		log.Info("stopping", "signal", s.String())
		return nil
	}
}

// mountSystem serves the system mount at dir: every process of the host
// reads its own user's credentials there.
func mountSystem(h *host.Host, dir string, timeout time.Duration, log *slog.Logger) (*fuse.Server, error) {
	root := fusefs.NewSystemRoot(fusefs.SystemOptions{
		View: func(uid uint32) (fusefs.Source, uint32, error) {
			gid := uid // a uid without a passwd entry: its own number as group
			if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
				if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
					gid = uint32(g)
				}
			}
			return h.Source(int(uid)), gid, nil
		},
		Watch:   h.Source(0).Watch, // reloads reach every user's stream
		Timeout: timeout,
		Logger:  log,
	})
	server, err := fusefs.MountSystem(dir, root)
	if err != nil {
		return nil, withHint(err, "the system mount needs root and an empty directory at [broker] mount; set mount = \"\" to serve none")
	}
	log.Info("system mount serving every user", "mountpoint", dir)
	return server, nil
}

// reload rereads the configuration and applies it, or logs why not.
func reload(log *slog.Logger, h *host.Host, file string) {
	next, err := config.Load(file)
	if err != nil {
		log.Error("reload refused; the old configuration stays in force", "err", err)
		return
	}
	for _, w := range next.Warnings {
		log.Warn(w)
	}
	ignored, err := h.Reload(next)
	if err != nil {
		log.Error("reload refused; the old configuration stays in force", "err", err)
		return
	}
	if len(ignored) > 0 {
		log.Warn("some [broker] settings change only on restart", "settings", ignored)
	}
}
