package store

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/awnumar/memguard"
	"github.com/google/uuid"

	"github.com/oauthfs/oauthfs/internal/safepath"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// Magic strings start every store file; the digit is the format version.
const (
	storeMagicV1 = "OAUTHFS1" // one file per user, every credential in it
	storeMagic   = "OAUTHFS2" // one file per user and integration
)

// File keeps one AEAD-sealed file per user and integration:
// STATE_DIR/UID/GUID.cred (docs/store-format.md). A change writes only its
// own record, so the cost of a save does not grow with the number of
// credentials a user holds. It keys users by UID. It is safe for
// concurrent use; callers serialise saves of one record.
type File struct {
	dir string
	// key is the AES-256 key; owned by the store, wiped by memguard.Purge.
	key *memguard.Enclave
}

// OpenFile opens the store in dir with the key in keyFile. A missing key
// file is created (0600) when the directory holds no store file yet; if
// store files exist, a missing key is an error, since a new key could not
// open them. The directory and the key file must belong to this user or
// root and not be open to others: anything else could have been planted.
func OpenFile(dir, keyFile string) (*File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: state_dir: %w", err)
	}
	if err := checkOwned("state_dir", dir, 0o022); err != nil {
		return nil, err
	}
	if err := safepath.CheckDirs("state_dir", dir); err != nil {
		return nil, fmt.Errorf("store: %w: %w", err, ErrNotPrivate)
	}
	key, err := loadKey(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		if n := countStores(dir); n > 0 {
			return nil, fmt.Errorf("store: key_file %s is missing but %s holds %d store file(s) sealed with it: %w",
				keyFile, dir, n, ErrKeyMissing)
		}
		key, err = createKey(keyFile)
	}
	if err != nil {
		return nil, err
	}
	return &File{dir: dir, key: key}, nil
}

// countStores counts the users with credentials in dir, in either format.
func countStores(dir string) int {
	v1, _ := filepath.Glob(filepath.Join(dir, "*.store"))
	v2, _ := filepath.Glob(filepath.Join(dir, "*", "*.cred"))
	return len(v1) + len(v2)
}

