package broker

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

type freezer struct {
	l      net.Listener
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l, thaw: make(chan struct{})}
	close(f.thaw)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go f.pipe(c, d)
			go f.pipe(d, c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	return f
}

func (f *freezer) gate() {
	f.mu.Lock()
	ch := f.thaw
	f.mu.Unlock()
	<-ch
}

func (f *freezer) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.gate()
		if n > 0 {
			dst.Write(buf[:n])
		}
		if err != nil {
			if err != io.EOF {
			}
			dst.Close()
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.thaw = make(chan struct{})
	f.mu.Unlock()
}

func viaFreezer(t *testing.T, dsn string) (string, *freezer) {
	u, _ := url.Parse(dsn)
	f := newFreezer(t, u.Host)
	u.Host = f.l.Addr().String()
	return u.String(), f
}
