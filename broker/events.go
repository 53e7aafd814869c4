package broker

import (
	"sync"
	"time"

	"github.com/oauthfs/oauthfs/broker/api"
)

// Event is api.Event.
type Event = api.Event

// ackTimeout bounds how long a change waits for sessions to acknowledge
// its event. A session that does not answer in time is dropped (its
// stream closes, and a client clears its whole cache when that happens).
const ackTimeout = 2 * time.Second

// Subscription is one session's event stream. Events arrive on C; the
// session calls Ack with each event's Seq once it has acted on it.
type Subscription struct {
	C     <-chan Event
	c     chan Event
	uid   int
	mu    sync.Mutex
	acked uint64
	ackc  chan struct{} // closed and replaced on every Ack
	dead  chan struct{} // closed when the hub drops the subscription
}

// Ack records that the session has acted on every event up to seq.
func (s *Subscription) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.acked {
		s.acked = seq
		close(s.ackc)
		s.ackc = make(chan struct{})
	}
}

// Dead is closed when the hub has dropped the subscription.
func (s *Subscription) Dead() <-chan struct{} { return s.dead }

// hub fans events out to subscriptions and waits for their acks. It is
// safe for concurrent use.
type hub struct {
	mu   sync.Mutex // guards seq and subs
	seq  uint64
	subs map[*Subscription]bool
}

// Subscribe starts an event stream for user uid's sessions.
func (b *Broker) Subscribe(uid int) *Subscription {
	c := make(chan Event, 64)
	s := &Subscription{C: c, c: c, uid: uid, ackc: make(chan struct{}), dead: make(chan struct{})}
	b.events.mu.Lock()
	if b.events.subs == nil {
		b.events.subs = map[*Subscription]bool{}
	}
	b.events.subs[s] = true
	b.events.mu.Unlock()
	return s
}

// Unsubscribe ends an event stream.
func (b *Broker) Unsubscribe(s *Subscription) {
	b.events.mu.Lock()
	if b.events.subs[s] {
		delete(b.events.subs, s)
		close(s.dead)
	}
	b.events.mu.Unlock()
}

// publish sends an event to the sessions of user uid (every user when uid
// is -1) and waits until each has acknowledged it, or ackTimeout passes.
// When publish returns, no live session serves what the event made stale.
func (b *Broker) publish(uid int, kind, guid string) {
	h := &b.events
	h.mu.Lock()
	h.seq++
	ev := Event{Seq: h.seq, Kind: kind, GUID: guid}
	var waiting []*Subscription
	for s := range h.subs {
		if uid != -1 && s.uid != uid {
			continue
		}
		select {
		case s.c <- ev:
			waiting = append(waiting, s)
		default: // the session is not keeping up: drop it
			delete(h.subs, s)
			close(s.dead)
		}
	}
	h.mu.Unlock()
	deadline := time.NewTimer(ackTimeout)
	defer deadline.Stop()
	for _, s := range waiting {
		for {
			s.mu.Lock()
			done, ackc := s.acked >= ev.Seq, s.ackc
			s.mu.Unlock()
			if done {
				break
			}
			select {
			case <-ackc:
				continue
			case <-s.dead:
			case <-deadline.C:
				b.log.Warn("a session did not acknowledge a change in time; dropping its event stream", "uid", s.uid)
				b.Unsubscribe(s)
			}
			break
		}
	}
}
