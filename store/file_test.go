package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
)

const uid = 1000

// sealV1 writes recs in the first store format (one file per user), as
// oauthfs did before per-record files.
func sealV1(t *testing.T, s *File, uid int, recs []struct{ guid, access, refresh string }) {
	t.Helper()
	var p []byte
	p = binary.BigEndian.AppendUint32(p, uint32(len(recs)))
	for _, r := range recs {
		p = appendStr16(p, r.guid)
		p = append(p, 1) // signed in
		p = binary.BigEndian.AppendUint64(p, uint64(time.Now().Add(time.Hour).UnixNano()))
		p = binary.BigEndian.AppendUint64(p, uint64(time.Now().UnixNano()))
		p = binary.BigEndian.AppendUint32(p, uint32(len(r.access)))
		p = append(p, r.access...)
		p = binary.BigEndian.AppendUint32(p, uint32(len(r.refresh)))
		p = append(p, r.refresh...)
		p = appendStr16(p, "read")
		p = appendStr16(p, "")
	}
	aead, err := s.aead()
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	out := append([]byte(storeMagicV1), nonce...)
	out = aead.Seal(out, nonce, p, []byte(storeMagicV1+" uid="+strconv.Itoa(uid)))
	if err := os.WriteFile(filepath.Join(s.dir, strconv.Itoa(uid)+".store"), out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t *testing.T, dir string) *File {
	t.Helper()
	s, err := OpenFile(dir, filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func read(t *testing.T, tok *credential.Token) string {
	t.Helper()
	buf := make([]byte, tok.Len())
	n, err := tok.ReadAt(buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestFileMigratesTheFirstFormat(t *testing.T) {
	dir := t.TempDir()
	const g1, g2 = "a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d", "11111111-2222-4333-8444-555555555555"
	sealV1(t, mustOpen(t, dir), uid, []struct{ guid, access, refresh string }{
		{g1, "at-1", "rt-1"},
		{g2, "removed-at", "removed-rt"}, // an integration no longer configured
	})
	recs, err := mustOpen(t, dir).Load(context.Background(), User{UID: uid})
	if err != nil || len(recs) != 2 {
		t.Fatalf("Load after migration = %d records, %v; want 2", len(recs), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "1000.store")); !os.IsNotExist(err) {
		t.Errorf("the old store file is still there after migration: %v", err)
	}
	for _, g := range []string{g1, g2} {
		if _, err := os.Stat(filepath.Join(dir, "1000", g+".cred")); err != nil {
			t.Errorf("record %s after migration: %v", g, err)
		}
	}
	// And it all survives one more load, in the new format.
	recs, err = mustOpen(t, dir).Load(context.Background(), User{UID: uid})
	got := map[string]string{}
	for _, r := range recs {
		got[r.GUID] = read(t, r.Access)
	}
	if err != nil || got[g1] != "at-1" || got[g2] != "removed-at" {
		t.Errorf("Load a second time = %v, %v", got, err)
	}
}

// TestFileRefusesPlantedState plays another user who prepared the state
// directory, the key or a record: each is refused with a reason and a
// fix.
func TestFileRefusesPlantedState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
	const other = 65534 // nobody
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir string)
		want  []string
	}{
		{"state_dir owned by another user", func(t *testing.T, dir string) {
			os.Chown(dir, other, other)
		}, []string{"state_dir", "belongs to uid 65534", "planted"}},
		{"state_dir writable by others", func(t *testing.T, dir string) {
			os.Chmod(dir, 0o777)
		}, []string{"state_dir", "mode 0777", "must not have 0022"}},
		{"key owned by another user", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
			os.Chown(filepath.Join(dir, "key"), other, other)
		}, []string{"key_file", "belongs to uid 65534"}},
		{"key readable by others", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o644)
		}, []string{"key_file", "mode 0644", "must not have 0044"}},
		// A directory on the way that others may write to lets them swap
		// the state directory, or the key file's directory, while the
		// broker runs.
		{"state_dir in a directory others may write to", func(t *testing.T, dir string) {
			os.Chmod(filepath.Dir(dir), 0o777)
		}, []string{"state_dir", "mode 0777", "group or others can replace what is in it"}},
		{"key_file in a directory of another user", func(t *testing.T, dir string) {
			os.Mkdir(filepath.Join(dir, "keys"), 0o700)
			os.Chown(filepath.Join(dir, "keys"), other, other)
		}, []string{"key_file: the directory", "keys belongs to uid 65534"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			os.Mkdir(dir, 0o700)
			tc.plant(t, dir)
			key := filepath.Join(dir, "key")
			if _, err := os.Stat(filepath.Join(dir, "keys")); err == nil {
				key = filepath.Join(dir, "keys", "key")
			}
			_, err := OpenFile(dir, key)
			if err == nil {
				t.Fatal("OpenFile accepted the planted state")
			}

			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("OpenFile = %v; want it to say %q", err, w)
				}
			}
		})
	}
	t.Run("record planted by another user", func(t *testing.T) {
		dir := t.TempDir()
		s := mustOpen(t, dir)
		tok, _ := credential.NewToken([]byte("mine"), time.Time{}, time.Now())
		const g = "a3c4f5d6-b8e9-4a1b-9c2d-3e4f5a6b7c8d"
		if err := s.Save(context.Background(), User{UID: uid}, Record{GUID: g, Access: tok, Status: credential.StatusSignedIn}); err != nil {
			t.Fatal(err)
		}
		os.Chown(filepath.Join(dir, "1000", g+".cred"), other, other)
		_, err := mustOpen(t, dir).Load(context.Background(), User{UID: uid})
		if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("Load = %v; want the planted record refused", err)
		}
	})
}

// FuzzDecodeRecord feeds the plaintext of a store record (what an AEAD
// opened: a key holder's file, or a bug).
func FuzzDecodeRecord(f *testing.F) {
	r := Record{Status: credential.StatusSignedIn, Scopes: []string{"read"}, Error: "e", Account: "a"}
	if err := r.seal([]byte("access"), []byte("refresh"), time.Now(), time.Now(), credential.Extras{}); err != nil {
		f.Fatal(err)
	}
	good, err := encodeRecord(r)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte(nil), good.Bytes()...))
	good.Destroy()
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := decodeRecord(p)
		if err != nil {
			return
		}
		once, err := encodeRecord(r)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		defer once.Destroy()
		// Scopes are normalised on the way in; after that a record
		// survives decode and encode unchanged.
		r2, err := decodeRecord(once.Bytes())
		if err != nil {
			t.Fatalf("an encoded record does not decode: %v", err)
		}
		twice, err := encodeRecord(r2)
		if err != nil {
			t.Fatal(err)
		}
		defer twice.Destroy()
		if !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("decode then encode changed the record:\n%x\n%x", once.Bytes(), twice.Bytes())
		}
	})
}

// FuzzDecodeV1 feeds the first store format, read once on migration.
func FuzzDecodeV1(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 1, 0, 2, 'a', 'b'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		decodeV1(p)
	})
}
