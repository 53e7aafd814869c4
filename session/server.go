package session

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/api"
	"github.com/oauthfs/oauthfs/audit"
	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/internal/unixsock"
	"github.com/oauthfs/oauthfs/internal/wirejson"
	"github.com/oauthfs/oauthfs/provider"
	"github.com/oauthfs/oauthfs/signin"
	"github.com/oauthfs/oauthfs/store"
)

// maxBody bounds request bodies on the session socket.
const maxBody = 64 << 10

// Timeouts of the session socket. The event stream, which lives as long as its
// session, clears the read and write deadlines for itself.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = maxWait + 30*time.Second // a sign-in's long poll fits
	idleTimeout       = 60 * time.Second         // session mounts reuse connections
)

// maxConnsPerUser caps one user's connections to the session socket (each
// session mount keeps a few).
const maxConnsPerUser = 256

// bodyPagesPerUser caps the locked pages one user's request bodies hold
// at once (four bodies of the largest size); bodyTimeout bounds how long a
// body may take to arrive.
const (
	bodyPagesPerUser = 4 * maxBody / pageSize
	bodyTimeout      = 10 * time.Second
	pageSize         = 4096
)

// answerPagesPerUser caps the locked pages one user's token answers hold
// at once, while they are written; answerTimeout bounds how long the
// caller may take to read one. A caller that does not read its answers
// cannot hold locked memory other users' reads and refreshes need.
const (
	answerPagesPerUser = bodyPagesPerUser
	answerTimeout      = 5 * time.Second
)

// quota counts, per uid, locked pages held (by request bodies, or by
// token answers). It is safe for concurrent use.
type quota struct {
	mu   sync.Mutex
	held map[int]int64
}

// take reserves n pages for uid, or reports false when that would pass
// limit pages.
func (q *quota) take(uid int, n, limit int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held == nil {
		q.held = map[int]int64{}
	}
	if q.held[uid]+n > limit {
		return false
	}
	q.held[uid] += n
	return true
}

func (q *quota) give(uid int, n int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held[uid] -= n; q.held[uid] <= 0 {
		delete(q.held, uid)
	}
}

// Server serves the session API (docs/api.md) on a Unix socket. The
// caller's identity is its uid from SO_PEERCRED; a caller only ever sees
// and uses its own credentials. A Server is safe for concurrent use.
type Server struct {
	B      *broker.Broker
	SignIn *signin.Table // nil: sign-in is not offered
	// Owner, when >= 0, is the only uid allowed to connect (the embedded
	// broker of one user's mount). -1 allows every uid, each to its own
	// credentials (the system daemon).
	Owner int
	Log   *slog.Logger
	// Version is the build's version, for GET /v1/info.
	Version string

	bodies  quota // locked pages of request bodies, per uid
	answers quota // locked pages of token answers being written, per uid

	mu sync.Mutex
	hs *http.Server // set by Serve
}

// Close stops serving: the listener and every connection, event streams
// included, are closed.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hs == nil {
		return nil
	}
	return s.hs.Close()
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Serve answers session API requests on l until l is closed. Each peer uid
// holds at most maxConnsPerUser connections.
func (s *Server) Serve(l net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ConnContext:       unixsock.ConnContext,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log().Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.hs = hs
	s.mu.Unlock()
	err := hs.Serve(unixsock.CapConns(l, maxConnsPerUser, true, s.log()))
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// route is one endpoint of the session API: "METHOD path" and its handler.
type route struct {
	pattern string
	handler http.HandlerFunc
}

// routes are the session API's endpoints; docs/api.md has a section for
// each (a test checks).
func (s *Server) routes() []route {
	return []route{
		{"GET " + api.PathInfo, s.info},
		{"GET " + api.PathIntegrations, s.list},
		{"GET " + api.PathIntegration, s.get},
		{"GET " + api.PathToken, s.token},
		{"PUT " + api.PathCredentials, s.put},
		{"DELETE " + api.PathCredentials, s.forget},
		{"POST " + api.PathLogin, s.login},
		{"POST " + api.PathDeviceLogin, s.deviceLogin},
		{"GET " + api.PathLoginStatus, s.loginStatus},
		{"DELETE " + api.PathLoginStatus, s.loginCancel},
		{"POST " + api.PathEvents, s.events},
		{"POST " + api.PathSettings, s.settingsLink},
		{"DELETE " + api.PathSettings, s.settingsEnd},
	}
}

// Handler returns the session API's HTTP handler. Requests must carry a
// peer uid from [Serve]'s connection context.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routes() {
		mux.HandleFunc(r.pattern, r.handler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, ok := unixsock.Peer(r.Context())
		switch {
		case !ok:
			writeError(w, fmt.Errorf("session: the caller's credentials could not be read: %w", credential.ErrPermission))
			return
		case s.Owner >= 0 && uid != s.Owner:
			s.log().Warn("refused a session API caller who is not the owner", "uid", uid, "owner", s.Owner)
			writeError(w, fmt.Errorf("session: this broker serves uid %d only: %w", s.Owner, credential.ErrPermission))
			return
		}
		if r.URL.Path != api.PathEvents { // the event stream's body is a stream of acks
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		mux.ServeHTTP(w, r)
	})
}

