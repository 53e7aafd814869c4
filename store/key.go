package store

// The store key: loading and making key_file, and the cipher both stores
// seal records with.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/awnumar/memguard"

	"github.com/oauthfs/oauthfs/internal/safepath"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// loadKey reads the key in path. The directories on the way must be
// safe from other users (safepath.CheckDirs), and the file is checked
// once open, on its descriptor: a check by path could pass for one file
// while another, swapped in between, is read.
func loadKey(path string) (*memguard.Enclave, error) {
	if err := safepath.CheckDirs("key_file", filepath.Dir(path)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("store: %w: %w", err, ErrNotPrivate)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("store: key_file: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("store: key_file %s is not a regular file: %w", path, ErrUnusable)
	}
	if err := safepath.CheckFile("key_file", f, 0o077); err != nil {
		return nil, fmt.Errorf("store: %w: %w", err, ErrNotPrivate)
	}
	bad := fmt.Errorf("store: key_file %s: want 64 hex digits (a 32-byte key): %w", path, ErrUnusable)
	text, err := secmem.NewBuffer(2*32 + 2)
	if err != nil {
		return nil, err
	}
	defer text.Destroy()
	n, err := io.ReadFull(f, text.Bytes())
	if (err != nil && !errors.Is(err, io.ErrUnexpectedEOF)) || n < 64 || n > 65 || (n == 65 && text.Bytes()[64] != '\n') {
		return nil, bad
	}
	key, err := secmem.NewBuffer(32)
	if err != nil {
		return nil, err
	}
	if _, err := hex.Decode(key.Bytes(), text.Bytes()[:64]); err != nil {
		key.Destroy()
		return nil, bad
	}
	return key.Seal()
}

func createKey(path string) (*memguard.Enclave, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: key_file: %w", err)
	}
	if err := safepath.CheckDirs("key_file", filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("store: %w: %w", err, ErrNotPrivate)
	}
	key, err := secmem.Random(32)
	if err != nil {
		return nil, err
	}
	text, err := secmem.NewBuffer(65)
	if err != nil {
		key.Destroy()
		return nil, err
	}
	defer text.Destroy()
	hex.Encode(text.Bytes(), key.Bytes())
	text.Bytes()[64] = '\n'
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		key.Destroy()
		return nil, fmt.Errorf("store: create key_file: %w", err)
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
		return nil, fmt.Errorf("store: write key_file %s: %w", path, werr)
	}
	return key.Seal()
}

// newAEAD returns AES-256-GCM with key. The expanded key schedule lives
// on the Go heap for the duration of one seal or open.
func newAEAD(key *memguard.Enclave) (cipher.AEAD, error) {
	k, err := secmem.Open(key)
	if err != nil {
		return nil, fmt.Errorf("store: open store key: %w", err)
	}
	defer k.Destroy()
	block, err := aes.NewCipher(k.Bytes())
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// deriveKey returns a key for another use than sealing records: an HMAC
// of label under key, which every host holding key derives alike.
func deriveKey(key *memguard.Enclave, label string) (*memguard.Enclave, error) {
	k, err := secmem.Open(key)
	if err != nil {
		return nil, fmt.Errorf("store: open store key: %w", err)
	}
	defer k.Destroy()
	m := hmac.New(sha256.New, k.Bytes())
	m.Write([]byte(label))
	return secmem.Seal(m.Sum(nil))
}
