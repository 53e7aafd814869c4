package broker

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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/internal/wirejson"
)

// maxBody bounds request bodies on the session socket and the sign-in web
// server.
const maxBody = 64 << 10

// Timeouts of both servers. The event stream, which lives as long as its
// session, clears the read and write deadlines for itself.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = maxWait + 30*time.Second // a sign-in's long poll fits
	idleTimeout       = 60 * time.Second         // session mounts reuse connections
	webIdleTimeout    = 15 * time.Second         // browsers reconnect cheaply
)

// Connection caps: one user may hold maxConnsPerUser connections to the
// session socket (each session mount keeps a few); the sign-in web server,
// where callers have no uid, takes maxWebConns in all.
const (
	maxConnsPerUser = 256
	maxWebConns     = 512
)

// Server serves the session API (docs/api.md) on a Unix socket. The
// caller's identity is its uid from SO_PEERCRED; a caller only ever sees
// and uses its own credentials. A Server is safe for concurrent use.
type Server struct {
	B *Broker
	// Owner, when >= 0, is the only uid allowed to connect (the embedded
	// broker of one user's mount). -1 allows every uid, each to its own
	// credentials (the system daemon).
	Owner int
	Log   *slog.Logger

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

type peerKey struct{}

// peer returns the uid of the connection's peer, as recorded by
// connContext.
func peer(ctx context.Context) (int, bool) {
	uid, ok := ctx.Value(peerKey{}).(int)
	return uid, ok
}

// connContext records the peer's uid, which the listener read with
// SO_PEERCRED. A connection whose credentials could not be read gets no
// uid and every request is refused.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*capConn); ok && pc.uid >= 0 {
		return context.WithValue(ctx, peerKey{}, pc.uid)
	}
	return ctx
}

