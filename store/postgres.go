package store

import (
	"context"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/awnumar/memguard"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// pgMagic names the sealed form of a row, and is bound into its
// associated data with the user name and guid: a row copied to another
// user or integration does not open.
const pgMagic = "OAUTHFS-PG1"

// listenCheck is how long the LISTEN connection may stay silent before it
// is asked to answer.
const listenCheck = 5 * time.Second

// defaultMaxConns is the pool size unless the DSN sets pool_max_conns.
const defaultMaxConns = 32

// pgChannel is the LISTEN/NOTIFY channel of committed changes.
const pgChannel = "oauthfs_changes"

// pgSchemaLock is the advisory lock key that serialises schema
// migrations of brokers that start at once.
const pgSchemaLock = 0x6f61757468667331 // "oauthfs1"

// pgMigrations are the schema's steps; step i brings it to version i+1.
// A step is never changed once released: add one.
var pgMigrations = []string{
	`CREATE TABLE oauthfs_meta (
		name  text PRIMARY KEY,
		value text NOT NULL
	);
	CREATE TABLE oauthfs_credentials (
		user_name text        NOT NULL,
		guid      uuid        NOT NULL,
		sealed    bytea       NOT NULL,
		obtained  timestamptz NOT NULL,
		updated   timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (user_name, guid)
	);`,
	`CREATE TABLE oauthfs_routes (
		secret_hash bytea       PRIMARY KEY,
		owner       text        NOT NULL,
		expires     timestamptz NOT NULL
	);
	CREATE INDEX oauthfs_routes_expires ON oauthfs_routes (expires);`,
}

// Change is a change to stored credentials that a broker sharing the
// store committed.
type Change struct {
	// User and GUID name the record; User is "" when anything may have
	// changed (notifications were missed while the store was unreachable).
	User, GUID string
	// Refresh is set when a refresh replaced the tokens of a signed-in
	// grant, which stays signed in: the token it replaced stays valid
	// (unless the provider ends it on refresh). A sign-in or an import
	// over a signed-in grant is not a refresh: it may be another account.
	Refresh bool
}

// Shared is a Store that several brokers share, on several hosts. It
// keys users by name, which every host of a cluster agrees on.
type Shared interface {
	Store
	// Get returns the user's record of guid, or nil when there is none.
	Get(ctx context.Context, u User, guid string) (*Record, error)
	// Take removes the user's record of guid and returns it as it was
	// stored (nil when there was none): what a sign-out must revoke,
	// whichever broker refreshed it last.
	Take(ctx context.Context, u User, guid string) (*Record, error)
	// Update runs fn with the user's current record of guid (nil when
	// there is none) while holding a lock on it that every broker
	// sharing the store respects, and commits the record fn returns (nil:
	// no change) before it returns. A broker that dies releases the lock
	// with its connection. fn runs at most once; its error is returned
	// and nothing is committed. refresh says that fn refreshes the grant:
	// the other brokers are told of a [Change] with Refresh set when the
	// grant was and stays signed in.
	Update(ctx context.Context, u User, guid string, refresh bool, fn func(cur *Record) (*Record, error)) error
	// Watch calls f, one change at a time, for every change that another
	// broker commits, until ctx ends; after the store was unreachable it
	// calls f with a Change whose User is "".
	Watch(ctx context.Context, f func(Change))
	// Close releases the store's connections.
	Close()
}

var _ Shared = (*Postgres)(nil)

// Postgres keeps records in a PostgreSQL database, one row per user and
// integration, sealed with the same AEAD and key as the file store: the
// database holds ciphertext only. It is safe for concurrent use.
type Postgres struct {
	pool    *pgxpool.Pool
	key     *memguard.Enclave
	notKey  *memguard.Enclave // seals notifications; derived from key
	timeout time.Duration
	origin  string // names this store in its notifications
	log     *slog.Logger
	// forged counts notifications that did not open with the key:
	// anyone who can connect to the database may NOTIFY.
	forged atomic.Int64
	// lastAll is when Watch last said that anything may have changed
	// (only Watch's goroutine uses it).
	lastAll time.Time
}

// allChangedEvery bounds how often Watch says that anything may have
// changed.
const allChangedEvery = 10 * time.Second

// PostgresOptions configure OpenPostgres.
type PostgresOptions struct {
	// KeyFile is the AES key's file, the same on every host. A missing
	// one is created only when the database holds no credentials and no
	// key fingerprint yet.
	KeyFile string
	// Timeout bounds every database request.
	Timeout time.Duration
	// Log receives connection trouble; nil discards it.
	Log *slog.Logger
}

// OpenPostgres connects to the database at dsn, creates or migrates its
// schema (brokers starting at once take turns), and checks that the key
// in opts.KeyFile is the one the database's credentials are sealed with.
func OpenPostgres(ctx context.Context, dsn string, opts PostgresOptions) (*Postgres, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres dsn: %w", redact(err))
	}
	cfg.ConnConfig.ConnectTimeout = opts.Timeout
	cfg.MaxConnIdleTime = time.Minute
	if !strings.Contains(dsn, "pool_max_conns") {
		// A refresh holds a connection while it waits for the provider:
		// pgx's default (4, or the number of CPUs) would queue refreshes
		// that are due together.
		cfg.MaxConns = defaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", redact(err))
	}
	s := &Postgres{pool: pool, timeout: opts.Timeout, origin: hex.EncodeToString(randomBytes(8)), log: opts.Log}
	ctx, cancel := context.WithTimeout(ctx, 3*opts.Timeout)
	defer cancel()
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if s.key, err = s.openKey(ctx, opts.KeyFile); err != nil {
		pool.Close()
		return nil, err
	}
	if s.notKey, err = deriveKey(s.key, "oauthfs notification key v1"); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// DeriveKey returns a key for another use, named by label, derived from
// the store key that every broker of the cluster holds: the same on every
// host. The caller owns the enclave.
func (s *Postgres) DeriveKey(label string) (*memguard.Enclave, error) {
	return deriveKey(s.key, label)
}

// Close releases the store's connections.
func (s *Postgres) Close() { s.pool.Close() }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// redact drops what an error of pgx may quote of a DSN (its password).
func redact(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("the dsn does not parse (its text is not shown: it may hold a password)")
	}
	return err
}

