// Package testutil holds small helpers that oauthfs's tests share: a clock
// that tests move instead of sleeping, a log buffer that is safe to write
// from many goroutines, and the value of a parsed Prometheus metric.
package testutil

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Clock is the real time plus an offset that tests advance. It is safe for
// concurrent use; pass its Now to a broker's Options.Now.
type Clock struct{ off atomic.Int64 }

// Now returns the real time plus the offset.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// SyncBuffer is a bytes.Buffer safe for concurrent writers, for capturing
// logs and process output.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// MetricValue returns the value of the series of family name in mf with
// exactly the labels given ("k=v,k=v", sorted by name, "" for none), or
// -1 when there is none. A histogram's value is its count of
// observations.
func MetricValue(mf map[string]*dto.MetricFamily, name, labels string) float64 {
	for _, m := range mf[name].GetMetric() {
		got := make([]string, 0, len(m.Label))
		for _, l := range m.Label {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") != labels {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}
