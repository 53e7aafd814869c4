// Package secmem hands out memguard buffers within a fixed budget of
// locked memory.
//
// memguard locks every LockedBuffer's pages with mlock(2), and when mlock
// fails (a process without CAP_IPC_LOCK that reaches RLIMIT_MEMLOCK) it
// panics; worse, a failure inside its key's View leaves its own mutex held,
// so the next wipe hangs the process for good. oauthfs therefore never asks
// memguard for locked pages beyond a budget taken from RLIMIT_MEMLOCK at
// start: every buffer, every enclave sealed or opened, acquires its pages
// here first (plus one page for the key view memguard makes while it
// seals or opens). When the budget is spent, a caller waits at most
// [maxWait] and then gets an error wrapping [ErrExhausted] for that one
// request, never a panic, a hang or a lost key.
//
// Every function is safe for concurrent use.
package secmem

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/sync/semaphore"
)

// ErrExhausted is wrapped when the locked-memory budget stays spent for
// longer than [maxWait].
var ErrExhausted = errors.New("locked memory budget exhausted")

// maxWait bounds how long a caller waits for locked pages.
const maxWait = 2 * time.Second

// reserve is what the budget leaves to memguard's own key (three locked
// pages) and to anything else in the process that locks memory.
const reserve = 32

// rlimitMemlock is RLIMIT_MEMLOCK on Linux, which package syscall does
// not name.
const rlimitMemlock = 8

// maxPages caps the budget when the limit is high or absent: more would
// only let a flood of requests pin more memory.
const maxPages = 4096

var (
	pageSize = int64(os.Getpagesize())
	once     sync.Once
	capacity int64
	pool     *semaphore.Weighted
	inUse    atomic.Int64
)

func setup() {
	once.Do(func() {
		capacity = maxPages
		var lim syscall.Rlimit
		if syscall.Getrlimit(rlimitMemlock, &lim) == nil && lim.Cur != ^uint64(0) {
			capacity = min(capacity, int64(lim.Cur)/pageSize-reserve)
		}
		capacity = max(capacity, 8)
		pool = semaphore.NewWeighted(capacity)
	})
}

// pages is how many locked pages memguard uses for a buffer of size bytes.
func pages(size int) int64 { return max(1, (int64(size)+pageSize-1)/pageSize) }

// acquire takes n pages, waiting at most maxWait.
func acquire(n int64) error {
	setup()
	if n > capacity {
		return fmt.Errorf("secmem: %d pages wanted, the budget is %d: %w", n, capacity, ErrExhausted)
	}
	if !pool.TryAcquire(n) {
		ctx, cancel := context.WithTimeout(context.Background(), maxWait)
		defer cancel()
		if pool.Acquire(ctx, n) != nil {
			return fmt.Errorf("secmem: all %d pages of locked memory stayed in use for %v: %w", capacity, maxWait, ErrExhausted)
		}
	}
	inUse.Add(n)
	return nil
}

func release(n int64) {
	inUse.Add(-n)
	pool.Release(n)
}

// Buffer is a memguard LockedBuffer whose pages count against the budget.
// Its owner must call Destroy, which wipes it and returns its pages.
// A Buffer is not safe for concurrent Destroy and use.
type Buffer struct {
	lb    *memguard.LockedBuffer
	pages int64
}

// NewBuffer returns a zeroed buffer of size bytes (size > 0).
func NewBuffer(size int) (*Buffer, error) {
	if size <= 0 {
		return nil, errors.New("secmem: buffer size must be positive")
	}
	n := pages(size)
	if err := acquire(n); err != nil {
		return nil, err
	}
	return &Buffer{lb: memguard.NewBuffer(size), pages: n}, nil
}

// Random returns a buffer of size random bytes.
func Random(size int) (*Buffer, error) {
	n := pages(size)
	if err := acquire(n + 1); err != nil {
		return nil, err
	}
	defer release(1)
	return &Buffer{lb: memguard.NewBufferRandom(size), pages: n}, nil
}

// Open decrypts e into a new buffer, which the caller owns.
func Open(e *memguard.Enclave) (*Buffer, error) {
	if e == nil {
		return nil, errors.New("secmem: open of a nil enclave")
	}
	n := pages(e.Size())
	if err := acquire(n + 1); err != nil { // +1: memguard's key view
		return nil, err
	}
	defer release(1)
	lb, err := e.Open()
	if err != nil {
		release(n)
		return nil, fmt.Errorf("secmem: open enclave: %w", err)
	}
	return &Buffer{lb: lb, pages: n}, nil
}

// TryOpen is Open without waiting: it returns nil, nil when the budget is
// spent right now.
func TryOpen(e *memguard.Enclave) (*Buffer, error) {
	setup()
	n := pages(e.Size())
	if !pool.TryAcquire(n + 1) {
		return nil, nil
	}
	inUse.Add(n + 1)
	defer release(1)
	lb, err := e.Open()
	if err != nil {
		release(n)
		return nil, fmt.Errorf("secmem: open enclave: %w", err)
	}
	return &Buffer{lb: lb, pages: n}, nil
}

// Seal encrypts b into a new enclave and wipes b. An empty b gives a nil
// enclave and no error.
func Seal(b []byte) (*memguard.Enclave, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if err := acquire(1); err != nil { // memguard's key view
		memguard.WipeBytes(b)
		return nil, err
	}
	defer release(1)
	return memguard.NewEnclave(b), nil
}

// Bytes returns the buffer's memory. It is valid until Destroy.
func (b *Buffer) Bytes() []byte { return b.lb.Bytes() }

// Size returns the buffer's length in bytes.
func (b *Buffer) Size() int { return b.lb.Size() }

// Seal encrypts the buffer into a new enclave and destroys the buffer.
func (b *Buffer) Seal() (*memguard.Enclave, error) {
	defer b.Destroy()
	if err := acquire(1); err != nil {
		return nil, err
	}
	defer release(1)
	return b.lb.Seal(), nil
}

// Destroy wipes the buffer and returns its pages to the budget. It may be
// called more than once.
func (b *Buffer) Destroy() {
	if b == nil || b.lb == nil {
		return
	}
	b.lb.Destroy()
	b.lb = nil
	release(b.pages)
}