// migrate brings the schema to the newest version, under an advisory
// lock so that brokers starting at once take turns.
func (s *Postgres) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgSchemaLock)); err != nil {
		return fmt.Errorf("store: postgres: lock the schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS oauthfs_schema (version integer NOT NULL)`); err != nil {
		return fmt.Errorf("store: postgres: create the schema table: %w", err)
	}
	var v int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM oauthfs_schema`).Scan(&v); err != nil {
		return fmt.Errorf("store: postgres: read the schema version: %w", err)
	}
	if v > len(pgMigrations) {
		return fmt.Errorf("store: postgres: the database's schema is version %d, newer than this oauthfs knows (%d): upgrade oauthfs on this host: %w",
			v, len(pgMigrations), ErrUnusable)
	}
	for i := v; i < len(pgMigrations); i++ {
		if _, err := tx.Exec(ctx, pgMigrations[i]); err != nil {
			return fmt.Errorf("store: postgres: migrate the schema to version %d: %w", i+1, err)
		}
	}
	if v < len(pgMigrations) {
		if _, err := tx.Exec(ctx, `DELETE FROM oauthfs_schema; INSERT INTO oauthfs_schema VALUES (`+fmt.Sprint(len(pgMigrations))+`)`); err != nil {
			return fmt.Errorf("store: postgres: record the schema version: %w", err)
		}
		s.log.Info("credential database schema migrated", "from", v, "to", len(pgMigrations))
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: postgres: migrate: %w", err)
	}
	return nil
}

// openKey loads the key file, or creates it for an empty database, and
// checks it against the fingerprint the database keeps of the key its
// credentials are sealed with.
func (s *Postgres) openKey(ctx context.Context, path string) (*memguard.Enclave, error) {
	var fp string
	err := s.pool.QueryRow(ctx, `SELECT value FROM oauthfs_meta WHERE name = 'key_fingerprint'`).Scan(&fp)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	key, err := loadKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		var rows int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM oauthfs_credentials`).Scan(&rows); err != nil {
			return nil, fmt.Errorf("store: postgres: %w", err)
		}
		if fp != "" || rows > 0 {
			return nil, fmt.Errorf("store: key_file %s is missing, and the database holds credentials sealed with a key: copy the key_file of another broker host here: %w",
				path, ErrKeyMissing)
		}
		key, err = createKey(path)
	}
	if err != nil {
		return nil, err
	}
	mine, err := fingerprint(key)
	if err != nil {
		return nil, err
	}
	if fp == "" {
		// The first broker records its key; one that started at the
		// same time with another key loses here.
		if _, err := s.pool.Exec(ctx, `INSERT INTO oauthfs_meta VALUES ('key_fingerprint', $1) ON CONFLICT (name) DO NOTHING`, mine); err != nil {
			return nil, fmt.Errorf("store: postgres: %w", err)
		}
		if err := s.pool.QueryRow(ctx, `SELECT value FROM oauthfs_meta WHERE name = 'key_fingerprint'`).Scan(&fp); err != nil {
			return nil, fmt.Errorf("store: postgres: %w", err)
		}
	}
	if !hmac.Equal([]byte(fp), []byte(mine)) {
		return nil, fmt.Errorf("store: key_file %s is not the key the database's credentials are sealed with: every broker host needs the same key_file; copy it from the first host: %w",
			path, ErrUnusable)
	}
	return key, nil
}

