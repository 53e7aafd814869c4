// Package store keeps users' credentials across restarts: the [Store]
// interface the broker saves to, and its two implementations:
//
//   - [File], one encrypted file per user (docs/store-format.md), for a
//     single host;
//   - [Postgres], a table of encrypted records shared by the brokers of a
//     cluster (docs/cluster.md). It is also a [Shared] store: updates
//     under a per-record lock, notifications of other hosts' changes
//     ([Change]), and the routes that tell a broker which host holds a
//     sign-in.
//
// [Migrate] copies a file store into a shared one. Records hold their
// tokens in memguard enclaves; what reaches the disk or the database is
// ciphertext only.
//
// It owns the key file, the AEAD and the keys derived from it, the record
// codec and atomic writes. It must never import the broker, the session
// API or the filesystem.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/credential"
)

// ErrUnusable is wrapped by every error about stored credentials that
// exist but cannot be used (corrupt, truncated, sealed with another key,
// owned by someone else). They are never discarded or overwritten.
var ErrUnusable = errors.New("credential store unusable")

// ErrNotPrivate is wrapped (with ErrUnusable) when a state directory, key
// file or record belongs to another user or is open to others: another
// user could have planted it.
var ErrNotPrivate = fmt.Errorf("not private: %w", ErrUnusable)

// ErrKeyMissing is wrapped (with ErrUnusable) when the key file is gone
// but records sealed with it remain.
var ErrKeyMissing = fmt.Errorf("key missing: %w", ErrUnusable)

// User names the owner of stored credentials. The file store keys users
// by UID.
type User struct {
	UID  int
	Name string
}

// Record is one user's credentials for one integration, as stored.
type Record struct {
	GUID string
	// Access is the access token with its expiry and the time it was
	// obtained; nil after the provider refused the grant.
	Access *credential.Token
	// Refresh is the refresh token; nil when there is none.
	Refresh *memguard.Enclave
	Scopes  []string
	Status  credential.Status
	Error   string // why Status is expired or error
	Account string // the provider account that signed in
}

// Store keeps records. Implementations are safe for concurrent use by
// multiple goroutines; callers serialise the saves of one record, so that
// a later state is never overwritten by an earlier one. Load of a user
// with nothing stored returns no records and no error.
type Store interface {
	Load(ctx context.Context, u User) ([]Record, error)
	Save(ctx context.Context, u User, r Record) error
	Remove(ctx context.Context, u User, guid string) error
}

var _ Store = (*File)(nil)
