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
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/safepath"
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
	// Count, on a repeat of an event written earlier, is how many
	// identical events came in the 10 s after it (see Log.Record); on
	// audit_dropped, how many events of the uid were dropped.
	Count int `json:"count,omitempty"`
}

// Bounds of what one uid can make the log write (see Log.Record).
const (
	// perUIDRate events a second, in bursts of perUIDBurst, are written
	// for one uid; the rest are dropped and counted.
	perUIDRate  = 20
	perUIDBurst = 200
	// maxTracked bounds the uids and events the log remembers for this.
	maxTracked = 10000
	// maxText bounds each text field of an event.
	maxText = 256
)

// repeatWindow is how long identical events are merged into one line (a
// variable for tests).
var repeatWindow = 10 * time.Second

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

	lmu     sync.Mutex // guards the fields below
	buckets map[int]*bucket
	repeats map[string]*repeat
	stop    chan struct{} // ends the flusher
}

// bucket is one uid's token bucket, and what it dropped since the last
// summary.
type bucket struct {
	tokens  float64
	at      time.Time
	dropped int
	user    string
}

// repeat is an event written once, whose identical successors within
// repeatWindow are only counted.
type repeat struct {
	ev    Event
	count int
	until time.Time
}

// Open opens (creating, mode 0600) the audit log at path for appending,
// or standard output for "-", and starts its writer.
func Open(path string, log *slog.Logger) (*Log, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{path: path, log: log, queue: make(chan []byte, queueLen), done: make(chan struct{}),
		buckets: map[int]*bucket{}, repeats: map[string]*repeat{}, stop: make(chan struct{})}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	go l.write()
	go l.flush()
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
	// The directory must be safe from other users, and the file is
	// never reached through a symbolic link and is checked once open:
	// the broker writes as root, at start and at every SIGHUP.
	if err := safepath.CheckDirs("audit_log", filepath.Dir(l.path)); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("audit: audit_log %s is a symbolic link; name the file itself", l.path)
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := safepath.CheckFile("audit_log", f, 0o022); err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
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

// Record queues ev for the log; it never waits. Time is filled in, Exe
// from PID while that process lives, and every text field is cleaned and
// cut at 256 bytes.
//
// What any one user can make the log write is bounded, since every user
// of the host can ask the broker for things: an event identical to one
// written less than 10 s ago is only counted, and written once more,
// with its count, when the 10 s are over; and a uid's events beyond 20 a
// second (in bursts of 200) are dropped, counted as lost, and summed up
// in an audit_dropped line once they stop.
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
	for _, s := range []*string{&ev.Event, &ev.User, &ev.Integration, &ev.GUID, &ev.Account, &ev.Result, &ev.Reason, &ev.Exe, &ev.Via} {
		*s = printable.String(*s, maxText)
	}
	if ev.UID != nil && !l.admit(ev) {
		return
	}
	l.enqueue(ev)
}

// admit applies the per-uid bounds to ev and reports whether it is to be
// written now.
func (l *Log) admit(ev Event) bool {
	uid := *ev.UID
	key := ev
	key.Time = time.Time{}
	kb, _ := json.Marshal(key)
	k := string(kb)
	now := ev.Time
	l.lmu.Lock()
	defer l.lmu.Unlock()
	if r := l.repeats[k]; r != nil && now.Before(r.until) {
		r.count++
		return false
	}
	b := l.buckets[uid]
	if b == nil {
		if len(l.buckets) >= maxTracked {
			l.failures.Add(1)
			return false // untracked uids beyond the bound are not written either
		}
		b = &bucket{tokens: perUIDBurst, at: now}
		l.buckets[uid] = b
	}
	b.tokens = min(perUIDBurst, b.tokens+now.Sub(b.at).Seconds()*perUIDRate)
	b.at = now
	if b.tokens < 1 {
		b.dropped++
		b.user = ev.User
		l.failures.Add(1)
		return false
	}
	b.tokens--
	if len(l.repeats) < maxTracked {
		l.repeats[k] = &repeat{ev: ev, until: now.Add(repeatWindow)}
	}
	return true
}

// flush writes, every second, the counts of merged repeats whose window
// is over and the summaries of dropped events, and forgets idle uids.
func (l *Log) flush() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		for _, ev := range l.due(false) {
			l.enqueue(ev)
		}
	}
}

// due returns the lines of merged repeats whose window is over and of
// summaries of dropped events (all of them when final), and forgets idle
// uids.
func (l *Log) due(final bool) []Event {
	now := time.Now().UTC()
	var out []Event
	l.lmu.Lock()
	for k, r := range l.repeats {
		if now.Before(r.until) && !final {
			continue
		}
		if r.count > 0 {
			ev := r.ev
			ev.Time, ev.Count = now, r.count
			out = append(out, ev)
		}
		delete(l.repeats, k)
	}
	for uid, b := range l.buckets {
		if b.dropped > 0 && (final || b.tokens+now.Sub(b.at).Seconds()*perUIDRate >= perUIDRate) {
			out = append(out, Event{Time: now, Event: "audit_dropped", User: b.user, UID: UID(uid), Count: b.dropped,
				Reason: fmt.Sprintf("more than %d events a second of this uid; the rest were dropped", perUIDRate)})
			b.dropped = 0
		}
		if b.dropped == 0 && now.Sub(b.at) > time.Minute {
			delete(l.buckets, uid)
		}
	}
	l.lmu.Unlock()
	return out
}

// enqueue queues ev for the writer.
func (l *Log) enqueue(ev Event) {
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

// Close writes what is queued, and the counts of merged and dropped
// events not written yet, and closes the file.
func (l *Log) Close() {
	if l == nil {
		return
	}
	for _, ev := range l.due(true) {
		l.enqueue(ev)
	}
	l.qmu.Lock()
	if l.shut {
		l.qmu.Unlock()
		return
	}
	l.shut = true
	close(l.stop)
	close(l.queue)
	l.qmu.Unlock()
	<-l.done
	l.mu.Lock()
	if l.f != nil {
		l.f.Close()
	}
	l.mu.Unlock()
}