// fingerprint names a key without revealing it: an HMAC of a fixed text.
func fingerprint(key *memguard.Enclave) (string, error) {
	k, err := secmem.Open(key)
	if err != nil {
		return "", fmt.Errorf("store: open store key: %w", err)
	}
	defer k.Destroy()
	m := hmac.New(sha256.New, k.Bytes())
	m.Write([]byte("oauthfs key fingerprint"))
	return hex.EncodeToString(m.Sum(nil)[:16]), nil
}

func pgAdditional(user, guid string) []byte {
	return []byte(pgMagic + " user=" + user + " guid=" + guid)
}

// seal encrypts r for user u.
func (s *Postgres) seal(u User, r Record) ([]byte, error) {
	plain, err := encodeRecord(r)
	if err != nil {
		return nil, err
	}
	defer plain.Destroy()
	aead, err := newAEAD(s.key)
	if err != nil {
		return nil, err
	}
	nonce := randomBytes(aead.NonceSize())
	return aead.Seal(nonce, nonce, plain.Bytes(), pgAdditional(u.Name, r.GUID)), nil
}

// open decrypts a row of user u.
func (s *Postgres) open(aead cipher.AEAD, u User, guid string, sealed []byte) (Record, error) {
	bad := func(why string) error {
		return fmt.Errorf("store: the database's credentials of user %s for %s %s; they were left untouched: %w", u.Name, guid, why, ErrUnusable)
	}
	if len(sealed) <= aead.NonceSize()+aead.Overhead() {
		return Record{}, bad("are truncated")
	}
	ct := sealed[aead.NonceSize():]
	plain, err := secmem.NewBuffer(len(ct) - aead.Overhead())
	if err != nil {
		return Record{}, err
	}
	defer plain.Destroy()
	if _, err := aead.Open(plain.Bytes()[:0], sealed[:aead.NonceSize()], ct, pgAdditional(u.Name, guid)); err != nil {
		return Record{}, bad("do not open with the key in key_file (sealed with another key, or copied from another user or integration)")
	}
	r, err := decodeRecord(plain.Bytes())
	if err != nil {
		return Record{}, bad("are corrupt (" + err.Error() + ")")
	}
	r.GUID = guid
	return r, nil
}

