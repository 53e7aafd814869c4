package main

import (
	"io"
	"log/slog"
	"os"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/host"
)

// systemConfig is the system broker's default configuration file.
const systemConfig = "/etc/oauthfs/config.toml"

func runBroker(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("broker", "[--config FILE]",
		"Run the broker daemon for every user of this host: the session API on\n"+
			"the config's socket (default "+config.SystemSocket+"), where each\n"+
			"caller sees only its own credentials, the sign-in web server, and one\n"+
			"encrypted store file per user. SIGHUP reloads the configuration;\n"+
			"SIGINT and SIGTERM stop it.", stderr)
	def := systemConfig
	if os.Geteuid() != 0 {
		def = config.DefaultFile()
	}
	cfgFile := fs.String("config", def, "configuration `file`")
	level := fs.String("log-level", envOr("OAUTHFS_LOG_LEVEL", "info"), "log `level`: debug, info, warn or error ($OAUTHFS_LOG_LEVEL)")
	if err := parse(fs, args); err != nil {
		return err
	}
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
	// Every user connects; SO_PEERCRED tells them apart.
	h, err := startHost(cfg, host.Options{Owner: -1, Socket: cfg.Settings.SocketFor(true), SocketMode: 0o666, DirMode: 0o755, Log: log})
	if err != nil {
		return err
	}
	defer h.Stop()
	s := waitForStop(nil, func() { reload(log, h, *cfgFile) })
	log.Info("stopping", "signal", s.String())
	return nil
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
