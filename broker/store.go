package broker

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/broker/api"
)

// ErrStore is wrapped by every error about a store file that exists but
// cannot be used (corrupt, truncated, sealed with another key). Such a
// file is never discarded or overwritten.
var ErrStore = errors.New("credential store unusable")

// storeMagic starts every store file; the 1 is the format version.
const storeMagic = "OAUTHFS1"

// store keeps one AEAD-sealed file per user in a directory. It is safe
// for concurrent use, but callers serialise saves per user (see
// Broker.persist) so that a later state is never overwritten by an earlier
// one.
type store struct {
	dir string
	// key is the AES-256 key; owned by the store, wiped by memguard.Purge.
	key *memguard.Enclave
}

// openStore opens the store in dir with the key in keyFile. A missing key
// file is created (0600) when the directory holds no store file yet; if
// store files exist, a missing key is an error, since a new key could not
// open them.
func openStore(dir, keyFile string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("broker: state_dir: %w", err)
	}
	key, err := loadKey(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		if existing, _ := filepath.Glob(filepath.Join(dir, "*.store")); len(existing) > 0 {
			return nil, fmt.Errorf("broker: key_file %s is missing but %s holds %d store file(s) sealed with it; restore the key file, or move the store files away to start afresh: %w",
				keyFile, dir, len(existing), ErrStore)
		}
		key, err = createKey(keyFile)
	}
	if err != nil {
		return nil, err
	}
	removeStaleTemps(dir)
	return &store{dir: dir, key: key}, nil
}

// removeStaleTemps deletes temporary files that a process killed while
// saving left behind. Only files older than a minute go, so a save in
// progress elsewhere is never disturbed. They are never read.
func removeStaleTemps(dir string) {
	tmps, _ := filepath.Glob(filepath.Join(dir, ".*.store.tmp-*"))
	for _, f := range tmps {
		if st, err := os.Stat(f); err == nil && time.Since(st.ModTime()) > time.Minute {
			os.Remove(f)
		}
	}
}

func loadKey(path string) (*memguard.Enclave, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("broker: key_file: %w", err)
	}
	defer f.Close()
	buf, err := memguard.NewBufferFromReader(f, 2*32+1)
	if err != nil && buf.Size() < 64 {
		buf.Destroy()
		return nil, fmt.Errorf("broker: key_file %s: want 64 hex digits (a 32-byte key): %w", path, ErrStore)
	}
	defer buf.Destroy()
	raw := buf.Bytes()[:64]
	if buf.Size() == 65 && buf.Bytes()[64] != '\n' {
		return nil, fmt.Errorf("broker: key_file %s: want 64 hex digits (a 32-byte key): %w", path, ErrStore)
	}
	key := memguard.NewBuffer(32)
	if _, err := hex.Decode(key.Bytes(), raw); err != nil {
		key.Destroy()
		return nil, fmt.Errorf("broker: key_file %s: want 64 hex digits (a 32-byte key): %w", path, ErrStore)
	}
	return key.Seal(), nil
}

func createKey(path string) (*memguard.Enclave, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("broker: key_file: %w", err)
	}
	key := memguard.NewBufferRandom(32)
	text := memguard.NewBuffer(65)
	defer text.Destroy()
	hex.Encode(text.Bytes(), key.Bytes())
	text.Bytes()[64] = '\n'
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		key.Destroy()
		return nil, fmt.Errorf("broker: create key_file: %w", err)
	}
	_, werr := f.Write(text.Bytes())
	serr := f.Sync()
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = serr
	}
	if werr != nil {
		key.Destroy()
		os.Remove(path)
		return nil, fmt.Errorf("broker: write key_file %s: %w", path, werr)
	}
	return key.Seal(), nil
}

func (s *store) path(uid int) string { return filepath.Join(s.dir, strconv.Itoa(uid)+".store") }