// user checks that u has a name: the database keys users by name.
func (s *Postgres) user(u User) error {
	if u.Name == "" {
		return fmt.Errorf("store: uid %d has no user name, by which the database keys credentials: %w", u.UID, ErrUnusable)
	}
	return nil
}

// Load returns the user's records.
func (s *Postgres) Load(ctx context.Context, u User) ([]Record, error) {
	if err := s.user(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT guid::text, sealed FROM oauthfs_credentials WHERE user_name = $1 ORDER BY guid`, u.Name)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: load credentials: %w", err)
	}
	type row struct {
		guid   string
		sealed []byte
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.guid, &x.sealed)
	})
	if err != nil {
		return nil, fmt.Errorf("store: postgres: load credentials: %w", err)
	}
	aead, err := newAEAD(s.key)
	if err != nil {
		return nil, err
	}
	recs := make([]Record, 0, len(got))
	for _, x := range got {
		r, err := s.open(aead, u, x.guid, x.sealed)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// Get returns the user's record of guid, or nil.
func (s *Postgres) Get(ctx context.Context, u User, guid string) (*Record, error) {
	if err := s.user(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.get(ctx, s.pool, u, guid, "")
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Postgres) get(ctx context.Context, q querier, u User, guid, lock string) (*Record, error) {
	var sealed []byte
	err := q.QueryRow(ctx, `SELECT sealed FROM oauthfs_credentials WHERE user_name = $1 AND guid = $2`+lock, u.Name, guid).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: postgres: read credentials: %w", err)
	}
	aead, err := newAEAD(s.key)
	if err != nil {
		return nil, err
	}
	r, err := s.open(aead, u, guid, sealed)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Save writes r and tells the other brokers.
func (s *Postgres) Save(ctx context.Context, u User, r Record) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.inTx(ctx, func(tx pgx.Tx) error { return s.save(ctx, tx, u, r, false) })
}

// Remove deletes the record of guid, if there is one, and tells the
// other brokers.
func (s *Postgres) Remove(ctx context.Context, u User, guid string) error {
	if err := s.user(u); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM oauthfs_credentials WHERE user_name = $1 AND guid = $2`, u.Name, guid); err != nil {
			return fmt.Errorf("store: postgres: remove credentials: %w", err)
		}
		return s.notify(ctx, tx, Change{User: u.Name, GUID: guid})
	})
}

// Take removes the record of guid and returns it, and tells the other
// brokers.
func (s *Postgres) Take(ctx context.Context, u User, guid string) (*Record, error) {
	if err := s.user(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var sealed []byte
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Under the record's lock: a refresh under way elsewhere commits
		// first, and what it committed is what is taken (and revoked).
		if err := s.lock(ctx, tx, u, guid); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `DELETE FROM oauthfs_credentials WHERE user_name = $1 AND guid = $2 RETURNING sealed`, u.Name, guid).Scan(&sealed)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("store: postgres: remove credentials: %w", err)
		}
		return s.notify(ctx, tx, Change{User: u.Name, GUID: guid})
	})
	if err != nil || sealed == nil {
		return nil, err
	}
	aead, err := newAEAD(s.key)
	if err != nil {
		return nil, err
	}
	r, err := s.open(aead, u, guid, sealed)
	if err != nil {
		return nil, nil // removed; what cannot be opened cannot be revoked
	}
	return &r, nil
}

// Update runs fn on the locked record and commits what it returns.
func (s *Postgres) Update(ctx context.Context, u User, guid string, refresh bool, fn func(cur *Record) (*Record, error)) error {
	if err := s.user(u); err != nil {
		return err
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		// A transaction-scoped advisory lock on the user and guid, not a
		// row lock: it holds whether or not the row exists yet.
		lctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		if err := s.lock(lctx, tx, u, guid); err != nil {
			return err
		}
		cur, err := s.get(lctx, tx, u, guid, "")
		if err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil || next == nil {
			return err
		}
		wctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		defer cancel2()
		refresh := refresh && cur != nil && cur.Status == next.Status && next.Status == credential.StatusSignedIn
		return s.save(wctx, tx, u, *next, refresh)
	})
}

