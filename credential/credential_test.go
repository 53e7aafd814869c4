package credential

import (
	"sync"
	"testing"
	"time"
)

func TestTokenReadAt(t *testing.T) {
	tok := mustToken([]byte("abcdefgh"), time.Time{}, time.Now())
	for _, tc := range []struct {
		name string
		off  int64
		size int
		want string
	}{
		{"all", 0, 100, "abcdefgh"},
		{"prefix", 0, 3, "abc"},
		{"middle", 3, 2, "de"},
		{"tail", 6, 100, "gh"},
		{"at end", 8, 10, ""},
		{"past end", 20, 10, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, tc.size)
			n, err := tok.ReadAt(buf, tc.off)
			if err != nil || string(buf[:n]) != tc.want {
				t.Errorf("ReadAt(%d, %d) = %q, %v; want %q", tc.size, tc.off, buf[:n], err, tc.want)
			}
		})
	}
}

func TestNewTokenWipesAndRedacts(t *testing.T) {
	src := []byte("secret-token")
	tok := mustToken(src, time.Time{}, time.Time{})
	for _, b := range src {
		if b != 0 {
			t.Fatalf("NewToken left its input unwiped: %q", src)
		}
	}
	if tok.String() != "[redacted]" || tok.LogValue().String() != "[redacted]" || tok.Len() != 12 {
		t.Errorf("String, LogValue, Len = %q, %q, %d", tok.String(), tok.LogValue().String(), tok.Len())
	}
	if tok, err := NewToken(nil, time.Time{}, time.Time{}); tok != nil || err == nil {
		t.Errorf("mustToken(nil) = %v, %v; want an error", tok, err)
	}
}

func TestPlainBufferClosesWhenIdle(t *testing.T) {
	tok := mustToken([]byte("abc"), time.Time{}, time.Now())
	buf := make([]byte, 3)
	tok.ReadAt(buf, 0)
	if !tok.plainIsOpen() {
		t.Fatal("after a read the decrypted buffer is closed; want it open for the burst")
	}
	deadline := time.Now().Add(10 * plainIdle)
	for tok.plainIsOpen() {
		if time.Now().After(deadline) {
			t.Fatal("decrypted buffer still open long after plainIdle")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, _ := tok.ReadAt(buf, 0); string(buf[:n]) != "abc" {
		t.Errorf("read after idle close = %q", buf[:n])
	}
}

func TestPlainBuffersAreBounded(t *testing.T) {
	before := plainOpen.Load()
	toks := make([]*Token, maxPlain+50)
	var wg sync.WaitGroup
	for i := range toks {
		toks[i] = mustToken([]byte("token"), time.Time{}, time.Now())
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 5)
			if n, err := toks[i].ReadAt(buf, 0); err != nil || string(buf[:n]) != "token" {
				t.Errorf("ReadAt = %q, %v", buf[:n], err)
			}
		}()
	}
	wg.Wait()
	if n := plainOpen.Load(); n > maxPlain || n < before {
		t.Errorf("open decrypted buffers = %d; want at most %d", n, maxPlain)
	}
}

func TestValid(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name   string
		tok    *Token
		margin time.Duration
		want   bool
	}{
		{"nil", nil, 0, false},
		{"no expiry", mustToken([]byte("x"), time.Time{}, now), time.Hour, true},
		{"fresh", mustToken([]byte("x"), now.Add(time.Hour), now), 5 * time.Minute, true},
		{"inside margin", mustToken([]byte("x"), now.Add(time.Minute), now), 5 * time.Minute, false},
		{"expired", mustToken([]byte("x"), now.Add(-time.Second), now), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.tok.Valid(now, tc.margin); got != tc.want {
				t.Errorf("Valid = %v; want %v", got, tc.want)
			}
		})
	}
}

func mustToken(value []byte, expiry, obtained time.Time) *Token {
	t, err := NewToken(value, expiry, obtained)
	if err != nil {
		panic(err)
	}
	return t
}

func TestViewKeepsThePlainBufferWhileBorrowed(t *testing.T) {
	for deadline := time.Now().Add(10 * plainIdle); plainOpen.Load() >= maxPlain; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("other tests' decrypted buffers stay open")
		}
	}
	tok := mustToken([]byte("borrowed"), time.Time{}, time.Now())
	b, release, err := tok.View()
	if err != nil || string(b) != "borrowed" {
		t.Fatalf("View = %q, %v", b, err)
	}
	time.Sleep(plainIdle + plainIdle/2)
	if !tok.plainIsOpen() || string(b) != "borrowed" {
		t.Fatal("the decrypted buffer was closed while a View was outstanding")
	}
	release()
	release() // a second call is harmless
	deadline := time.Now().Add(10 * plainIdle)
	for tok.plainIsOpen() {
		if time.Now().After(deadline) {
			t.Fatal("decrypted buffer still open long after its View was released")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTokenEqual(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	a := mustToken([]byte("token-one"), exp, time.Now())
	for _, tc := range []struct {
		name string
		b    *Token
		want bool
	}{
		{"itself", a, true},
		{"same bytes and expiry", mustToken([]byte("token-one"), exp, time.Now().Add(time.Minute)), true},
		{"other bytes", mustToken([]byte("token-two"), exp, time.Now()), false},
		{"other length", mustToken([]byte("token-one!"), exp, time.Now()), false},
		{"other expiry", mustToken([]byte("token-one"), exp.Add(time.Second), time.Now()), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.Equal(tc.b); got != tc.want {
				t.Errorf("Equal = %v; want %v", got, tc.want)
			}
		})
	}
}
