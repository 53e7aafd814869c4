// Package testutil holds small helpers that oauthfs's tests share: a clock
// that tests move instead of sleeping, and a log buffer that is safe to
// write from many goroutines.
package testutil

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"
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