// PeerUID returns the uid of the process at the other end of a Unix
// socket connection, from SO_PEERCRED.
func PeerUID(c net.Conn) (int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1, errors.New("not a Unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

// capListener caps the connections it hands out: per peer uid on a Unix
// socket, in all (uid -1) elsewhere. A connection over the cap is closed
// at once, so one user's flood cannot take the file descriptors that
// other users' reads need.
type capListener struct {
	net.Listener
	max  int
	byID bool // count per peer uid
	log  *slog.Logger

	mu     sync.Mutex
	held   map[int]int
	warned map[int]time.Time
}

type capConn struct {
	net.Conn
	uid  int
	l    *capListener
	once sync.Once
}

func (c *capConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.held[c.uid]--; c.l.held[c.uid] <= 0 {
			delete(c.l.held, c.uid)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid := -1
		if l.byID {
			if uid, err = PeerUID(c); err != nil {
				uid = -2 // no credentials: refused by the handler
			}
		}
		l.mu.Lock()
		if l.held[uid] >= l.max {
			if time.Since(l.warned[uid]) > time.Minute {
				l.warned[uid] = time.Now()
				l.log.Warn("connection refused: too many open connections", "uid", uid, "max", l.max)
			}
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.held[uid]++
		l.mu.Unlock()
		return &capConn{Conn: c, uid: uid, l: l}, nil
	}
}

// CapConns wraps l so that each peer uid (perUser) or everyone together
// holds at most max connections.
func CapConns(l net.Listener, max int, perUser bool, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &capListener{Listener: l, max: max, byID: perUser, log: log, held: map[int]int{}, warned: map[int]time.Time{}}
}

// Listen creates the Unix socket at path with mode, and its directory
// with dirMode when it does not exist. An existing directory must belong
// to this user or root and not be writable by others, so nobody else can
// swap the socket. A socket left by a dead process is replaced; one that a
// live process still answers on is refused.
func Listen(path string, mode, dirMode os.FileMode) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("broker: socket directory: %w", err)
	}
	if err := CheckSocketDir(dir); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("broker: %s exists and is not a socket; remove it or choose another socket path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("broker: a broker is already listening on %s; stop it first or choose another socket path", path)
		}
		os.Remove(path) // left by a dead process
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("broker: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("broker: chmod %s: %w", path, err)
	}
	return l, nil
}

// CheckSocketDir refuses a socket directory that belongs to someone other
// than this user or root, or that others may write to: whoever can write
// there can put their own socket in place of the broker's.
func CheckSocketDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("broker: socket directory: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	me := os.Geteuid()
	switch {
	case int(sys.Uid) != me && sys.Uid != 0:
		return fmt.Errorf("broker: socket directory %s belongs to uid %d, not to you (uid %d) or root, so its socket cannot be trusted; use a directory only you (or root) can write", dir, sys.Uid, me)
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("broker: socket directory %s is writable by others (mode %04o), so its socket cannot be trusted; use a directory only you (or root) can write", dir, st.Mode().Perm())
	}
	return nil
}

// Serve answers session API requests on l until l is closed. Each peer uid
// holds at most maxConnsPerUser connections.
func (s *Server) Serve(l net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ConnContext:       connContext,
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
	err := hs.Serve(CapConns(l, maxConnsPerUser, true, s.log()))
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// NewWebServer returns the HTTP server for the sign-in pages: timeouts on
// every phase of a request, small headers, and bodies bounded by h. Serve
// it on a listener wrapped with CapConns(l, MaxWebConns, false, log).
func NewWebServer(h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      readTimeout + 2*time.Minute, // a code exchange fits
		IdleTimeout:       webIdleTimeout,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// MaxWebConns is the sign-in web server's connection cap.
const MaxWebConns = maxWebConns

// Handler returns the session API's HTTP handler. Requests must carry a
// peer uid from [Serve]'s connection context.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/integrations", s.list)
	mux.HandleFunc("GET /v1/integrations/{id}", s.get)
	mux.HandleFunc("GET /v1/integrations/{id}/token", s.token)
	mux.HandleFunc("PUT /v1/integrations/{id}/credentials", s.put)
	mux.HandleFunc("DELETE /v1/integrations/{id}/credentials", s.forget)
	mux.HandleFunc("POST /v1/integrations/{id}/login", s.login)
	mux.HandleFunc("GET /v1/logins/{login}", s.loginStatus)
	mux.HandleFunc("DELETE /v1/logins/{login}", s.loginCancel)
	mux.HandleFunc("POST /v1/events", s.events)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, ok := peer(r.Context())
		switch {
		case !ok:
			writeError(w, fmt.Errorf("broker: the caller's credentials could not be read: %w", credential.ErrPermission))
			return
		case s.Owner >= 0 && uid != s.Owner:
			s.log().Warn("refused a session API caller who is not the owner", "uid", uid, "owner", s.Owner)
			writeError(w, fmt.Errorf("broker: this broker serves uid %d only: %w", s.Owner, credential.ErrPermission))
			return
		}
		if r.URL.Path != "/v1/events" { // the event stream's body is a stream of acks
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		mux.ServeHTTP(w, r)
	})
}

func uidOf(r *http.Request) int { uid, _ := peer(r.Context()); return uid }

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
// refresh_at (null for a token without expiry) is when the broker will
// stop handing this token out: a session may reuse it until then, as long
// as its event stream is up. The body is built in a locked buffer and
// written straight to the connection, which is then closed: the token
// never passes through net/http's buffers or a Go string, so no copy of it
// outlives the request (docs/security.md).
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	t, err := s.B.Token(r.Context(), uidOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	plain, release, err := t.View()
	if err != nil {
		writeError(w, fmt.Errorf("broker: open token: %w: %w", err, credential.ErrUnavailable))
		return
	}
	tail := make([]byte, 0, 160)
	tail = append(tail, `,"expiry":`...)
	tail = appendTime(tail, t.Expiry())
	tail = append(tail, `,"obtained":`...)
	tail = appendTime(tail, t.Obtained())
	tail = append(tail, `,"refresh_at":`...)
	tail = appendTime(tail, s.B.RefreshAt(t))
	tail = append(tail, "}\n"...)
	body, err := secmem.NewBuffer(len(`{"access_token":`) + 6*len(plain) + 2 + len(tail))
	if err != nil {
		release()
		writeError(w, fmt.Errorf("broker: %w: %w", err, credential.ErrUnavailable))
		return
	}
	defer body.Destroy()
	b := body.Bytes()[:0]
	b = append(b, `{"access_token":`...)
	b = wirejson.AppendQuoted(b, plain)
	release()
	b = append(b, tail...)
	writeRaw(w, http.StatusOK, b)
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
	conn.SetWriteDeadline(time.Now().Add(readTimeout))
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

// events streams change events to a session (POST /v1/events) and reads
// its acknowledgements, one sequence number per line, from the request
// body: the connection is full duplex. The first event is a "hello" that
// tells the session its stream is live.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil {
		writeError(w, fmt.Errorf("broker: event stream: %w", err))
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
	if enc.Encode(Event{Kind: credential.EventHello}) != nil || rc.Flush() != nil {
		return
	}
	for {
		select {
		case ev := <-sub.C:
			rc.SetWriteDeadline(time.Now().Add(ackTimeout))
			if enc.Encode(ev) != nil || rc.Flush() != nil {
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
	w, body, err := readBody(w, r)
	if hw, ok := w.(*hijackedWriter); ok {
		defer hw.finish()
	}
	if err != nil {
		writeError(w, err)
		return
	}
	defer body.Destroy()
	cr, err := parseCredentials(body.Bytes())
	if err != nil {
		writeError(w, err)
		return
	}
	if cr.expiresIn > 0 {
		cr.c.Expiry = expiryFrom(cr.expiresIn, s.B.now())
	}
	if err := s.B.Put(uidOf(r), r.PathValue("id"), cr.c); err != nil {
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
		return w, nil, fmt.Errorf("broker: %w: %w", err, credential.ErrUnavailable)
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
	conn.SetReadDeadline(time.Now().Add(readTimeout))
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
	c         Credentials
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
		switch k {
		case "access_token", "refresh_token", "expires_in", "scope":
		default:
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
		if n > maxTokenLen {
			return nil, badRequest("%s is longer than %d KiB", key, maxTokenLen>>10)
		}
		v := make([]byte, n)
		wirejson.Unquote(v, raw)
		return v, nil
	}
	var err error
	if out.c.AccessToken, err = str("access_token"); err != nil {
		return out, err
	}
	if out.c.RefreshToken, err = str("refresh_token"); err != nil {
		memguard.WipeBytes(out.c.AccessToken)
		return out, err
	}
	fail := func(err error) (credentialsRequest, error) {
		memguard.WipeBytes(out.c.AccessToken)
		memguard.WipeBytes(out.c.RefreshToken)
		return credentialsRequest{}, err
	}
	if len(out.c.AccessToken) == 0 {
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
		out.c.Scopes = strings.Fields(printable.String(scope, maxScopes))
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
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	si, err := s.B.StartSignIn(uidOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, si)
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
	st, err := s.B.WaitSignIn(ctx, uidOf(r), r.PathValue("login"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) loginCancel(w http.ResponseWriter, r *http.Request) {
	if err := s.B.CancelSignIn(uidOf(r), r.PathValue("login")); err != nil {
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

// ErrBadRequest marks a malformed session API request.
var ErrBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrBadRequest)
}

// ErrorResponse is the body of every session API error.
type ErrorResponse struct {
	Error   string `json:"error"`   // a code from ErrorCode
	Message string `json:"message"` // human-readable, no secrets
}

// ErrorCode returns the session API code and HTTP status for err.
func ErrorCode(err error) (string, int) {
	switch {
	case errors.Is(err, credential.ErrNotFound):
		return "not_found", http.StatusNotFound
	case errors.Is(err, credential.ErrNotSignedIn):
		return "not_signed_in", http.StatusUnauthorized
	case errors.Is(err, credential.ErrExpired):
		return "expired", http.StatusUnauthorized
	case errors.Is(err, credential.ErrPermission):
		return "forbidden", http.StatusForbidden
	case errors.Is(err, ErrBadRequest):
		return "bad_request", http.StatusBadRequest
	case errors.Is(err, ErrSignIn):
		return "sign_in_failed", http.StatusConflict
	case errors.Is(err, ErrStore):
		return "store", http.StatusInternalServerError
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "timeout", http.StatusGatewayTimeout
	default:
		return "unavailable", http.StatusBadGateway
	}
}

func writeError(w http.ResponseWriter, err error) {
	code, status := ErrorCode(err)
	writeJSON(w, status, ErrorResponse{Error: code, Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
