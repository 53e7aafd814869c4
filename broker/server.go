package broker

import (
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
	"syscall"
	"time"

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

// Listen creates the Unix socket at path, with its directory (0700 when
// created). A socket left by a dead process is replaced; one that a live
// process still answers on is refused.
func Listen(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("broker: socket directory: %w", err)
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
	err := hs.Serve(l)
	if errors.Is(err, net.ErrClosed) {
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
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
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

// TokenResponse is the body of GET /v1/integrations/{id}/token.
type TokenResponse struct {
	AccessToken string  `json:"access_token"`
	Expiry      *string `json:"expiry"`
	Obtained    string  `json:"obtained"`
}

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
	// encoding/json needs a string; it is a short-lived copy.
	resp := TokenResponse{AccessToken: string(buf.Bytes()), Obtained: api.FormatTime(t.Obtained())}
	buf.Destroy()
	if e := api.FormatTime(t.Expiry()); e != "" {
		resp.Expiry = &e
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
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
