// Package metrics is the broker's Prometheus metrics (docs/operations.md):
// token endpoint requests and their latency, sign-ins, sign-outs,
// revocations, the reads that reached the broker, session mounts, users
// signed in, store writes, audit events lost and the build.
//
// Labels name integrations, grant types, outcomes and errnos, all bounded
// by the configuration: never a user (a per-user label would grow with the
// users of a host and tell who works when) and never a secret. An
// integration id that names no integration is counted under
// integration="".
//
// A nil *Metrics counts nothing, so that callers need no check when
// metrics are off. It must never import the broker, the session API or
// the filesystem.
package metrics

import (
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/hostcheck"
	"github.com/oauthfs/oauthfs/provider"
)

// Metrics holds the broker's collectors in a registry of its own. Its
// methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	tokenRequests *prometheus.CounterVec   // integration, grant, outcome
	tokenDuration *prometheus.HistogramVec // integration, grant
	signIns       *prometheus.CounterVec   // integration, via, outcome
	signOuts      *prometheus.CounterVec   // integration, outcome
	revocations   *prometheus.CounterVec   // integration, outcome
	reads         *prometheus.CounterVec   // integration, errno
	storeWrites   *prometheus.CounterVec   // outcome
}

// New returns the metrics of a broker built as version, with the Go
// runtime's and the process's own. One broker uses them: a second would
// register its collectors again and panic.
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.tokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthfs_token_requests_total",
		Help: "Requests to integrations' token endpoints by grant type (refresh_token, authorization_code, device_code) and outcome (ok, invalid_grant, transient).",
	}, []string{"integration", "grant", "outcome"})
	m.tokenDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "oauthfs_token_request_duration_seconds",
		Help:    "How long token endpoint requests took, whatever their outcome (the device code grant's polling is left out).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"integration", "grant"})
	m.signIns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthfs_sign_ins_total",
		Help: "Sign-ins that ended, by how (browser, device, settings_page, import) and outcome (ok, failed).",
	}, []string{"integration", "via", "outcome"})
	m.signOuts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthfs_sign_outs_total",
		Help: "Sign-outs by outcome (ok; failed: forgotten in memory, but the store could not be written).",
	}, []string{"integration", "outcome"})
	m.revocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthfs_revocations_total",
		Help: "RFC 7009 revocations at sign-out by outcome (ok, failed).",
	}, []string{"integration", "outcome"})
	m.reads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthfs_reads_total",
		Help: "Token reads that reached the broker (a session mount's read past the kernel's and the mount's caches, or oauthfs token), by the errno a reader sees (OK for a token).",
	}, []string{"integration", "errno"})
	m.storeWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oauthfs_store_writes_total",
		Help: "Writes of credentials to the store (a file, or the credential database) by outcome (ok, failed).",
	}, []string{"outcome"})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "oauthfs_build_info",
		Help:        "The oauthfs build: always 1, with the version and the Go version as labels.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(m.tokenRequests, m.tokenDuration, m.signIns, m.signOuts, m.revocations, m.reads, m.storeWrites, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics, when a scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: m.reg,
		MaxRequestsInFlight: maxScrapes, Timeout: scrapeTimeout})
}

// Bounds on the metrics server, which every local user can reach on a
// loopback address: a user scraping in a loop must not slow the broker.
const (
	// MaxConns bounds the server's connections (host caps its listener).
	MaxConns      = 8
	maxScrapes    = 2
	scrapeTimeout = 10 * time.Second
)

// Server returns the HTTP server of metrics_listen: /metrics, and 404
// elsewhere.
func (m *Metrics) Server(listen string) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "metrics are read with GET", http.StatusMethodNotAllowed)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "oauthfs serves its metrics at /metrics only", http.StatusNotFound)
	})
	// Scrapers name the address they were given; a page of another site
	// that resolves to it (DNS rebinding) names its own site.
	own := func(host string) bool {
		return hostcheck.Loopback(host) || strings.EqualFold(hostcheck.Name(host), hostcheck.Name(listen))
	}
	return &http.Server{Handler: hostcheck.Handler(mux, own), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
}

// TokenRequest counts a request to a token endpoint; it is a
// [provider.Options.Observe].
func (m *Metrics) TokenRequest(r provider.Request) {
	if m == nil {
		return
	}
	m.tokenRequests.WithLabelValues(r.Integration, r.Grant, r.Outcome).Inc()
	if r.Duration > 0 {
		m.tokenDuration.WithLabelValues(r.Integration, r.Grant).Observe(r.Duration.Seconds())
	}
}

// Event counts the sign-ins, sign-outs and revocations among audit
// events; it ignores the others. Outcomes other than ok count as failed.
func (m *Metrics) Event(ev audit.Event) {
	if m == nil {
		return
	}
	outcome := "failed"
	if ev.Result == "ok" {
		outcome = "ok"
	}
	switch ev.Event {
	case "sign_in":
		m.signIns.WithLabelValues(ev.Integration, ev.Via, outcome).Inc()
	case "sign_out":
		m.signOuts.WithLabelValues(ev.Integration, outcome).Inc()
	case "revocation":
		m.revocations.WithLabelValues(ev.Integration, outcome).Inc()
	}
}

// Read counts a token read that reached the broker for integration (its
// name; "" for an id that names none) and ended with err.
func (m *Metrics) Read(integration string, err error) {
	if m == nil {
		return
	}
	name := "OK"
	if e := credential.Errno(err); e != 0 {
		name = unix.ErrnoName(e)
	}
	m.reads.WithLabelValues(integration, name).Inc()
}

// StoreWrite counts a write to the store that ended with err.
func (m *Metrics) StoreWrite(err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	m.storeWrites.WithLabelValues(outcome).Inc()
}

// Sessions makes the metrics report oauthfs_session_mounts from f at
// each scrape: how many session mounts are connected now.
func (m *Metrics) Sessions(f func() int) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "oauthfs_session_mounts",
		Help: "Session mounts connected to the broker now (their event streams; an embedded broker's own mount counts too).",
	}, func() float64 { return float64(f()) }))
}

// SignedIn makes the metrics report oauthfs_users_signed_in from f at
// each scrape: for every integration's name, how many users hold a valid
// sign-in.
func (m *Metrics) SignedIn(f func() map[string]int) {
	if m == nil {
		return
	}
	m.reg.MustRegister(gaugeFunc{
		desc: prometheus.NewDesc("oauthfs_users_signed_in",
			"Users with a valid sign-in (signed in, or refreshing after a transient failure) per integration, among those whose credentials the broker has loaded since it started.",
			[]string{"integration"}, nil),
		f: f,
	})
}

// AuditLost makes the metrics report oauthfs_audit_events_lost_total
// from f, the count of audit events that could not be written.
func (m *Metrics) AuditLost(f func() uint64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "oauthfs_audit_events_lost_total",
		Help: "Audit events that could not be written (the queue full, or the disk failing); each loss is also logged.",
	}, func() float64 { return float64(f()) }))
}

// gaugeFunc is a gauge with one label whose values a function gives at
// each scrape.
type gaugeFunc struct {
	desc *prometheus.Desc
	f    func() map[string]int
}

var _ prometheus.Collector = gaugeFunc{}

func (g gaugeFunc) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g gaugeFunc) Collect(ch chan<- prometheus.Metric) {
	for label, n := range g.f() {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(n), label)
	}
}
