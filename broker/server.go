package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/oauthfs/oauthfs/broker/api"
)

// maxBody bounds request bodies on the session socket.
const maxBody = 64 << 10

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

type peerKey struct{}

// peer returns the uid of the connection's peer, as recorded by
// connContext.
func peer(ctx context.Context) (int, bool) {
	uid, ok := ctx.Value(peerKey{}).(int)
	return uid, ok
}

// connContext records the peer's uid from SO_PEERCRED. A connection whose
// credentials cannot be read gets no uid and every request is refused.
func connContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, int(cred.Uid))
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
	if st, err := os.Stat(dir); err == nil {
		sys, _ := st.Sys().(*syscall.Stat_t)
		if sys != nil && ((int(sys.Uid) != os.Geteuid() && sys.Uid != 0) || (st.Mode().Perm()&0o022 != 0 && st.Mode()&os.ModeSticky == 0)) {
			return nil, fmt.Errorf("broker: socket directory %s is owned by uid %d or writable by others (mode %v); use a directory only you (or root) can write", dir, sys.Uid, st.Mode().Perm())
		}
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

// Serve answers session API requests on l until l is closed.
func (s *Server) Serve(l net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ConnContext:       connContext,
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.mu.Lock()
	s.hs = hs
	s.mu.Unlock()
	err := hs.Serve(l)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

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
			writeError(w, fmt.Errorf("broker: the caller's credentials could not be read: %w", api.ErrPermission))
			return
		case s.Owner >= 0 && uid != s.Owner:
			s.Log.Warn("refused a session API caller who is not the owner", "uid", uid, "owner", s.Owner)
			writeError(w, fmt.Errorf("broker: this broker serves uid %d only: %w", s.Owner, api.ErrPermission))
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
// as its event stream is up. The body is built in a buffer that is wiped
// after the write, so the token never becomes a Go string here.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	t, err := s.B.Token(r.Context(), uidOf(r), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	buf, err := t.Open()
	if err != nil {
		writeError(w, fmt.Errorf("broker: open token: %w", err))
		return
	}
	body := make([]byte, 0, 2*buf.Size()+160)
	body = append(body, `{"access_token":`...)
	body = appendJSONString(body, buf.Bytes())
	buf.Destroy()
	body = append(body, `,"expiry":`...)
	body = appendTime(body, t.Expiry())
	body = append(body, `,"obtained":`...)
	body = appendTime(body, t.Obtained())
	body = append(body, `,"refresh_at":`...)
	body = appendTime(body, s.B.RefreshAt(t))
	body = append(body, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
	memguard.WipeBytes(body)
}

// appendTime appends t as a JSON RFC 3339 string, or null.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	return append(append(append(b, '"'), api.FormatTime(t)...), '"')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
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
	sub := s.B.Subscribe(uidOf(r))
	defer s.B.Unsubscribe(sub)
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
	if enc.Encode(Event{Kind: "hello"}) != nil || rc.Flush() != nil {
		return
	}
	for {
		select {
		case ev := <-sub.C:
			if enc.Encode(ev) != nil || rc.Flush() != nil {
				return
			}
		case <-sub.Dead():
			return
		case <-r.Context().Done():
			return
		}
	}
}

// CredentialsRequest is the body of PUT /v1/integrations/{id}/credentials:
// tokens a user obtained elsewhere, stored as if they had signed in.
type CredentialsRequest struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"` // seconds; 0 = no expiry
	Scope        string `json:"scope"`
}

func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	var req CredentialsRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, badRequest("the body must be a JSON object with access_token, refresh_token, expires_in and scope: %v", jsonProblem(err)))
		return
	}
	if req.AccessToken == "" || req.ExpiresIn < 0 {
		writeError(w, badRequest("access_token must be non-empty and expires_in not negative"))
		return
	}
	var expiry time.Time
	if req.ExpiresIn > 0 {
		expiry = s.B.now().Add(time.Duration(req.ExpiresIn) * time.Second)
	}
	err := s.B.Put(uidOf(r), r.PathValue("id"), Credentials{
		AccessToken: []byte(req.AccessToken), RefreshToken: []byte(req.RefreshToken),
		Expiry: expiry, Scopes: strings.Fields(req.Scope),
	})
	if err != nil {
		writeError(w, err)
		return
	}
	m, _ := s.B.Integration(uidOf(r), r.PathValue("id"))
	writeJSON(w, http.StatusOK, m)
}

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
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case errors.As(err, &mb):
		return fmt.Sprintf("body larger than %d bytes", mb.Limit)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return err.Error()
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
	case errors.Is(err, api.ErrNotFound):
		return "not_found", http.StatusNotFound
	case errors.Is(err, api.ErrNotSignedIn):
		return "not_signed_in", http.StatusUnauthorized
	case errors.Is(err, api.ErrExpired):
		return "expired", http.StatusUnauthorized
	case errors.Is(err, api.ErrPermission):
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
