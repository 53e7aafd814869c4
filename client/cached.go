package client

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/oauthfs/oauthfs/api"
	"github.com/oauthfs/oauthfs/credential"
)

// Cached is the source of a session mount's filesystem (a
// fusefs.Source): it asks the broker for tokens over the socket, and keeps
// a token until the time the broker says it would stop handing it out
// (refresh_at), but only while its event stream is up. The broker pushes
// an event on every sign-in, sign-out, refresh, revocation and reload, and
// for all but refreshes waits for Cached, and the filesystem it serves,
// to drop what the event names before the change completes: the next read
// after 'oauthfs logout' returns sees the sign-out. When the stream is
// down nothing is kept, here or in the kernel, and every read asks the
// broker (and fails with EIO if it is gone).
//
// Cached is safe for concurrent use by multiple goroutines. Tokens kept
// are credential.Tokens: their bytes rest in memguard enclaves.
type Cached struct {
	client *Client
	log    *slog.Logger
	now    func() time.Time

	mu     sync.Mutex // guards the fields below
	live   bool       // the event stream is up
	gen    uint64     // bumped by every invalidation
	tokens map[cacheKey]cachedToken
}

// cacheKey names a kept token: an integration's main token (variant "")
// or one of its variants.
type cacheKey struct{ guid, variant string }

type cachedToken struct {
	tok   *credential.Token
	until time.Time
}

// maxCache bounds how long a token without expiry is kept between events,
// as a safety net.
const maxCache = 5 * time.Minute

// NewCached returns a caching client for the broker behind c. Nothing is
// kept until Watch runs and its event stream is up.
func NewCached(c *Client, log *slog.Logger) *Cached {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cached{client: c, log: log, now: time.Now, tokens: map[cacheKey]cachedToken{}}
}

// Integrations lists every integration, as the broker sees the caller.
func (s *Cached) Integrations(ctx context.Context) ([]credential.Integration, error) {
	return s.client.Integrations(ctx)
}

// Integration describes one integration by guid or name.
func (s *Cached) Integration(ctx context.Context, id string) (credential.Integration, error) {
	return s.client.Integration(ctx, id)
}

// Token returns a valid access token (the main one, or variant's), kept
// or from the broker (which refreshes it first when needed), and until
// when it may be kept: its refresh time, and not at all (the zero time)
// while the event stream is down. A token without expiry is kept for at
// most maxCache.
func (s *Cached) Token(ctx context.Context, guid, variant string) (*credential.Token, time.Time, error) {
	if tok, until := s.Peek(guid, variant); tok != nil {
		return tok, until, nil
	}
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	tok, refreshAt, err := s.client.token(ctx, guid, api.TokenQuery{Variant: variant})
	if err != nil {
		return nil, time.Time{}, err
	}
	now := s.now()
	until := now.Add(maxCache)
	if !refreshAt.IsZero() && refreshAt.Before(until) {
		until = refreshAt
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.live || s.gen != gen || !now.Before(until) {
		return tok, time.Time{}, nil // a change came meanwhile, or nothing may be kept
	}
	s.tokens[cacheKey{guid, variant}] = cachedToken{tok: tok, until: until}
	return tok, until, nil
}

// Peek returns the kept token of guid (or of its variant) and until when
// it may be kept, or nil. Like the broker, it stops handing a token out a
// hand-over slack before it must be dropped.
func (s *Cached) Peek(guid, variant string) (*credential.Token, time.Time) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.tokens[cacheKey{guid, variant}]; ok && s.live && now.Before(e.until.Add(-credential.HandOverSlack(e.tok))) {
		return e.tok, e.until
	}
	return nil, time.Time{}
}

// Touch does nothing: a token is kept here only after a read fetched it
// from the broker, which counts that as the read that makes it refresh
// the token ahead.
func (s *Cached) Touch(string) {}

// invalidate drops the kept tokens of guid, or every kept token when
// guid is empty.
func (s *Cached) invalidate(guid string, live bool) {
	s.mu.Lock()
	s.gen++
	for k := range s.tokens {
		if guid == "" || k.guid == guid {
			delete(s.tokens, k)
		}
	}
	s.live = live
	s.mu.Unlock()
}

// Live reports whether the event stream is up.
func (s *Cached) Live() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.live }

// Watch keeps the event stream open until ctx ends, reconnecting with a
// backoff when the broker goes away, and calls f with every change before
// acknowledging its event: f drops what the kernel caches. When the stream
// breaks, or comes up, f hears that anything may have changed.
func (s *Cached) Watch(ctx context.Context, f func(credential.Change)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.watchOnce(ctx, f)
		// The filesystem drops what the kernel keeps before Live says
		// the stream is down.
		f(credential.Change{Revoke: true, Unwatched: true})
		s.invalidate("", false)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 100 * time.Millisecond
		}
		s.log.Debug("event stream down; retrying", "socket", s.client.socket, "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// watchOnce runs one event stream until it breaks.
func (s *Cached) watchOnce(ctx context.Context, f func(credential.Change)) error {
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://oauthfs"+api.PathEvents, pr)
	if err != nil {
		return err
	}
	resp, err := s.client.stream.Do(req)
	if err != nil {
		return s.client.transportError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &remoteErr{Code: "unavailable", Message: "event stream refused: HTTP " + strconv.Itoa(resp.StatusCode), sentinel: credential.ErrUnavailable}
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return err
		}
		c := ev.Change()
		if ev.Kind == api.EventHello {
			// Live only once the filesystem has dropped what it kept
			// while the stream was down.
			f(c)
			s.invalidate("", true)
			s.log.Debug("event stream up", "socket", s.client.socket)
			continue
		}
		// An update (a refresh, or a failed one) makes nothing kept
		// unsafe: a kept token may be kept until its own refresh time,
		// and the mount that asked for the refresh keeps the new one.
		// Only what the filesystem shows of the integration changes.
		if ev.Kind != api.EventUpdated {
			s.invalidate(c.GUID, true)
		}
		f(c)
		if _, err := io.WriteString(pw, strconv.FormatUint(ev.Seq, 10)+"\n"); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}
