// Package host assembles a broker host from a configuration: the store,
// the broker, sign-in, the session API on its Unix socket, and the
// sign-in web server. 'oauthfs mount' (one user), 'oauthfs broker' (every
// user of the machine) and 'oauthfs dev' all start their broker here.
//
// It owns no state of its own beyond the listeners; it must never import
// go-fuse.
package host

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/internal/unixsock"
	"github.com/oauthfs/oauthfs/metrics"
	"github.com/oauthfs/oauthfs/provider"
	"github.com/oauthfs/oauthfs/session"
	"github.com/oauthfs/oauthfs/signin"
	"github.com/oauthfs/oauthfs/store"
)

// ErrWebListen is wrapped when the sign-in web server cannot listen on
// the configured address.
var ErrWebListen = errors.New("sign-in web server cannot listen")

// ErrMetadata is wrapped when an integration's issuer has metadata that
// oauthfs cannot use (another issuer, not found, an endpoint over plain
// http): the configuration must change. It is provider.ErrMetadata.
var ErrMetadata = provider.ErrMetadata

// ErrMetricsListen is wrapped when the metrics server cannot listen on
// metrics_listen.
var ErrMetricsListen = errors.New("metrics server cannot listen")

// Options say who a host serves and where.
type Options struct {
	// Owner is the only uid the session socket serves (one user's embedded
	// broker), or -1 for every uid, each to its own credentials (the
	// daemon).
	Owner int
	// Socket is the session socket's path.
	Socket string
	// SocketMode and DirMode are the modes of the socket and of its
	// directory when it is created.
	SocketMode, DirMode os.FileMode
	// Web, when set, is where the sign-in web server listens instead of
	// the configuration's listen address.
	Web net.Listener
	// Log receives the host's events; nil discards.
	Log *slog.Logger
	// Version is the build's version, for the metrics' build info.
	Version string
}

// Host is a running broker host. Its methods are safe for concurrent use.
type Host struct {
	Broker *broker.Broker
	SignIn *signin.Table
	// Socket is the session socket's path.
	Socket string

	sock       net.Listener
	srv        *session.Server
	web        *http.Server
	metrics    *http.Server // nil: metrics_listen is off
	closeStore func()       // closes the store and the audit log
	settings   config.Settings
	dir        *provider.Directory // the issuers' metadata, fetched again on each reload
	log        *slog.Logger
	once       sync.Once
}

// discover fetches the metadata of every issuer of cfg into dir, within
// request_timeout. An issuer that cannot be reached is logged and asked
// again when needed; unusable metadata are an error that wraps
// provider.ErrMetadata.
func discover(dir *provider.Directory, cfg *config.Config, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Settings.RequestTimeout)
	defer cancel()
	unreachable, err := dir.Fetch(ctx, cfg.Integrations)
	if err != nil {
		return fmt.Errorf("host: %w", err)
	}
	for _, e := range unreachable {
		log.Warn("an issuer's metadata could not be read; its integrations work once it answers", "err", e)
	}
	return nil
}

