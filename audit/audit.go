// Package audit writes the broker's audit log: one JSON object a line,
// appended in order and fsynced, for every sign-in, sign-out,
// revocation, refresh, token handed out, configuration reload and
// settings-page session. It never holds a secret: events carry names,
// results and reasons, never a token, code, verifier or client secret.
//
// Writes never hold up the broker: events go through a bounded queue to
// one writer, and what cannot be written (the queue full, the disk
// failing) is dropped, counted and logged.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one audit record. Empty fields are left out.
type Event struct {
	Time time.Time `json:"time"`
	// Event names what happened: sign_in, sign_out, revocation, refresh,
	// token, reload, settings_session.
	Event       string   `json:"event"`
	User        string   `json:"user,omitempty"`
	UID         *int     `json:"uid,omitempty"`
	Integration string   `json:"integration,omitempty"`
	GUID        string   `json:"guid,omitempty"`
	Scopes      []string `json:"scopes,omitempty"`
	Account     string   `json:"account,omitempty"`
	// Result is ok, or what went wrong (failed, invalid_grant, transient,
	// denied, ...); Reason says more.
	Result string `json:"result,omitempty"`
	Reason string `json:"reason,omitempty"`
	// PID and Exe name the process a token went to, where known (Record
	// reads Exe from /proc).
	PID int    `json:"pid,omitempty"`
	Exe string `json:"exe,omitempty"`
	// Via says how: socket (oauthfs token, a session mount), browser,
	// device, settings_page.
	Via string `json:"via,omitempty"`
}

// UID returns a pointer to uid, for Event.UID.
func UID(uid int) *int { return &uid }

// queueLen bounds the events waiting to be written.
const queueLen = 4096

// Log is an open audit log. A nil *Log records nothing. Its methods are
// safe for concurrent use.
type Log struct {
	path  string
	log   *slog.Logger
	queue chan []byte
	done  chan struct{}
	qmu   sync.RWMutex // Close holds it to close queue; Record to send
	shut  bool
	// Failures counts events lost: the queue full or a write failing.
	failures atomic.Uint64

	mu sync.Mutex // guards f
	f  *os.File   // nil for stdout
	w  io.Writer
}

// Open opens (creating, mode 0600) the audit log at path for appending,
// or standard output for "-", and starts its writer.
func Open(path string, log *slog.Logger) (*Log, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{path: path, log: log, queue: make(chan []byte, queueLen), done: make(chan struct{})}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	go l.write()
	return l, nil
}

// Reopen opens the file again, for log rotation (SIGHUP): events after it
// go to the file now at the path.
func (l *Log) Reopen() error {
	if l == nil {
		return nil
	}
	if l.path == "-" {
		l.mu.Lock()
		l.w = os.Stdout
		l.mu.Unlock()
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("audit: audit_log %s is not a regular file", l.path)
	}
	l.mu.Lock()
	old := l.f
	l.f, l.w = f, f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Record queues ev for the log; it never waits. Time is filled in, and
// Exe from PID while that process lives.
func (l *Log) Record(ev Event) {
	if l == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.PID > 0 && ev.Exe == "" {
		ev.Exe, _ = os.Readlink("/proc/" + strconv.Itoa(ev.PID) + "/exe")
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	l.qmu.RLock()
	defer l.qmu.RUnlock()
	if l.shut {
		return
	}
	select {
	case l.queue <- append(b, '\n'):
	default:
		l.lost(errors.New("the queue is full"))
	}
}

// Failures returns how many events were lost.
func (l *Log) Failures() uint64 {
	if l == nil {
		return 0
	}
	return l.failures.Load()
}

func (l *Log) lost(err error) {
	if n := l.failures.Add(1); n == 1 || n%1000 == 0 {
		l.log.Error("audit events lost", "count", n, "err", err)
	}
}

// write appends queued events in order, fsyncing after each batch.
func (l *Log) write() {
	defer close(l.done)
	for b := range l.queue {
		l.mu.Lock()
		w, f := l.w, l.f
		n := 1
		_, err := w.Write(b)
		if err != nil {
			l.lost(err)
		}
	more:
		for {
			select {
			case b, ok := <-l.queue:
				if !ok {
					break more
				}
				n++
				if _, err := w.Write(b); err != nil {
					l.lost(err)
				}
			default:
				break more
			}
		}
		if f != nil {
			if err := f.Sync(); err != nil {
				l.lost(err)
			}
		}
		l.mu.Unlock()
	}
}

// Close writes what is queued and closes the file.
func (l *Log) Close() {
	if l == nil {
		return
	}
	l.qmu.Lock()
	if l.shut {
		l.qmu.Unlock()
		return
	}
	l.shut = true
	close(l.queue)
	l.qmu.Unlock()
	<-l.done
	l.mu.Lock()
	if l.f != nil {
		l.f.Close()
	}
	l.mu.Unlock()
}
