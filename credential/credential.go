package credential

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
	"github.com/oauthfs/oauthfs/internal/wirejson"
)

// Sentinel errors for the conditions callers branch on. Errors returned by
// the broker wrap exactly one of them; the filesystem maps each to an errno.
var (
	// ErrNotFound: no integration has that guid or name (ENOENT).
	ErrNotFound = errors.New("no such integration")
	// ErrNotSignedIn: the user never signed in, or signed out (ENOKEY).
	ErrNotSignedIn = errors.New("not signed in")
	// ErrExpired: refresh is no longer possible; the user must sign in
	// again (EKEYEXPIRED).
	ErrExpired = errors.New("sign-in expired")
	// ErrUnavailable: the provider or the broker could not be reached or
	// answered badly, and no valid token is cached (EIO).
	ErrUnavailable = errors.New("token unavailable")
	// ErrPermission: the caller may not use these credentials (EACCES).
	ErrPermission = errors.New("permission denied")
	// ErrSignIn: a sign-in could not be started or completed.
	ErrSignIn = errors.New("sign-in failed")
	// ErrBadRequest: a request is malformed (a body that does not parse,
	// an empty or oversized token).
	ErrBadRequest = errors.New("bad request")
)

// Errno maps a broker error to the errno a reader sees (docs/design.md,
// "Errors a reader sees"). It is the only such mapping in oauthfs: the
// filesystem answers reads with it, and the broker's metrics count the
// reads that reached it by it.
func Errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, ErrNotSignedIn):
		return syscall.ENOKEY
	case errors.Is(err, ErrExpired):
		return syscall.EKEYEXPIRED
	case errors.Is(err, ErrPermission):
		return syscall.EACCES
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	default: // ErrUnavailable, deadlines, anything unexpected
		return syscall.EIO
	}
}

// Status is the sign-in status shown in meta.json.
type Status string

// The values of [Status], as meta.json shows them.
const (
	StatusSignedIn    Status = "signed_in"
	StatusNotSignedIn Status = "not_signed_in"
	StatusExpired     Status = "expired"
	StatusError       Status = "error"
)

// timeFormat is how expiry times are written: RFC 3339 in UTC with second
// precision.
const timeFormat = "2006-01-02T15:04:05Z"

// MaxTokenLen bounds an access or refresh token: longer ones are refused
// where they enter (a provider's answer, an import, a stored record), so
// nothing downstream meets one.
const MaxTokenLen = 64 << 10

// FormatTime formats t as [timeFormat] in UTC, or "" for the zero time.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

// Integration is one integration as a user sees it: the object in
// meta.json and in the integrations.json array. It never holds a secret.
type Integration struct {
	GUID        string `json:"guid"`
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	ClientID    string `json:"client_id"`
	AuthURL     string `json:"auth_url"`
	TokenURL    string `json:"token_url"`
	// Issuer is the authorization server's issuer identifier, when the
	// configuration names one, or nil.
	Issuer        *string  `json:"issuer"`
	Scopes        []string `json:"scopes"`
	Authenticated bool     `json:"authenticated"`
	Status        Status   `json:"status"`
	// Expiry is the access token's expiry in [timeFormat], or nil.
	Expiry        *string  `json:"expiry"`
	GrantedScopes []string `json:"granted_scopes"`
	// Error is a human-readable reason for an expired or error status.
	Error *string `json:"error"`
	// Account names the provider account signed in, when the provider
	// said, or nil.
	Account *string `json:"account"`
	// Tokens are the integration's token variants: the directories of
	// tokens/ (empty when it has none).
	Tokens []TokenVariant `json:"tokens"`
	// Resources are the other resources (RFC 8707) its tokens may be
	// asked for ('oauthfs token --resource').
	Resources []string `json:"resources"`
	// DockerRegistries are the container registries 'oauthfs
	// docker-credential' answers for with the integration's token, and
	// DockerUsername the user name it sends with it.
	DockerRegistries []string `json:"docker_registries"`
	DockerUsername   string   `json:"docker_username"`
}