func uidOf(r *http.Request) int { uid, _ := unixsock.Peer(r.Context()); return uid }

// info answers GET /v1/info: the broker's request timeout, which session
// mounts bound their calls by, and its version.
func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Info{RequestTimeoutMillis: s.B.Timeout().Milliseconds(), Version: s.Version})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.B.Integrations(uidOf(r)))
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	m, err := s.B.Integration(uidOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// token answers GET /v1/integrations/{id}/token:
//
//	{"access_token": "...", "expiry": "...", "obtained": "...", "refresh_at": "..."}
//
// refresh_at (null for a token without expiry) is the token's expiry less
// the refresh margin: a session may reuse it until then, as long as its
// event stream is up. The body is built in a locked buffer and
// written straight to the connection, which is then closed: the token
// never passes through net/http's buffers or a Go string, so no copy of it
// outlives the request (docs/security.md).
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	uid := uidOf(r)
	q, err := api.ParseTokenQuery(r.URL.Query())
	if err != nil {
		writeError(w, badRequest("%v", err))
		return
	}
	var t *credential.Token
	if q.IsZero() {
		t, err = s.B.Token(r.Context(), uid, r.PathValue("id"))
	} else {
		t, err = s.B.TokenFor(r.Context(), uid, r.PathValue("id"), broker.TokenRequest{
			Variant: q.Variant, Target: provider.Target{Resource: q.Resource, Scopes: q.Scopes}, MinValid: q.MinValid, Force: q.Force})
	}
	ev := audit.Event{Event: "token", Via: "socket", Result: result(err), PID: unixsock.PeerPID(r.Context())}
	switch {
	case errors.Is(err, credential.ErrNotFound):
		// Whatever the caller asked for, said the same way, so that
		// repeats merge into one line (the id is the caller's own text).
		ev.Reason = "no integration has that name or guid"
	case err != nil:
		ev.Reason = err.Error()
	}
	s.B.Record(uid, r.PathValue("id"), ev)
	if err != nil {
		writeError(w, err)
		return
	}
	scopes := t.Scopes()
	if scopes == nil {
		scopes = []string{}
	}
	tail := make([]byte, 0, 256)
	tail = append(tail, `,"token_type":`...)
	tail, _ = jsonAppend(tail, t.Type())
	tail = append(tail, `,"scopes":`...)
	tail, _ = jsonAppend(tail, scopes)
	tail = append(tail, `,"expiry":`...)
	tail = appendTime(tail, t.Expiry())
	tail = append(tail, `,"obtained":`...)
	tail = appendTime(tail, t.Obtained())
	tail = append(tail, `,"refresh_at":`...)
	tail = appendMillis(tail, s.B.RefreshAt(t))
	// The answer's locked memory counts against the caller's share
	// while it is written.
	var pages int64
	body, err := t.JSONObject(tail, func(size int) error {
		n := int64(size+pageSize-1) / pageSize
		if !s.answers.take(uid, n, answerPagesPerUser) {
			return fmt.Errorf("session: uid %d has %d KiB of token answers being written, the most one user may have; read the answers: %w",
				uid, answerPagesPerUser*pageSize>>10, credential.ErrUnavailable)
		}
		pages = n
		return nil
	})
	if pages > 0 {
		defer s.answers.give(uid, pages)
	}
	switch {
	case errors.Is(err, credential.ErrUnavailable):
		writeError(w, err)
		return
	case err != nil:
		writeError(w, fmt.Errorf("session: %w: %w", err, credential.ErrUnavailable))
		return
	}
	defer body.Destroy()
	writeRaw(w, http.StatusOK, body.Bytes())
}