// Start builds a broker host for cfg and serves its session socket and
// sign-in web server until Stop.
func Start(cfg *config.Config, opts Options) (*Host, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		met *metrics.Metrics
		ml  net.Listener
	)
	if a := cfg.Settings.MetricsListen; a != "" {
		var err error
		if ml, err = net.Listen("tcp", a); err != nil {
			return nil, fmt.Errorf("host: %w on [broker] metrics_listen %s: %w", ErrMetricsListen, a, err)
		}
		met = metrics.New(opts.Version)
	}
	// The issuers' metadata first: unusable ones stop the start before
	// anything listens.
	dir := provider.NewDirectory(provider.NewHTTPClient(cfg.Settings.RequestTimeout))
	if err := discover(dir, cfg, log); err != nil {
		closeListener(ml)
		return nil, err
	}
	var aud *audit.Log
	if p := cfg.Settings.AuditLog; p != "" {
		var err error
		if aud, err = audit.Open(p, log); err != nil {
			closeListener(ml)
			return nil, fmt.Errorf("host: [broker] audit_log %s cannot be opened: %w", p, err)
		}
		met.AuditLost(aud.Failures)
	}
	var st store.Store
	closeStore := func() { aud.Close(); closeListener(ml) }
	switch {
	case cfg.Store.Backend == config.BackendPostgres:
		dsn, err := cfg.Store.ReadDSN()
		if err != nil {
			closeStore()
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*cfg.Settings.RequestTimeout)
		pg, err := store.OpenPostgres(ctx, dsn, store.PostgresOptions{KeyFile: cfg.Settings.KeyFile, Timeout: cfg.Settings.RequestTimeout, Log: log})
		cancel()
		if err != nil {
			closeStore()
			return nil, err
		}
		st, closeStore = pg, func() { pg.Close(); aud.Close(); closeListener(ml) }
	case !cfg.Settings.MemoryOnly():
		f, err := store.OpenFile(*cfg.Settings.StateDir, cfg.Settings.KeyFile)
		if err != nil {
			closeStore()
			return nil, err
		}
		st = f
	}
	br, err := broker.New(cfg, broker.Options{Logger: log, Store: st, Audit: aud, Metrics: met, Directory: dir})
	if err != nil {
		closeStore()
		return nil, err
	}
	si, err := signin.New(br, cfg.Settings.CallbackURL, log)
	if err == nil {
		si.Observe(aud, met)
	}
	if err == nil && cfg.Settings.ClusterURL != "" {
		err = joinCluster(si, st.(*store.Postgres), cfg.Settings)
	}
	if err != nil {
		br.Close()
		closeStore()
		return nil, err
	}
	sock, err := unixsock.Listen(opts.Socket, opts.SocketMode, opts.DirMode)
	if err != nil {
		br.Close()
		closeStore()
		return nil, err
	}
	web := opts.Web
	if web == nil {
		if web, err = net.Listen("tcp", cfg.Settings.Listen); err != nil {
			sock.Close()
			br.Close()
			closeStore()
			return nil, fmt.Errorf("host: %w on %s: %w", ErrWebListen, cfg.Settings.Listen, err)
		}
	}
	if s := cfg.Settings; s.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
		if err != nil {
			web.Close()
			sock.Close()
			br.Close()
			closeStore()
			return nil, fmt.Errorf("host: [broker] tls_cert_file %s and tls_key_file %s: %w", s.TLSCertFile, s.TLSKeyFile, err)
		}
		web = tls.NewListener(web, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	h := &Host{
		Broker: br, SignIn: si, Socket: opts.Socket,
		sock: sock,
		srv:  &session.Server{B: br, SignIn: si, Owner: opts.Owner, Log: log, Version: opts.Version},
		web:  signin.NewServer(si.Handler(), log),

		closeStore: closeStore,
		settings:   cfg.Settings,
		dir:        dir,
		log:        log,
	}
	go h.srv.Serve(sock)
	go h.web.Serve(unixsock.CapConns(web, signin.MaxConns, false, log))
	if met != nil {
		h.metrics = met.Server(ml.Addr().String())
		go h.metrics.Serve(unixsock.CapConns(ml, metrics.MaxConns, false, log))
		log.Info("metrics listening", "address", "http://"+ml.Addr().String()+"/metrics")
	}
	log.Info("broker listening", "socket", opts.Socket, "sign_in", cfg.Settings.CallbackURL,
		"integrations", len(cfg.Integrations), "store", cfg.Store.Backend, "state_dir", *cfg.Settings.StateDir)
	return h, nil
}

// Stop ends every event stream, so that no change waits for a session,
// and closes both servers. It may be called more than once.
func (h *Host) Stop() {
	h.once.Do(func() {
		h.Broker.Close()
		h.srv.Close()
		h.sock.Close()
		h.web.Close()
		if h.metrics != nil {
			h.metrics.Close()
		}
		h.closeStore()
	})
}

// Reload reads the metadata of cfg's issuers again and applies the
// integrations of cfg, as [broker.Broker.Reload] does, and reports the
// [broker] settings that change only on restart. Unusable metadata
// refuse the reload; an issuer that cannot be reached keeps the metadata
// read before.
func (h *Host) Reload(cfg *config.Config) (ignored []string, err error) {
	if err := discover(h.dir, cfg, h.log); err != nil {
		return nil, err
	}
	ignored, err = h.Broker.Reload(cfg)
	if err != nil {
		return nil, err
	}
	for _, c := range []struct {
		name      string
		was, want string
	}{
		{"listen", h.settings.Listen, cfg.Settings.Listen},
		{"metrics_listen", h.settings.MetricsListen, cfg.Settings.MetricsListen},
		{"audit_log", h.settings.AuditLog, cfg.Settings.AuditLog},
		{"mount", h.settings.Mount, cfg.Settings.Mount},
	} {
		if c.was != c.want {
			ignored = append(ignored, c.name)
		}
	}
	return ignored, nil
}

// joinCluster makes si one broker of the cluster on pg: forwarded
// requests are signed with a key derived from the store key, and the
// other brokers' https cluster_url is verified with cluster_ca_file.
func joinCluster(si *signin.Table, pg *store.Postgres, s config.Settings) error {
	key, err := pg.DeriveKey("oauthfs forwarding key v1")
	if err != nil {
		return err
	}
	opts := signin.ClusterOptions{Key: key}
	if s.ClusterCAFile != "" {
		pem, err := os.ReadFile(s.ClusterCAFile)
		if err != nil {
			return fmt.Errorf("host: [broker] cluster_ca_file: %w", err)
		}
		opts.RootCAs = x509.NewCertPool()
		if !opts.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("host: [broker] cluster_ca_file %s holds no PEM certificate", s.ClusterCAFile)
		}
	}
	return si.Cluster(pg, s.ClusterURL, opts)
}

// Source returns the broker as user uid sees it, for a filesystem of
// theirs (a fusefs.Source).
func (h *Host) Source(uid int) broker.Source { return broker.Source{B: h.Broker, UID: uid} }

// closeListener closes l unless it is nil.
func closeListener(l net.Listener) {
	if l != nil {
		l.Close()
	}
}
