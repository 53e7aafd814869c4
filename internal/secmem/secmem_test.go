package secmem

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/sync/semaphore"
)

// withCapacity runs the test with a budget of n pages.
func withCapacity(t *testing.T, n int64) {
	setup()
	old := pool
	oldCap := capacity
	pool, capacity = semaphore.NewWeighted(n), n
	t.Cleanup(func() { pool, capacity = old, oldCap })
}

func TestBudgetIsEnforced(t *testing.T) {
	withCapacity(t, 4)
	e, err := Seal([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	var held []*Buffer
	for i := 0; i < 3; i++ { // each open needs 1 page + 1 for the key view
		b, err := Open(e)
		if err != nil {
			t.Fatalf("Open #%d = %v", i+1, err)
		}
		held = append(held, b)
	}
	start := time.Now()
	_, err = Open(e)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("Open past the budget = %v; want ErrExhausted", err)
	}
	if waited := time.Since(start); waited < maxWait/2 || waited > 3*maxWait {
		t.Errorf("Open past the budget waited %v; want about %v", waited, maxWait)
	}
	if b, err := TryOpen(e); b != nil || err != nil {
		t.Errorf("TryOpen past the budget = %v, %v; want nil, nil", b, err)
	}
	held[0].Destroy()
	held[0].Destroy() // twice is harmless
	b, err := Open(e)
	if err != nil || string(b.Bytes()) != "secret" {
		t.Fatalf("Open after a Destroy = %v", err)
	}
	b.Destroy()
	for _, b := range held[1:] {
		b.Destroy()
	}
	if n := inUse.Load(); n != 0 {
		t.Errorf("pages in use after destroying everything = %d", n)
	}
}

func TestWaitersGetPagesWhenFreed(t *testing.T) {
	withCapacity(t, 2)
	b, err := NewBuffer(10)
	if err != nil {
		t.Fatal(err)
	}
	e := memguard.NewEnclave([]byte("x"))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, err := Open(e) // needs 2 pages: waits for b
		if err != nil {
			t.Errorf("Open while waiting = %v", err)
			return
		}
		got.Destroy()
	}()
	time.Sleep(50 * time.Millisecond)
	b.Destroy()
	wg.Wait()
}

func TestSealWipesAndBuffersRoundTrip(t *testing.T) {
	src := []byte("token-value")
	e, err := Seal(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range src {
		if c != 0 {
			t.Fatalf("Seal left its input unwiped: %q", src)
		}
	}
	if e2, err := Seal(nil); e2 != nil || err != nil {
		t.Errorf("Seal(nil) = %v, %v", e2, err)
	}
	b, err := NewBuffer(5)
	if err != nil {
		t.Fatal(err)
	}
	copy(b.Bytes(), "hello")
	e3, err := b.Seal()
	if err != nil {
		t.Fatal(err)
	}
	o, err := Open(e3)
	if err != nil || string(o.Bytes()) != "hello" || o.Size() != 5 {
		t.Fatalf("Open(Seal) = %q, %v", o.Bytes(), err)
	}
	o.Destroy()
	if _, err := Open(e); err != nil {
		t.Fatal(err)
	}
	if r, err := Random(32); err != nil || r.Size() != 32 {
		t.Fatalf("Random = %v", err)
	} else {
		r.Destroy()
	}
}