// jsonAppend appends the JSON of v, which holds no secret, to b.
func jsonAppend(b []byte, v any) ([]byte, error) {
	j, err := json.Marshal(v)
	return append(b, j...), err
}

// writeRaw writes a JSON response with body straight to the connection
// (hijacked, then closed), bypassing net/http's buffers, which are
// recycled without being wiped. Where the connection cannot be taken over
// (a test's recorder), it writes normally.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	rc := http.NewResponseController(w)
	conn, brw, err := rc.Hijack()
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	defer conn.Close()
	brw.Writer.Reset(conn) // nothing of ours is buffered yet
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		status, http.StatusText(status), len(body))
	conn.SetWriteDeadline(time.Now().Add(answerTimeout))
	if _, err := io.WriteString(conn, head); err == nil {
		conn.Write(body)
	}
}

// appendTime appends t as a JSON RFC 3339 string, or null.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	return append(append(append(b, '"'), credential.FormatTime(t)...), '"')
}

// appendMillis is appendTime to the millisecond: a session keeps a token
// until then, and a whole second less would cut its time short.
func appendMillis(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	return append(t.UTC().AppendFormat(append(b, '"'), "2006-01-02T15:04:05.000Z"), '"')
}

// events streams change events to a session (POST /v1/events) and reads
// its acknowledgements, one sequence number per line, from the request
// body: the connection is full duplex. The first event is a "hello" that
// tells the session its stream is live.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil {
		writeError(w, fmt.Errorf("session: event stream: %w", err))
		return
	}
	sub, err := s.B.Subscribe(uidOf(r))
	if err != nil {
		s.log().Warn("event stream refused", "uid", uidOf(r), "err", err)
		writeError(w, fmt.Errorf("%w: %w", err, credential.ErrUnavailable))
		return
	}
	defer s.B.Unsubscribe(sub)
	// The stream lives as long as its session: no read or write deadline.
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	go func() {
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			if n, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
				sub.Ack(n)
			}
		}
		s.B.Unsubscribe(sub) // the session went away
	}()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	if enc.Encode(api.Event{Kind: api.EventHello}) != nil || rc.Flush() != nil {
		return
	}
	for {
		select {
		case ev := <-sub.C:
			rc.SetWriteDeadline(time.Now().Add(broker.AckTimeout))
			if enc.Encode(api.Event{Seq: ev.Seq, Kind: api.EventKind(ev.Kind), GUID: ev.GUID}) != nil || rc.Flush() != nil {
				return
			}
			rc.SetWriteDeadline(time.Time{})
		case <-sub.Dead():
			return
		case <-r.Context().Done():
			return
		}
	}
}