// lock takes the record's cluster-wide lock for the rest of tx. The
// transaction ends itself if this broker goes silent inside it (a host
// cut off mid-refresh): the lock cannot outlive it by more than
// idleInTx.
func (s *Postgres) lock(ctx context.Context, tx pgx.Tx, u User, guid string) error {
	idle := 2*s.timeout + 5*time.Second
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL idle_in_transaction_session_timeout = %d`, idle.Milliseconds())); err != nil {
		return fmt.Errorf("store: postgres: lock credentials: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, u.Name+"/"+guid); err != nil {
		return fmt.Errorf("store: postgres: lock credentials: %w", err)
	}
	return nil
}

// save upserts r in tx and queues the notification.
func (s *Postgres) save(ctx context.Context, tx pgx.Tx, u User, r Record, refresh bool) error {
	if err := s.user(u); err != nil {
		return err
	}
	sealed, err := s.seal(u, r)
	if err != nil {
		return err
	}
	obtained := time.Time{}
	if r.Access != nil {
		obtained = r.Access.Obtained()
	}
	if _, err := tx.Exec(ctx, `INSERT INTO oauthfs_credentials (user_name, guid, sealed, obtained) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_name, guid) DO UPDATE SET sealed = excluded.sealed, obtained = excluded.obtained, updated = now()`,
		u.Name, r.GUID, sealed, obtained); err != nil {
		return fmt.Errorf("store: postgres: save credentials: %w", err)
	}
	return s.notify(ctx, tx, Change{User: u.Name, GUID: r.GUID, Refresh: refresh})
}

// inTx runs fn in a transaction and commits it when fn succeeds.
func (s *Postgres) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	bctx, cancel := context.WithTimeout(ctx, s.timeout)
	tx, err := s.pool.Begin(bctx)
	cancel()
	if err != nil {
		return fmt.Errorf("store: postgres: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	if err := tx.Commit(cctx); err != nil {
		return fmt.Errorf("store: postgres: commit: %w", err)
	}
	return nil
}

// notice is a notification's payload.
type notice struct {
	Origin  string `json:"o"`
	User    string `json:"u"`
	GUID    string `json:"g"`
	Refresh bool   `json:"r,omitempty"`
}

// noticeAD binds a sealed notice to its use.
var noticeAD = []byte("oauthfs notification v1")

// notify queues c for the other brokers; PostgreSQL delivers it when tx
// commits, and not at all if it does not. Anyone who may connect to the
// database may LISTEN and NOTIFY on any channel, so the payload is sealed
// with a key derived from the store key: a listener learns neither user
// nor integration, and a forged notification does not open.
func (s *Postgres) notify(ctx context.Context, tx pgx.Tx, c Change) error {
	b, _ := json.Marshal(notice{Origin: s.origin, User: c.User, GUID: c.GUID, Refresh: c.Refresh})
	aead, err := newAEAD(s.notKey)
	if err != nil {
		return err
	}
	nonce := randomBytes(aead.NonceSize())
	payload := base64.RawStdEncoding.EncodeToString(aead.Seal(nonce, nonce, b, noticeAD))
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, pgChannel, payload); err != nil {
		return fmt.Errorf("store: postgres: notify: %w", err)
	}
	return nil
}

// openNotice opens a notification's payload, or says it is not one of
// ours.
func (s *Postgres) openNotice(payload string) (notice, bool) {
	var x notice
	raw, err := base64.RawStdEncoding.DecodeString(payload)
	if err != nil {
		return x, false
	}
	aead, err := newAEAD(s.notKey)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return x, false
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], noticeAD)
	if err != nil || json.Unmarshal(plain, &x) != nil || x.User == "" || x.GUID == "" {
		return x, false
	}
	return x, true
}

// Forged returns how many notifications did not open with the store's
// key since the store was opened.
func (s *Postgres) Forged() int64 { return s.forged.Load() }

// Watch listens for the other brokers' changes until ctx ends. When the
// connection drops it reconnects, at most once a second, and then calls
// f with Change{} since notifications may have been missed.
func (s *Postgres) Watch(ctx context.Context, f func(Change)) {
	missed := false
	for ctx.Err() == nil {
		err := s.listen(ctx, f, &missed)
		if ctx.Err() != nil {
			return
		}
		if !missed {
			s.log.Warn("lost the credential database's change notifications; reconnecting", "err", err)
		}
		missed = true
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
}

// listen holds one LISTEN connection until it fails or ctx ends.
func (s *Postgres) listen(ctx context.Context, f func(Change), missed *bool) error {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	conn, err := s.pool.Acquire(cctx)
	cancel()
	if err != nil {
		return err
	}
	// The connection leaves the pool: a LISTEN belongs to its session.
	c := conn.Hijack()
	defer func() {
		// Bounded: on a silent network the goodbye is never delivered.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		c.Close(cctx)
		cancel()
	}()
	if _, err := c.Exec(ctx, `LISTEN `+pgChannel); err != nil {
		return err
	}
	if *missed {
		// At most one "anything may have changed" every allChangedEvery:
		// a connection that keeps dropping does not make every broker
		// drop and reload everything every second.
		if wait := time.Until(s.lastAll.Add(allChangedEvery)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		s.log.Info("credential database notifications are back; dropping what may be stale")
		*missed = false
		s.lastAll = time.Now()
		f(Change{})
	}
	for {
		// A silent network (a partition, a frozen server) never ends a
		// wait: every few seconds without news, the connection is asked
		// to answer.
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := c.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			pctx, cancel := context.WithTimeout(ctx, s.timeout)
			err = c.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
		}
		if err != nil {
			return err
		}
		x, ok := s.openNotice(n.Payload)
		if !ok {
			if s.forged.Add(1)%100 == 1 {
				s.log.Warn("ignored change notifications that do not open with the store key (someone else who can connect to the database sends them)", "ignored", s.forged.Load())
			}
			continue
		}
		if x.Origin == s.origin {
			continue
		}
		f(Change{User: x.User, GUID: x.GUID, Refresh: x.Refresh})
	}
}

// Routes: which broker of a cluster holds a sign-in or a settings session.
// A browser's requests may reach any broker behind a load balancer; the
// one that holds the sign-in (its PKCE verifier, the tokens waiting for
// the final confirmation, the command waiting for it) registers the
// sign-in's secret here, and the others forward the browser's requests
// to it. Only a hash of the secret is stored.

func routeKey(secret string) []byte {
	h := sha256.Sum256([]byte("oauthfs route " + secret))
	return h[:]
}

// AddRoute records that the broker reached at owner holds the sign-in
// or session named by secret until expires, and forgets expired routes.
func (s *Postgres) AddRoute(ctx context.Context, secret, owner string, expires time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.pool.Exec(ctx, `WITH gone AS (DELETE FROM oauthfs_routes WHERE expires < now())
		INSERT INTO oauthfs_routes VALUES ($1, $2, $3) ON CONFLICT (secret_hash) DO UPDATE SET owner = excluded.owner, expires = excluded.expires`,
		routeKey(secret), owner, expires)
	if err != nil {
		return fmt.Errorf("store: postgres: record a sign-in route: %w", err)
	}
	return nil
}

// Route returns the owner of secret's sign-in or session, or "" when no
// live broker registered it.
func (s *Postgres) Route(ctx context.Context, secret string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var owner string
	err := s.pool.QueryRow(ctx, `SELECT owner FROM oauthfs_routes WHERE secret_hash = $1 AND expires >= now()`, routeKey(secret)).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: postgres: find a sign-in route: %w", err)
	}
	return owner, nil
}
