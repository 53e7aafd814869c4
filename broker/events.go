package broker

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

// Event tells a session that what it may have cached about a user's
// credentials is stale: one integration's (GUID), or everything's (a
// reload, GUID empty). The first event of a stream is a hello.
type Event struct {
	Seq  uint64    `json:"seq"` // counts the events of one stream, from 1
	Kind EventKind `json:"kind"`
	GUID string    `json:"guid,omitempty"`
}

// EventKind says what an Event is about.
type EventKind string

// The kinds of [Event].
const (
	EventHello   EventKind = "hello"   // the stream is live; drop everything cached
	EventChanged EventKind = "changed" // one integration's tokens are gone or replaced: drop them now
	EventUpdated EventKind = "updated" // one integration was refreshed, or failed to: drop it soon
	EventReload  EventKind = "reload"  // the configuration changed; drop everything
)

// Change is what an event means to a filesystem.
func (e Event) Change() credential.Change { return credential.ChangeOf(string(e.Kind), e.GUID) }

// AckTimeout bounds how long a change waits for sessions to acknowledge
// its event, all sessions together. A session that does not answer in
// time is dropped (its stream closes, and a client clears its whole cache
// when that happens), so no session can hold up a change, a reload or a
// shutdown for longer.
const AckTimeout = 2 * time.Second

// maxStreamsPerUser bounds one user's event streams (one per session
// mount).
const maxStreamsPerUser = 64

// errTooManyStreams is returned by Subscribe past maxStreamsPerUser.
var errTooManyStreams = errors.New("too many event streams")

// Subscription is one session's event stream. Events arrive on C; the
// session calls Ack with each event's Seq once it has acted on it. Seq
// counts this stream's events only, so a stream learns nothing about other
// users' changes.
type Subscription struct {
	C    <-chan Event
	c    chan Event
	uid  int
	seq  uint64 // the last Seq sent; guarded by hub.mu
	mu   sync.Mutex
	ack  uint64
	ackc chan struct{} // closed and replaced on every Ack
	dead chan struct{} // closed when the hub drops the subscription
}

// Ack records that the session has acted on every event up to seq.
func (s *Subscription) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.ack {
		s.ack = seq
		close(s.ackc)
		s.ackc = make(chan struct{})
	}
}

func (s *Subscription) acked(seq uint64) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ack >= seq, s.ackc
}

// Dead is closed when the hub has dropped the subscription.
func (s *Subscription) Dead() <-chan struct{} { return s.dead }

// hub fans events out to subscriptions and waits for their acks. It is
// safe for concurrent use.
type hub struct {
	mu     sync.Mutex // guards the fields below and every Subscription.seq
	subs   map[*Subscription]bool
	perUID map[int]int
	closed bool
}

// Subscribe starts an event stream for user uid's sessions.
func (b *Broker) Subscribe(uid int) (*Subscription, error) {
	c := make(chan Event, 64)
	s := &Subscription{C: c, c: c, uid: uid, ackc: make(chan struct{}), dead: make(chan struct{})}
	h := &b.events
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("broker: shutting down")
	}
	if h.subs == nil {
		h.subs, h.perUID = map[*Subscription]bool{}, map[int]int{}
	}
	if h.perUID[uid] >= maxStreamsPerUser {
		return nil, fmt.Errorf("broker: uid %d already has %d event streams (session mounts), the most one user may have: %w", uid, maxStreamsPerUser, errTooManyStreams)
	}
	h.subs[s] = true
	h.perUID[uid]++
	return s, nil
}

// count returns how many event streams are open: the session mounts
// connected.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Unsubscribe ends an event stream.
func (b *Broker) Unsubscribe(s *Subscription) {
	h := &b.events
	h.mu.Lock()
	h.dropLocked(s)
	h.mu.Unlock()
}

// dropLocked ends subscription s. Callers hold h.mu.
func (h *hub) dropLocked(s *Subscription) {
	if h.subs[s] {
		delete(h.subs, s)
		h.perUID[s.uid]--
		if h.perUID[s.uid] == 0 {
			delete(h.perUID, s.uid)
		}
		close(s.dead)
	}
}

// Close ends every event stream and refuses new ones, so that nothing
// waits for a session while the broker shuts down, and stops refreshing
// ahead.
func (b *Broker) Close() {
	b.unwatch()
	b.mu.Lock()
	for _, creds := range b.users {
		for _, cr := range creds {
			stopAhead(cr)
		}
	}
	b.mu.Unlock()
	h := &b.events
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		h.dropLocked(s)
	}
}

// publish sends an event to the sessions of user uid (every user when uid
// is -1) and waits until each has acknowledged it, or until AckTimeout has
// passed since publish began, whichever is first; sessions that did not
// acknowledge by then are dropped. When publish returns, no live session
// serves what the event made stale.
func (b *Broker) publish(uid int, kind EventKind, guid string) {
	b.send(uid, kind, guid, true)
}

// notify sends an event like publish but does not wait for
// acknowledgements: for changes that make nothing unsafe to keep (a
// refreshed token's details), only out of date.
func (b *Broker) notify(uid int, kind EventKind, guid string) {
	b.send(uid, kind, guid, false)
}

func (b *Broker) send(uid int, kind EventKind, guid string, wait bool) {
	h := &b.events
	type waiter struct {
		s   *Subscription
		seq uint64
	}
	var waiting []waiter
	h.mu.Lock()
	for s := range h.subs {
		if uid != -1 && s.uid != uid {
			continue
		}
		select {
		case s.c <- Event{Seq: s.seq + 1, Kind: kind, GUID: guid}:
			s.seq++
			waiting = append(waiting, waiter{s, s.seq})
		default:
			if wait {
				// The session is not keeping up with changes it must
				// act on: drop it (it keeps nothing until it is back).
				h.dropLocked(s)
			}
			// An update it misses only delays the new token for new
			// opens: what it keeps stays valid until its refresh time.
		}
	}
	h.mu.Unlock()
	if len(waiting) == 0 || !wait {
		return
	}
	deadline := time.NewTimer(AckTimeout)
	defer deadline.Stop()
	expired := false
	for _, w := range waiting {
		for !expired {
			done, ackc := w.s.acked(w.seq)
			if done {
				break
			}
			select {
			case <-ackc:
				continue
			case <-w.s.dead:
			case <-deadline.C:
				expired = true
			}
			break
		}
		if done, _ := w.s.acked(w.seq); !done && expired {
			b.log.Warn("a session did not acknowledge a change in time; dropping its event stream", "uid", w.s.uid)
			b.Unsubscribe(w.s)
		}
	}
}