// put answers PUT /v1/integrations/{id}/credentials: tokens a user
// obtained elsewhere, stored as if they had signed in. The body is a JSON
// object with exactly the keys access_token, refresh_token, expires_in
// (seconds; 0 = no expiry) and scope, all but access_token optional. It is
// read into a locked buffer, and the tokens never become Go strings.
func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	// A body's locked pages count against its user's quota, so that one
	// user sending slow bodies cannot spend the locked memory every other
	// user's reads need.
	if r.ContentLength > maxBody {
		writeError(w, badRequest("the body is larger than %d KiB", maxBody>>10))
		return
	}
	pages := max(0, (r.ContentLength+pageSize-1)/pageSize)
	if !s.bodies.take(uidOf(r), pages, bodyPagesPerUser) {
		writeError(w, fmt.Errorf("session: uid %d has %d KiB of request bodies in progress, the most one user may have: %w",
			uidOf(r), bodyPagesPerUser*pageSize>>10, credential.ErrUnavailable))
		return
	}
	w, body, err := readBody(w, r)
	if hw, ok := w.(*hijackedWriter); ok {
		defer hw.finish()
	}
	if err != nil {
		s.bodies.give(uidOf(r), pages)
		writeError(w, err)
		return
	}
	cr, err := parseCredentials(body.Bytes())
	body.Destroy() // before the save, which may wait
	s.bodies.give(uidOf(r), pages)
	if err != nil {
		writeError(w, err)
		return
	}
	if cr.expiresIn > 0 {
		cr.c.Expiry = credential.ExpiryFrom(cr.expiresIn, s.B.Now())
	}
	scopes := cr.c.Scopes
	err = s.B.Import(uidOf(r), r.PathValue("id"), cr.c)
	s.B.Record(uidOf(r), r.PathValue("id"), audit.Event{Event: "sign_in", Via: "import", Scopes: scopes, Result: result(err)})
	if err != nil {
		writeError(w, err)
		return
	}
	m, _ := s.B.Integration(uidOf(r), r.PathValue("id"))
	writeJSON(w, http.StatusOK, m)
}

// readBody reads a request body into a locked buffer the caller destroys.
// On a real connection it takes the connection over: bytes net/http
// buffered ahead are copied out and wiped in its buffer, the rest is read
// straight from the socket, and the answer goes through the returned
// writer, which the caller finishes.
func readBody(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *secmem.Buffer, error) {
	n := r.ContentLength
	switch {
	case n < 0:
		return w, nil, badRequest("the body needs a Content-Length")
	case n > maxBody:
		return w, nil, badRequest("the body is larger than %d KiB", maxBody>>10)
	case n == 0:
		return w, nil, badRequest("the body is empty; send a JSON object")
	}
	buf, err := secmem.NewBuffer(int(n))
	if err != nil {
		return w, nil, fmt.Errorf("session: %w: %w", err, credential.ErrUnavailable)
	}
	conn, brw, herr := http.NewResponseController(w).Hijack()
	if herr != nil { // a test's recorder
		if _, err := io.ReadFull(r.Body, buf.Bytes()); err != nil {
			buf.Destroy()
			return w, nil, badRequest("the body could not be read: %v", err)
		}
		return w, buf, nil
	}
	hw := &hijackedWriter{conn: conn, h: http.Header{}}
	k := min(brw.Reader.Buffered(), int(n))
	if k > 0 {
		p, _ := brw.Reader.Peek(k)
		copy(buf.Bytes(), p)
		clear(p) // wipes net/http's buffer in place
		brw.Reader.Discard(k)
	}
	conn.SetReadDeadline(time.Now().Add(bodyTimeout))
	if _, err := io.ReadFull(conn, buf.Bytes()[k:]); err != nil {
		buf.Destroy()
		return hw, nil, badRequest("the body could not be read: %v", err)
	}
	return hw, buf, nil
}

// hijackedWriter answers on a connection taken over from net/http: it
// collects the (non-secret) answer and writes it with finish, then closes
// the connection.
type hijackedWriter struct {
	conn   net.Conn
	h      http.Header
	status int
	body   []byte
}

func (w *hijackedWriter) Header() http.Header { return w.h }

func (w *hijackedWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *hijackedWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, b...)
	return len(b), nil
}