// TokenVariant is one of an integration's token variants, as meta.json
// shows it: a token for another resource, or with fewer scopes.
type TokenVariant struct {
	Name     string   `json:"name"`
	Resource string   `json:"resource,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
}

// Token is an immutable snapshot of an access token and its times.
//
// The token bytes rest in a memguard Enclave owned by the Token. Reads
// decrypt them into one guarded, locked buffer, also owned by the Token,
// which stays open while reads keep coming and is destroyed (wiped) once
// no read has used it for [plainIdle] and nobody borrows it: a burst of
// reads decrypts once, and an idle token is ciphertext again within a
// second. At most [maxPlain] such buffers are open in the process, and
// their pages count against the locked-memory budget (package secmem);
// beyond either bound a read decrypts into a temporary buffer and destroys
// it at once, so locked memory stays bounded however many files are open.
// Holding a Token costs no locked memory. memguard.Purge wipes everything
// at exit. A Token is safe for concurrent use.
type Token struct {
	value    *memguard.Enclave
	size     int
	expiry   time.Time
	obtained time.Time
	extras   Extras

	docOnce sync.Once // builds doc
	doc     *Token    // the token.json document; nil until built
	docErr  error

	mu      sync.Mutex     // guards the fields below
	plain   *secmem.Buffer // decrypted token while in use, or nil
	borrows int            // Views of plain not yet released
	lastUse time.Time
	idle    *time.Timer // destroys plain once idle
}

// plainIdle is how long a token's decrypted buffer outlives its last read.
const plainIdle = time.Second

// maxPlain bounds the decrypted token buffers open at once in a process,
// well below what RLIMIT_MEMLOCK (8 MiB for a normal user) allows.
const maxPlain = 256

// plainOpen counts the decrypted token buffers open now.
var plainOpen atomic.Int64

// NewToken seals value into a new Token and wipes value. A zero expiry
// means the token does not expire. The times keep their wall-clock
// reading only. An empty value is an error, and so is
// a locked-memory budget that stays spent.
func NewToken(value []byte, expiry, obtained time.Time) (*Token, error) {
	n := len(value)
	if n == 0 {
		return nil, errors.New("empty token")
	}
	e, err := secmem.Seal(value)
	if err != nil {
		return nil, err
	}
	// Wall-clock times only: a comparison with them after a suspend sees
	// the time that passed, which Go's monotonic reading does not count.
	return &Token{value: e, size: n, expiry: expiry.Round(0), obtained: obtained.Round(0)}, nil
}

// Extras are what came with an access token besides its value and
// times. They are set once, before the token is shared ([Token.With]).
type Extras struct {
	// Type is the token_type the provider said; "" reads as "Bearer".
	Type string
	// Scopes are the scopes granted with the token, when known.
	Scopes []string
	// ID is the OpenID Connect ID token that came with the access token
	// (or, when a refresh brought none, with an earlier one), or nil.
	ID *Token
}

// NewAccess seals an access token with what came with it: its type, the
// granted scopes, and the ID token in idToken or, when that is empty (a
// refresh that brought none), keepID. An ID token expires when its exp
// claim says (read, not verified: it is shown and handed out, never
// trusted here), or with the access token. It wipes value and idToken.
func NewAccess(value []byte, expiry, obtained time.Time, typ string, scopes []string, idToken []byte, keepID *Token) (*Token, error) {
	t, err := NewToken(value, expiry, obtained)
	if err != nil {
		memguard.WipeBytes(idToken)
		return nil, err
	}
	id := keepID
	if len(idToken) > 0 {
		exp := jwtExpiry(idToken)
		if exp.IsZero() {
			exp = expiry
		}
		if id, err = NewToken(idToken, exp, obtained); err != nil {
			return nil, err
		}
	}
	return t.With(Extras{Type: typ, Scopes: scopes, ID: id}), nil
}

// jwtExpiry returns the exp claim of the JWT in b, or the zero time.
func jwtExpiry(b []byte) time.Time {
	parts := bytes.Split(b, []byte("."))
	if len(parts) != 3 || len(parts[1]) > 16<<10 {
		return time.Time{}
	}
	claims := make([]byte, base64.RawURLEncoding.DecodedLen(len(parts[1])))
	defer memguard.WipeBytes(claims)
	n, err := base64.RawURLEncoding.Decode(claims, bytes.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(claims[:n], &c) != nil {
		return time.Time{}
	}
	sec, err := c.Exp.Int64()
	if err != nil || sec <= 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

// With returns a token with t's value and times and the extras x. The
// two share the sealed value; each has its own decrypted buffer.
func (t *Token) With(x Extras) *Token {
	x.Scopes = append([]string(nil), x.Scopes...)
	return &Token{value: t.value, size: t.size, expiry: t.expiry, obtained: t.obtained, extras: x}
}

// Type returns the token's type: "Bearer" unless the provider said
// otherwise.
func (t *Token) Type() string {
	if t.extras.Type == "" || strings.EqualFold(t.extras.Type, "bearer") {
		return "Bearer"
	}
	return t.extras.Type
}

// Scopes returns the scopes granted with the token, when known. The
// caller must not change them.
func (t *Token) Scopes() []string { return t.extras.Scopes }

// ID returns the OpenID Connect ID token that came with t, or nil.
func (t *Token) ID() *Token { return t.extras.ID }

// Document returns the token.json document of t (docs/design.md): its
// access token, type, expiry, scopes and ID token in one JSON object, as
// a token of its own (sealed, read like any token), built once. It is a
// secret like t.
func (t *Token) Document() (*Token, error) {
	t.docOnce.Do(func() { t.doc, t.docErr = t.buildDocument() })
	return t.doc, t.docErr
}

func (t *Token) buildDocument() (*Token, error) {
	// The type and scopes keep what RFC 6749 allows in them (printable
	// ASCII, no quote or backslash), so strconv quotes them as JSON does.
	var fields []byte
	fields = append(fields, `,"token_type":`...)
	fields = strconv.AppendQuote(fields, printable.Code(t.Type(), 0))
	fields = append(fields, `,"expiry":`...)
	if t.expiry.IsZero() {
		fields = append(fields, "null"...)
	} else {
		fields = strconv.AppendQuote(fields, FormatTime(t.expiry))
	}
	fields = append(fields, `,"scopes":[`...)
	for i, s := range t.extras.Scopes {
		if i > 0 {
			fields = append(fields, ',')
		}
		fields = strconv.AppendQuote(fields, printable.Code(s, 0))
	}
	fields = append(fields, ']')
	buf, err := t.JSONObject(fields, nil)
	if err != nil {
		return nil, err
	}
	// NewToken seals the document and wipes it in the buffer.
	doc, err := NewToken(buf.Bytes(), t.expiry, t.obtained)
	buf.Destroy()
	return doc, err
}

// JSONObject writes the JSON object {"access_token":<t>,<fields>,
// "id_token":<t's ID token>}, and a newline, into a new locked buffer of
// exactly its size, which the caller destroys; "id_token" only when t has
// an ID token. fields holds no secret and starts with a comma. reserve,
// when not nil, is told the size first: its error is returned, and
// nothing is allocated.
func (t *Token) JSONObject(fields []byte, reserve func(size int) error) (*secmem.Buffer, error) {
	access, release, err := t.View()
	if err != nil {
		return nil, fmt.Errorf("credential: open the token: %w", err)
	}
	defer release()
	var id []byte
	if t.extras.ID != nil {
		var releaseID func()
		if id, releaseID, err = t.extras.ID.View(); err != nil {
			return nil, fmt.Errorf("credential: open the ID token: %w", err)
		}
		defer releaseID()
	}
	size := len(`{"access_token":`) + wirejson.QuotedLen(access) + len(fields) + len("}\n")
	if id != nil {
		size += len(`,"id_token":`) + wirejson.QuotedLen(id)
	}
	if reserve != nil {
		if err := reserve(size); err != nil {
			return nil, err
		}
	}
	buf, err := secmem.NewBuffer(size)
	if err != nil {
		return nil, err
	}
	b := buf.Bytes()[:0]
	b = append(b, `{"access_token":`...)
	b = wirejson.AppendQuoted(b, access)
	b = append(b, fields...)
	if id != nil {
		b = append(b, `,"id_token":`...)
		b = wirejson.AppendQuoted(b, id)
	}
	b = append(b, "}\n"...)
	if len(b) != size { // cannot happen: QuotedLen is exact
		buf.Destroy()
		return nil, fmt.Errorf("credential: JSON of a token: wrote %d bytes, want %d", len(b), size)
	}
	return buf, nil
}

// Len returns the length of the token in bytes.
func (t *Token) Len() int { return t.size }

// Expiry returns when the token expires; the zero time means never.
func (t *Token) Expiry() time.Time { return t.expiry }

// Obtained returns when the broker obtained the token.
func (t *Token) Obtained() time.Time { return t.obtained }

// View returns the token's bytes and a function that releases them. The
// bytes live in locked memory that is wiped after release; the caller must
// not use them after calling release, and must call it exactly once.
func (t *Token) View() ([]byte, func(), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.plain == nil {
		var b *secmem.Buffer
		var err error
		if plainOpen.Add(1) <= maxPlain {
			b, err = secmem.TryOpen(t.value)
		}
		if b == nil {
			plainOpen.Add(-1)
			if err != nil {
				return nil, nil, err
			}
			// Over a bound: a temporary buffer, destroyed on release.
			tmp, err := secmem.Open(t.value)
			if err != nil {
				return nil, nil, err
			}
			return tmp.Bytes(), tmp.Destroy, nil
		}
		t.plain = b
		t.idle = time.AfterFunc(plainIdle, t.closeIdle)
	}
	t.borrows++
	t.lastUse = time.Now()
	var once sync.Once
	return t.plain.Bytes(), func() {
		once.Do(func() {
			t.mu.Lock()
			t.borrows--
			t.lastUse = time.Now()
			t.mu.Unlock()
		})
	}, nil
}

// ReadAt copies token bytes starting at off into dst, like io.ReaderAt
// but returning 0, nil at or past the end.
func (t *Token) ReadAt(dst []byte, off int64) (int, error) {
	if off >= int64(t.size) || len(dst) == 0 {
		return 0, nil
	}
	b, release, err := t.View()
	if err != nil {
		return 0, err
	}
	defer release()
	return copy(dst, b[off:]), nil
}

// closeIdle destroys the decrypted buffer once it has been idle for
// plainIdle with no View outstanding, or looks again later.
func (t *Token) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.plain == nil {
		return
	}
	if wait := plainIdle - time.Since(t.lastUse); wait > 0 || t.borrows > 0 {
		t.idle.Reset(max(wait, plainIdle/4))
		return
	}
	t.plain.Destroy()
	t.plain, t.idle = nil, nil
	plainOpen.Add(-1)
}

// plainIsOpen reports whether the decrypted buffer is open (for tests).
func (t *Token) plainIsOpen() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.plain != nil
}

// Open decrypts the token into a new locked buffer. The caller owns the
// buffer and must Destroy it as soon as it is done.
func (t *Token) Open() (*secmem.Buffer, error) { return secmem.Open(t.value) }

// Equal reports whether t and u are the same token: the same bytes and
// the same expiry. It compares the bytes in constant time.
func (t *Token) Equal(u *Token) bool {
	if t == u {
		return true
	}
	if t == nil || u == nil || t.size != u.size || !t.expiry.Equal(u.expiry) {
		return false
	}
	a, releaseA, err := t.View()
	if err != nil {
		return false
	}
	defer releaseA()
	b, releaseB, err := u.View()
	if err != nil {
		return false
	}
	defer releaseB()
	return subtle.ConstantTimeCompare(a, b) == 1
}

// String returns "[redacted]", so a Token printed by mistake leaks nothing.
func (t *Token) String() string { return "[redacted]" }

// LogValue implements slog.LogValuer, so a Token logged by mistake leaks
// nothing.
func (t *Token) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Valid reports whether the token is still usable at now, that is, whether
// it has no expiry or expires after now plus margin.
func (t *Token) Valid(now time.Time, margin time.Duration) bool {
	return t != nil && (t.expiry.IsZero() || now.Add(margin).Before(t.expiry))
}

// HandOverSlack is how long before its refresh time a token stops being
// handed to new readers, so that whoever keeps it until its refresh time
// (the kernel, for a filesystem) has that long to stop using it: a
// second, or an eighth of the lifetime of a shorter-lived token; zero for
// a token that does not expire.
func HandOverSlack(t *Token) time.Duration {
	if t.Expiry().IsZero() {
		return 0
	}
	return max(0, min(time.Second, t.Expiry().Sub(t.Obtained())/8))
}

// Tokens are what a sign-in, or an import, gives the broker to keep for
// a user. Whoever takes them wipes the byte slices (Broker.Put does).
type Tokens struct {
	Access  []byte
	Refresh []byte    // may be empty
	Expiry  time.Time // zero: the token does not expire
	// Obtained is when the provider's answer arrived; zero: when stored.
	Obtained time.Time
	Scopes   []string // granted scopes, if the provider said
	// Account names the provider account that signed in (an email, a
	// login or an OIDC sub), when the provider said; shown, never trusted.
	Account string
	// IDToken is the OpenID Connect ID token that came with the access
	// token, if any; wiped like the tokens.
	IDToken []byte
	// TokenType is the access token's token_type; "" reads as "Bearer".
	TokenType string
}

// MaxLifetime bounds a token's expires_in: a larger value (or one that
// would overflow a time.Duration) is taken to mean ten years.
const MaxLifetime = 10 * 365 * 24 * time.Hour

// ExpiryFrom turns a token response's expires_in (seconds; 0 or less: no
// expiry) into a time after now, clamped to MaxLifetime. Expiries count
// from the broker's clock, not x/oauth2's, so that the margin rule and
// tests share one notion of now.
func ExpiryFrom(expiresIn int64, now time.Time) time.Time {
	if expiresIn <= 0 {
		return time.Time{}
	}
	if expiresIn > int64(MaxLifetime/time.Second) {
		return now.Add(MaxLifetime)
	}
	return now.Add(time.Duration(expiresIn) * time.Second)
}

// Change tells a filesystem that what it may have cached about a user's
// integrations is out of date: one integration's tokens or details
// changed, or, with an empty GUID, anything may have changed, names
// included (a reload, or a session that lost its event stream and may
// have missed changes).
type Change struct {
	GUID string
	// Revoke says that the tokens cached must not be served any more:
	// they were replaced or withdrawn (a sign-in, a sign-out, a
	// revocation found on refresh, a reload). Otherwise (a refresh, or a
	// failed one) they stay valid until their own refresh time, and only
	// new opens need to see the change.
	Revoke bool
	// Unwatched says that the source can no longer report changes (its
	// event stream is down): nothing may be kept until a change without
	// it says that it can again.
	Unwatched bool
}

// ChangeOf is what an event of kind about guid means to a filesystem.
// The kinds are the broker's and the session API's: "changed" (one
// integration's tokens are gone or replaced), "updated" (one was
// refreshed, or failed to), and any other ("hello", "reload", or one not
// known yet) that anything may have changed.
func ChangeOf(kind, guid string) Change {
	switch kind {
	case "changed":
		return Change{GUID: guid, Revoke: true}
	case "updated":
		return Change{GUID: guid}
	}
	return Change{Revoke: true}
}