// aead returns the cipher for the store key. The expanded key schedule
// lives on the Go heap for the duration of one seal or open.
func (s *store) aead() (cipher.AEAD, error) {
	k, err := s.key.Open()
	if err != nil {
		return nil, fmt.Errorf("broker: open store key: %w", err)
	}
	defer k.Destroy()
	block, err := aes.NewCipher(k.Bytes())
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// additional binds a store file to its user: a file copied to another
// uid's name does not open.
func additional(uid int) []byte { return []byte(storeMagic + " uid=" + strconv.Itoa(uid)) }

// record is one credential as stored.
type record struct {
	guid     string
	access   *api.Token
	refresh  *memguard.Enclave
	scopes   []string
	status   api.Status
	lastErr  string
	expiry   time.Time
	obtained time.Time
}

// save seals recs into the user's file atomically: a temporary file is
// written and fsynced, renamed over the old one, and the directory is
// fsynced, so a crash leaves the old or the new state, never a torn one.
func (s *store) save(uid int, recs []record) error {
	plain, err := encode(recs)
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
	out = aead.Seal(out, nonce, plain.Bytes(), additional(uid))

	final := s.path(uid)
	tmp, err := os.CreateTemp(s.dir, "."+strconv.Itoa(uid)+".store.tmp-*")
	if err != nil {
		return fmt.Errorf("broker: save credentials: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("broker: save credentials: %w", err)
	}
	_, werr := tmp.Write(out)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("broker: save credentials to %s: %w", final, werr)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("broker: save credentials to %s: %w", final, err)
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("broker: sync %s: %w", s.dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("broker: sync %s: %w", s.dir, err)
	}
	return nil
}

// load opens the user's file. A missing file is an empty store; a file
// that exists but does not open is an ErrStore error naming it.
func (s *store) load(uid int) ([]record, error) {
	path := s.path(uid)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("broker: read credential store: %w", err)
	}
	bad := func(why string) error {
		return fmt.Errorf("broker: credential store %s %s; it was left untouched (restore it, or move it away to sign in afresh): %w", path, why, ErrStore)
	}
	aead, err := s.aead()
	if err != nil {
		return nil, err
	}
	if len(data) < len(storeMagic)+aead.NonceSize()+aead.Overhead() || string(data[:len(storeMagic)]) != storeMagic {
		return nil, bad("is truncated or not an oauthfs store")
	}
	nonce := data[len(storeMagic) : len(storeMagic)+aead.NonceSize()]
	ct := data[len(storeMagic)+aead.NonceSize():]
	plain := memguard.NewBuffer(len(ct) - aead.Overhead())
	defer plain.Destroy()
	if _, err := aead.Open(plain.Bytes()[:0], nonce, ct, additional(uid)); err != nil {
		return nil, bad("does not open with the key in key_file (corrupt, or sealed with another key)")
	}
	recs, err := decode(plain.Bytes())
	if err != nil {
		return nil, bad("is corrupt (" + err.Error() + ")")
	}
	return recs, nil
}

// encode writes recs into a new locked buffer, which the caller destroys.
// Layout, big-endian: u32 count; per record: str16 guid, u8 status,
// i64 expiry, i64 obtained (unix ns, 0 = none), bytes32 access,
// bytes32 refresh, str16 scopes, str16 error.
func encode(recs []record) (*memguard.LockedBuffer, error) {
	type opened struct{ access, refresh *memguard.LockedBuffer }
	bufs := make([]opened, len(recs))
	defer func() {
		for _, b := range bufs {
			if b.access != nil {
				b.access.Destroy()
			}
			if b.refresh != nil {
				b.refresh.Destroy()
			}
		}
	}()
	size := 4
	for i, r := range recs {
		var err error
		if r.access != nil {
			if bufs[i].access, err = r.access.Open(); err != nil {
				return nil, err
			}
		}
		if r.refresh != nil {
			if bufs[i].refresh, err = r.refresh.Open(); err != nil {
				return nil, err
			}
		}
		size += 2 + len(r.guid) + 1 + 8 + 8 + 4 + bufLen(bufs[i].access) + 4 + bufLen(bufs[i].refresh) +
			2 + len(strings.Join(r.scopes, " ")) + 2 + len(r.lastErr)
	}
	out := memguard.NewBuffer(size)
	b := out.Bytes()[:0]
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for i, r := range recs {
		b = appendStr16(b, r.guid)
		b = append(b, statusByte[r.status])
		b = binary.BigEndian.AppendUint64(b, uint64(unixNano(r.expiry)))
		b = binary.BigEndian.AppendUint64(b, uint64(unixNano(r.obtained)))
		b = appendBytes32(b, bufs[i].access)
		b = appendBytes32(b, bufs[i].refresh)
		b = appendStr16(b, strings.Join(r.scopes, " "))
		b = appendStr16(b, r.lastErr)
	}
	if len(b) != size {
		out.Destroy()
		return nil, fmt.Errorf("broker: encode store: size %d, want %d", len(b), size)
	}
	return out, nil
}

var statusByte = map[api.Status]byte{api.StatusSignedIn: 1, api.StatusExpired: 2, api.StatusError: 3}

func bufLen(b *memguard.LockedBuffer) int {
	if b == nil {
		return 0
	}
	return b.Size()
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendStr16(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBytes32(b []byte, lb *memguard.LockedBuffer) []byte {
	if lb == nil {
		return binary.BigEndian.AppendUint32(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(lb.Size()))
	return append(b, lb.Bytes()...)
}

// decode parses what encode wrote. Token bytes go straight from the
// locked plaintext into new enclaves.
func decode(p []byte) ([]record, error) {
	d := decoder{p: p}
	n := d.u32()
	if d.err == nil && n > 1<<16 {
		d.err = errors.New("implausible record count")
	}
	var recs []record
	for i := uint32(0); i < n && d.err == nil; i++ {
		r := record{guid: d.str16()}
		sb := d.u8()
		for s, v := range statusByte {
			if v == sb {
				r.status = s
			}
		}
		r.expiry, r.obtained = fromUnixNano(int64(d.u64())), fromUnixNano(int64(d.u64()))
		if a := d.bytes32(); len(a) > 0 {
			r.access = api.NewToken(append([]byte(nil), a...), r.expiry, r.obtained)
		}
		if rt := d.bytes32(); len(rt) > 0 {
			r.refresh = memguard.NewEnclave(append([]byte(nil), rt...))
		}
		r.scopes = strings.Fields(d.str16())
		r.lastErr = d.str16()
		if r.status == "" && d.err == nil {
			d.err = fmt.Errorf("record %d: unknown status %d", i, sb)
		}
		recs = append(recs, r)
	}
	if d.err == nil && len(d.p) != 0 {
		d.err = errors.New("trailing bytes")
	}
	return recs, d.err
}

type decoder struct {
	p   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.p) {
		d.err = errors.New("truncated record")
		return nil
	}
	b := d.p[:n]
	d.p = d.p[n:]
	return b
}

func (d *decoder) u8() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) str16() string {
	b := d.take(2)
	if b == nil {
		return ""
	}
	return string(d.take(int(binary.BigEndian.Uint16(b))))
}

func (d *decoder) bytes32() []byte {
	b := d.take(4)
	if b == nil {
		return nil
	}
	return d.take(int(binary.BigEndian.Uint32(b)))
}
