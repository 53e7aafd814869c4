package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/config"
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
	cfg, err := config.Load(*cfgFile)
	if err != nil {
		return configError(err)
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	br, err := broker.New(cfg, broker.Options{Logger: log})
	if err != nil {
		return err
	}
	sock := cfg.Settings.SocketFor(true)
	// Every user connects; SO_PEERCRED tells them apart.
	l, err := broker.Listen(sock, 0o666, 0o755)
	if err != nil {
		return err
	}
	defer l.Close()
	web, err := net.Listen("tcp", cfg.Settings.Listen)
	if err != nil {
		return withHint(fmt.Errorf("broker: sign-in web server: %w", err), "set [broker] listen (and callback_url) in %s to a free address", cfg.File)
	}
	webSrv := broker.NewWebServer(br.SignInHandler(), log)
	go webSrv.Serve(broker.CapConns(web, broker.MaxWebConns, false, log))
	defer webSrv.Close()
	srv := &broker.Server{B: br, Owner: -1, Log: log}
	go srv.Serve(l)
	defer srv.Close()
	log.Info("broker listening", "socket", sock, "sign_in", cfg.Settings.CallbackURL,
		"integrations", len(cfg.Integrations), "state_dir", *cfg.Settings.StateDir)

	// Reloads run beside the signal loop, one at a time, so that a
	// shutdown never waits for one.
	reloads := make(chan struct{}, 1)
	go func() {
		for range reloads {
			reload(log, br, *cfgFile)
		}
	}()
	defer close(reloads)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	for s := range sigs {
		if s == syscall.SIGHUP {
			select {
			case reloads <- struct{}{}:
			default: // one is pending already; it will read the newest file
			}
			continue
		}
		log.Info("stopping", "signal", s.String())
		br.Close() // no change waits for a session from here on
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		webSrv.Shutdown(ctx)
		cancel()
		return nil
	}
	return nil
}

// reload rereads the configuration and applies it, or logs why not.
func reload(log *slog.Logger, br *broker.Broker, file string) {
	next, err := config.Load(file)
	if err != nil {
		log.Error("reload refused; the old configuration stays in force", "err", err)
		return
	}
	for _, w := range next.Warnings {
		log.Warn(w)
	}
	ignored, err := br.Reload(next)
	if err != nil {
		log.Error("reload refused; the old configuration stays in force", "err", err)
		return
	}
	if len(ignored) > 0 {
		log.Warn("some [broker] settings change only on restart", "settings", ignored)
	}
}