func (w *hijackedWriter) finish() {
	defer w.conn.Close()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	for k, vs := range w.h {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n", len(w.body))
	w.conn.SetWriteDeadline(time.Now().Add(readTimeout))
	if _, err := io.WriteString(w.conn, b.String()); err == nil {
		w.conn.Write(w.body)
	}
}

// credentialsRequest is a parsed PUT body. The byte slices of c are wiped
// by Broker.Put.
type credentialsRequest struct {
	c         credential.Tokens
	expiresIn int64
}

// parseCredentials parses a PUT body strictly: one JSON object, keys
// exactly as documented (case matters), nothing after it. Token values go
// from body into new slices without passing through a Go string.
func parseCredentials(body []byte) (credentialsRequest, error) {
	const want = "the body must be one JSON object with access_token, and optionally refresh_token, expires_in and scope"
	var out credentialsRequest
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return out, badRequest("%s: %s", want, jsonProblem(err))
	}
	defer func() {
		for _, v := range fields {
			memguard.WipeBytes(v)
		}
	}()
	for k := range fields {
		if !slices.Contains(api.CredentialsKeys, k) {
			return out, badRequest("%s: unknown field %q (names are case-sensitive)", want, printableKey(k))
		}
	}
	str := func(key string) ([]byte, error) {
		raw, ok := fields[key]
		if !ok || string(raw) == "null" {
			return nil, nil
		}
		n, err := wirejson.UnquotedLen(raw)
		if err != nil {
			return nil, badRequest("%s: %s must be a string", want, key)
		}
		if n > credential.MaxTokenLen {
			return nil, badRequest("%s is longer than %d KiB", key, credential.MaxTokenLen>>10)
		}
		v := make([]byte, n)
		wirejson.Unquote(v, raw)
		return v, nil
	}
	var err error
	if out.c.Access, err = str("access_token"); err != nil {
		return out, err
	}
	if out.c.Refresh, err = str("refresh_token"); err != nil {
		memguard.WipeBytes(out.c.Access)
		return out, err
	}
	if out.c.IDToken, err = str("id_token"); err != nil {
		memguard.WipeBytes(out.c.Access)
		memguard.WipeBytes(out.c.Refresh)
		return out, err
	}
	fail := func(err error) (credentialsRequest, error) {
		memguard.WipeBytes(out.c.Access)
		memguard.WipeBytes(out.c.Refresh)
		memguard.WipeBytes(out.c.IDToken)
		return credentialsRequest{}, err
	}
	if raw, ok := fields["token_type"]; ok {
		var typ string
		if err := json.Unmarshal(raw, &typ); err != nil || typ == "" || len(typ) > 32 || printable.Code(typ, 32) != typ {
			return fail(badRequest("token_type must be a short string of printable characters, such as \"Bearer\""))
		}
		out.c.TokenType = typ
	}
	if len(out.c.Access) == 0 {
		return fail(badRequest("access_token must be a non-empty string"))
	}
	if raw, ok := fields["expires_in"]; ok {
		if err := json.Unmarshal(raw, &out.expiresIn); err != nil || out.expiresIn < 0 {
			return fail(badRequest("expires_in must be a whole number of seconds, 0 or more"))
		}
	}
	if raw, ok := fields["scope"]; ok {
		var scope string
		if err := json.Unmarshal(raw, &scope); err != nil {
			return fail(badRequest("scope must be a string of space-separated scopes"))
		}
		out.c.Scopes = strings.Fields(printable.String(scope, provider.MaxScopes))
	}
	return out, nil
}

func printableKey(k string) string { return printable.String(k, 64) }

func (s *Server) forget(w http.ResponseWriter, r *http.Request) {
	res, err := s.B.Logout(r.Context(), uidOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.LogoutResult{SignedOut: res.SignedOut, Revoked: res.Revoked, RevocationError: res.RevocationError})
}

// errNoSignIn is the error of the sign-in endpoints of a server without
// sign-in.
var errNoSignIn = fmt.Errorf("session: this broker offers no sign-in: %w", credential.ErrSignIn)

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	s.withSignIn(w, func(t *signin.Table) (any, error) {
		l, err := t.Start(uidOf(r), r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return api.SignIn{ID: l.ID, URL: l.URL, Expires: l.Expires, Name: l.Name, GUID: l.GUID}, nil
	})
}