// checkOwned refuses path unless it belongs to this user or root and has
// none of the permission bits in forbidden. what names it in the error.
func checkOwned(what, path string, forbidden os.FileMode) error {
	if lst, err := os.Lstat(path); err == nil && lst.Mode()&os.ModeSymlink != 0 {
		if sys, ok := lst.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && sys.Uid != 0 {
			return fmt.Errorf("store: %s %s is a symbolic link made by uid %d, not by you or root: another user could have planted it: %w",
				what, path, sys.Uid, ErrNotPrivate)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	me := os.Geteuid()
	if int(sys.Uid) != me && sys.Uid != 0 {
		return fmt.Errorf("store: %s %s belongs to uid %d, not to you (uid %d) or root: another user could have planted it: %w",
			what, path, sys.Uid, me, ErrNotPrivate)
	}
	if p := st.Mode().Perm(); p&forbidden != 0 {
		return fmt.Errorf("store: %s %s has mode %04o, open to group or others (it must not have %04o): %w",
			what, path, p, p&forbidden, ErrNotPrivate)
	}
	return nil
}

func (s *File) userDir(uid int) string { return filepath.Join(s.dir, strconv.Itoa(uid)) }

func (s *File) path(uid int, guid string) string {
	return filepath.Join(s.userDir(uid), guid+".cred")
}

// aead returns the cipher for the store key.
func (s *File) aead() (cipher.AEAD, error) { return newAEAD(s.key) }

// additional binds a record file to its user and integration: a file
// copied to another name does not open.
func additional(uid int, guid string) []byte {
	return []byte(storeMagic + " uid=" + strconv.Itoa(uid) + " guid=" + guid)
}

// Save seals r into its file atomically: a temporary file is written and
// fsynced, renamed over the old one, and the directory is fsynced, so a
// crash leaves the old or the new state, never a torn one.
func (s *File) Save(_ context.Context, u User, r Record) error {
	uid := u.UID
	plain, err := encodeRecord(r)
	if err != nil {
		return err
	}
	defer plain.Destroy()
	aead, err := s.aead()
	if err != nil {
		return err
	}
	out := make([]byte, 0, len(storeMagic)+aead.NonceSize()+plain.Size()+aead.Overhead())
	out = append(out, storeMagic...)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	out = aead.Seal(out, nonce, plain.Bytes(), additional(uid, r.GUID))
	dir := s.userDir(uid)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store: save credentials: %w", err)
	}
	return writeAtomic(dir, s.path(uid, r.GUID), out)
}

// Remove deletes the record of guid, if there is one, durably.
func (s *File) Remove(_ context.Context, u User, guid string) error {
	uid := u.UID
	err := os.Remove(s.path(uid, guid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: remove credentials: %w", err)
	}
	return syncDir(s.userDir(uid))
}

// writeAtomic replaces final (in dir) with data: temporary file, fsync,
// rename, directory fsync.
func writeAtomic(dir, final string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(final)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: save credentials: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("store: save credentials to %s: %w", final, werr)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("store: save credentials to %s: %w", final, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	return nil
}

// Load opens the user's records. A user with none is an empty store; a
// file that exists but does not open is an ErrUnusable error naming it. A
// store in the first format (one file per user) is converted: every record
// is written in the new format before the old file goes.
func (s *File) Load(ctx context.Context, u User) ([]Record, error) {
	uid := u.UID
	old := filepath.Join(s.dir, strconv.Itoa(uid)+".store")
	if _, err := os.Lstat(old); err == nil {
		return s.migrate(ctx, uid, old)
	}
	dir := s.userDir(uid)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err := checkOwned("credential directory", dir, 0o022); err != nil {
		return nil, err
	}
	removeStaleTemps(dir)
	names, err := filepath.Glob(filepath.Join(dir, "*.cred"))
	if err != nil {
		return nil, fmt.Errorf("store: read credential store: %w", err)
	}
	aead, err := s.aead()
	if err != nil {
		return nil, err
	}
	var recs []Record
	for _, name := range names {
		guid := strings.TrimSuffix(filepath.Base(name), ".cred")
		if u, err := uuid.Parse(guid); err != nil || u.String() != guid {
			continue // not ours
		}
		r, err := s.loadRecord(aead, uid, guid, name)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

func (s *File) loadRecord(aead cipher.AEAD, uid int, guid, path string) (Record, error) {
	bad := func(why string) error {
		return fmt.Errorf("store: credential store %s %s; it was left untouched: %w", path, why, ErrUnusable)
	}
	if err := checkOwned("credential file", path, 0o022); err != nil {
		return Record{}, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Record{}, fmt.Errorf("store: read credential store: %w", err)
	}
	if len(data) < len(storeMagic)+aead.NonceSize()+aead.Overhead() || string(data[:len(storeMagic)]) != storeMagic {
		return Record{}, bad("is truncated or not an oauthfs store")
	}
	nonce := data[len(storeMagic) : len(storeMagic)+aead.NonceSize()]
	ct := data[len(storeMagic)+aead.NonceSize():]
	if len(ct) == aead.Overhead() {
		return Record{}, bad("is empty")
	}
	plain, err := secmem.NewBuffer(len(ct) - aead.Overhead())
	if err != nil {
		return Record{}, err
	}
	defer plain.Destroy()
	if _, err := aead.Open(plain.Bytes()[:0], nonce, ct, additional(uid, guid)); err != nil {
		return Record{}, bad("does not open with the key in key_file (corrupt, sealed with another key, or copied from another user or integration)")
	}
	r, err := decodeRecord(plain.Bytes())
	if err != nil {
		return Record{}, bad("is corrupt (" + err.Error() + ")")
	}
	r.GUID = guid
	return r, nil
}

// removeStaleTemps deletes temporary files that a process killed while
// saving left behind. Only files older than a minute go, so a save in
// progress elsewhere is never disturbed. They are never read.
func removeStaleTemps(dir string) {
	tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	for _, f := range tmps {
		if st, err := os.Lstat(f); err == nil && time.Since(st.ModTime()) > time.Minute {
			os.Remove(f)
		}
	}
}

// migrate converts the first format's file at old into per-record files
// and then removes it. A crash on the way leaves old in place, and the
// next load converts it again from the start.
func (s *File) migrate(ctx context.Context, uid int, old string) ([]Record, error) {
	bad := func(why string) error {
		return fmt.Errorf("store: credential store %s %s; it was left untouched: %w", old, why, ErrUnusable)
	}
	if err := checkOwned("credential file", old, 0o022); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(old)
	if err != nil {
		return nil, fmt.Errorf("store: read credential store: %w", err)
	}
	aead, err := s.aead()
	if err != nil {
		return nil, err
	}
	if len(data) < len(storeMagicV1)+aead.NonceSize()+aead.Overhead() || string(data[:len(storeMagicV1)]) != storeMagicV1 {
		return nil, bad("is truncated or not an oauthfs store")
	}
	nonce := data[len(storeMagicV1) : len(storeMagicV1)+aead.NonceSize()]
	ct := data[len(storeMagicV1)+aead.NonceSize():]
	plain, err := secmem.NewBuffer(max(1, len(ct)-aead.Overhead()))
	if err != nil {
		return nil, err
	}
	defer plain.Destroy()
	if _, err := aead.Open(plain.Bytes()[:0], nonce, ct, []byte(storeMagicV1+" uid="+strconv.Itoa(uid))); err != nil {
		return nil, bad("does not open with the key in key_file (corrupt, or sealed with another key)")
	}
	recs, err := decodeV1(plain.Bytes()[:len(ct)-aead.Overhead()])
	if err != nil {
		return nil, bad("is corrupt (" + err.Error() + ")")
	}
	for _, r := range recs {
		if err := s.Save(ctx, User{UID: uid}, r); err != nil {
			return nil, err
		}
	}
	if err := os.Remove(old); err != nil {
		return nil, fmt.Errorf("store: remove the converted store %s: %w", old, err)
	}
	if err := syncDir(s.dir); err != nil {
		return nil, err
	}
	return recs, nil
}
