package session

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

	"github.com/oauthfs/oauthfs/credential"
)

// Cached is a broker for the filesystem of a session mount: it asks the
// broker for tokens over the socket, and reuses a token until the time the
// broker says it would stop handing it out (refresh_at), but only while
// its event stream is up. The broker pushes an event on every sign-in,
// sign-out, revocation and reload and waits for Cached to drop what the
// event names before the change completes, so the next open after
// 'oauthfs logout' returns sees the sign-out. When the stream is down,
// nothing is cached and every open asks the broker (and fails with EIO if
// it is gone).
//
// Cached is safe for concurrent use by multiple goroutines. Cached tokens
// are credential.Tokens: their bytes rest in memguard enclaves.
type Cached struct {
	*Client
	log *slog.Logger
	now func() time.Time

	mu     sync.Mutex // guards the fields below
	live   bool       // the event stream is up
	gen    uint64     // bumped by every invalidation
	tokens map[string]cachedToken
}

type cachedToken struct {
	tok   *credential.Token
	until time.Time
}

// maxCache bounds how long a token without expiry is reused between
// events, as a safety net.
const maxCache = 5 * time.Minute

// NewCached returns a caching client for the broker at socket. Run Watch
// in a goroutine to keep its event stream up; without it nothing is
// cached.
func NewCached(c *Client, log *slog.Logger) *Cached {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cached{Client: c, log: log, now: time.Now, tokens: map[string]cachedToken{}}
}

// Token returns a valid access token: from the cache while allowed, from
// the broker otherwise.
func (s *Cached) Token(ctx context.Context, guid string) (*credential.Token, error) {
	now := s.now()
	s.mu.Lock()
	if e, ok := s.tokens[guid]; ok && s.live && now.Before(e.until) {
		s.mu.Unlock()
		return e.tok, nil
	}
	gen := s.gen
	s.mu.Unlock()
	tok, refreshAt, err := s.token(ctx, guid)
	if err != nil {
		return nil, err
	}
	until := now.Add(maxCache)
	if !refreshAt.IsZero() && refreshAt.Before(until) {
		until = refreshAt
	}
	s.mu.Lock()
	if s.live && s.gen == gen && now.Before(until) {
		s.tokens[guid] = cachedToken{tok: tok, until: until}
	}
	s.mu.Unlock()
	return tok, nil
}

// invalidate drops the cached token of guid, or every cached token when
// guid is empty.
func (s *Cached) invalidate(guid string, live bool) {
	s.mu.Lock()
	s.gen++
	if guid == "" {
		clear(s.tokens)
	} else {
		delete(s.tokens, guid)
	}
	s.live = live
	s.mu.Unlock()
}

// Live reports whether the event stream is up.
func (s *Cached) Live() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.live }

// Watch keeps the event stream open until ctx ends, reconnecting with a
// backoff when the broker goes away.
func (s *Cached) Watch(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.watchOnce(ctx)
		s.invalidate("", false)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 100 * time.Millisecond
		}
		s.log.Debug("event stream down; retrying", "socket", s.socket, "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// watchOnce runs one event stream until it breaks.
func (s *Cached) watchOnce(ctx context.Context) error {
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://oauthfs"+PathEvents, pr)
	if err != nil {
		return err
	}
	resp, err := s.stream.Do(req)
	if err != nil {
		return s.transportError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &remoteErr{Code: "unavailable", Message: "event stream refused: HTTP " + strconv.Itoa(resp.StatusCode), sentinel: credential.ErrUnavailable}
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return err
		}
		switch ev.Kind {
		case EventHello:
			s.invalidate("", true)
			s.log.Debug("event stream up", "socket", s.socket)
			continue
		case EventChanged:
			s.invalidate(ev.GUID, true)
		default: // reload, or anything newer: drop everything
			s.invalidate("", true)
		}
		if _, err := io.WriteString(pw, strconv.FormatUint(ev.Seq, 10)+"\n"); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}