func (s *Server) deviceLogin(w http.ResponseWriter, r *http.Request) {
	s.withSignIn(w, func(t *signin.Table) (any, error) {
		l, err := t.StartDevice(r.Context(), uidOf(r), r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return api.DeviceSignIn{ID: l.ID, VerificationURI: l.VerificationURI, VerificationURIComplete: l.VerificationURIComplete,
			UserCode: l.UserCode, Expires: l.Expires, Name: l.Name, GUID: l.GUID}, nil
	})
}

func (s *Server) settingsLink(w http.ResponseWriter, r *http.Request) {
	s.withSignIn(w, func(t *signin.Table) (any, error) {
		l, err := t.SettingsLink(uidOf(r))
		if err != nil {
			return nil, err
		}
		return api.SettingsLink{URL: l.URL, Expires: l.Expires}, nil
	})
}

func (s *Server) settingsEnd(w http.ResponseWriter, r *http.Request) {
	s.withSignIn(w, func(t *signin.Table) (any, error) { return api.SettingsEnded{Ended: t.EndSettings(uidOf(r))}, nil })
}

// withSignIn answers with what f makes of the sign-in table, or with
// errNoSignIn on a server without sign-in.
func (s *Server) withSignIn(w http.ResponseWriter, f func(*signin.Table) (any, error)) {
	if s.SignIn == nil {
		writeError(w, errNoSignIn)
		return
	}
	v, err := f(s.SignIn)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// maxWait bounds a long poll on a sign-in.
const maxWait = 60 * time.Second

func (s *Server) loginStatus(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	wait := time.Duration(0)
	if v := r.URL.Query().Get("wait"); v != "" {
		sec, err := strconv.Atoi(v)
		if err != nil || sec < 0 {
			writeError(w, badRequest("wait must be a whole number of seconds"))
			return
		}
		wait = min(time.Duration(sec)*time.Second, maxWait)
	}
	var cancel context.CancelFunc
	if wait > 0 {
		ctx, cancel = context.WithTimeout(ctx, wait)
	} else {
		ctx, cancel = context.WithCancel(ctx)
		cancel() // answer at once
	}
	defer cancel()
	if s.SignIn == nil {
		writeError(w, errNoSignIn)
		return
	}
	st, err := s.SignIn.Wait(ctx, uidOf(r), r.PathValue("login"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.SignInStatus{Status: wireStatus(st.Status), Message: st.Message, Name: st.Name, GUID: st.GUID, Account: st.Account})
}

// wireStatus is how the protocol says sign-in state st.
func wireStatus(st signin.State) string {
	switch st {
	case signin.SignedIn:
		return api.SignInSignedIn
	case signin.Failed:
		return api.SignInFailed
	default:
		return api.SignInPending
	}
}

func (s *Server) loginCancel(w http.ResponseWriter, r *http.Request) {
	if s.SignIn == nil {
		writeError(w, errNoSignIn)
		return
	}
	if err := s.SignIn.Cancel(uidOf(r), r.PathValue("login")); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"cancelled": true})
}

// jsonProblem describes a JSON decoding error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &mb):
		return fmt.Sprintf("the body is larger than %d KiB", mb.Limit>>10)
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return "it is not a JSON object, or a field has the wrong type"
	default:
		return "malformed JSON"
	}
}

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), credential.ErrBadRequest)
}

func writeError(w http.ResponseWriter, err error) {
	c := codeOf(err)
	writeJSON(w, c.Status, api.ErrorAnswer{Error: c.Code, Message: err.Error()})
}

// errorIs says which errors the server answers with each code of
// api.ErrorCodes, in order: the first that matches wins, and an error
// none matches is "unavailable".
var errorIs = []struct {
	code string
	is   func(error) bool
}{
	{"not_found", is(credential.ErrNotFound)},
	{"not_signed_in", is(credential.ErrNotSignedIn)},
	{"expired", is(credential.ErrExpired)},
	{"forbidden", is(credential.ErrPermission)},
	{"bad_request", is(credential.ErrBadRequest)},
	{"sign_in_failed", is(credential.ErrSignIn)},
	{"store", is(store.ErrUnusable)},
	{"timeout", func(err error) bool {
		return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	}},
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

// codeOf returns the row of api.ErrorCodes that the server answers err
// with.
func codeOf(err error) api.ErrorCode {
	code := "unavailable"
	for _, e := range errorIs {
		if e.is(err) {
			code = e.code
			break
		}
	}
	for _, c := range api.ErrorCodes {
		if c.Code == code {
			return c
		}
	}
	return api.ErrorCodes[len(api.ErrorCodes)-1]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// result is an audit result of err: ok or failed.
func result(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}
