package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/testutil"
	"github.com/oauthfs/oauthfs/provider"
)

// scrape fetches /metrics from m's server and parses it with the
// official text parser.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Server("127.0.0.1:9464").Handler)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return mf
}

func TestMetrics(t *testing.T) {
	m := New("v1.2.3")
	m.TokenRequest(provider.Request{Integration: "GitHub", Grant: "refresh_token", Outcome: "ok", Duration: 30 * time.Millisecond})
	m.TokenRequest(provider.Request{Integration: "GitHub", Grant: "refresh_token", Outcome: "transient", Duration: 2 * time.Second})
	m.TokenRequest(provider.Request{Integration: "GitHub", Grant: "device_code", Outcome: "ok"})
	for _, ev := range []audit.Event{
		{Event: "sign_in", Integration: "GitHub", Via: "browser", Result: "ok"},
		{Event: "sign_in", Integration: "GitHub", Via: "device", Result: "failed"},
		{Event: "sign_out", Integration: "GitHub", Result: "ok"},
		{Event: "revocation", Integration: "GitHub", Result: "failed", Reason: "HTTP 500"},
		{Event: "refresh", Integration: "GitHub", Result: "ok"}, // counted by TokenRequest, not here
		{Event: "token", Integration: "GitHub", Result: "ok"},
	} {
		m.Event(ev)
	}
	for _, err := range []error{nil, nil, credential.ErrExpired, fmt.Errorf("x: %w", credential.ErrUnavailable), context.Canceled} {
		m.Read("GitHub", err)
	}
	m.Read("", credential.ErrNotFound)
	m.StoreWrite(nil)
	m.StoreWrite(errors.New("disk full"))
	m.Sessions(func() int { return 3 })
	m.SignedIn(func() map[string]int { return map[string]int{"GitHub": 2, "Google": 0} })
	m.AuditLost(func() uint64 { return 5 })

	mf := scrape(t, m)
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"oauthfs_token_requests_total", "grant=refresh_token,integration=GitHub,outcome=ok", 1},
		{"oauthfs_token_requests_total", "grant=refresh_token,integration=GitHub,outcome=transient", 1},
		{"oauthfs_token_requests_total", "grant=device_code,integration=GitHub,outcome=ok", 1},
		{"oauthfs_token_request_duration_seconds", "grant=refresh_token,integration=GitHub", 2},
		{"oauthfs_token_request_duration_seconds", "grant=device_code,integration=GitHub", -1},
		{"oauthfs_sign_ins_total", "integration=GitHub,outcome=ok,via=browser", 1},
		{"oauthfs_sign_ins_total", "integration=GitHub,outcome=failed,via=device", 1},
		{"oauthfs_sign_outs_total", "integration=GitHub,outcome=ok", 1},
		{"oauthfs_revocations_total", "integration=GitHub,outcome=failed", 1},
		{"oauthfs_reads_total", "errno=OK,integration=GitHub", 2},
		{"oauthfs_reads_total", "errno=EKEYEXPIRED,integration=GitHub", 1},
		{"oauthfs_reads_total", "errno=EIO,integration=GitHub", 1},
		{"oauthfs_reads_total", "errno=EINTR,integration=GitHub", 1},
		{"oauthfs_reads_total", "errno=ENOENT,integration=", 1},
		{"oauthfs_store_writes_total", "outcome=ok", 1},
		{"oauthfs_store_writes_total", "outcome=failed", 1},
		{"oauthfs_session_mounts", "", 3},
		{"oauthfs_users_signed_in", "integration=GitHub", 2},
		{"oauthfs_users_signed_in", "integration=Google", 0},
		{"oauthfs_audit_events_lost_total", "", 5},
	} {
		t.Run(c.name+"{"+c.labels+"}", func(t *testing.T) {
			if got := testutil.MetricValue(mf, c.name, c.labels); got != c.want {
				t.Errorf("= %v, want %v", got, c.want)
			}
		})
	}
	if f := mf["oauthfs_build_info"]; f == nil || len(f.Metric) != 1 || !strings.Contains(f.Metric[0].String(), "v1.2.3") {
		t.Errorf("build info = %v", f)
	}
	if mf["go_goroutines"] == nil || mf["process_open_fds"] == nil {
		t.Error("the Go runtime's and the process's metrics are missing")
	}
	if mf["oauthfs_token_requests_total"] != nil && len(mf["oauthfs_token_requests_total"].Metric) != 3 {
		t.Errorf("token requests: %d series, want 3", len(mf["oauthfs_token_requests_total"].Metric))
	}
	for _, f := range []string{"oauthfs_sign_ins_total", "oauthfs_sign_outs_total"} {
		for _, s := range mf[f].GetMetric() {
			for _, l := range s.Label {
				if l.GetName() == "user" || l.GetName() == "uid" {
					t.Errorf("%s has a per-user label", f)
				}
			}
		}
	}
}

// TestNilMetrics checks that a nil *Metrics, as when metrics_listen is
// off, counts nothing and never panics.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.TokenRequest(provider.Request{Integration: "x"})
	m.Event(audit.Event{Event: "sign_in"})
	m.Read("x", nil)
	m.StoreWrite(nil)
	m.Sessions(func() int { return 1 })
	m.SignedIn(nil)
	m.AuditLost(nil)
}

// TestServerPaths checks that the server answers /metrics only.
func TestServerPaths(t *testing.T) {
	srv := httptest.NewServer(New("v").Server("127.0.0.1:9464").Handler)
	defer srv.Close()
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/metrics", 200},
		{"HEAD", "/metrics", 200},
		{"GET", "/", 404},
		{"GET", "/debug/pprof/", 404},
		{"POST", "/metrics", 405},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("HTTP %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
}
