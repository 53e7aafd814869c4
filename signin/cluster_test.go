package signin

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/awnumar/memguard"
)

// TestForwardedRequestsAreSigned: a broker serves a request that says
// another broker forwarded it only when one of the cluster signed it,
// recently, with this very method, host, path, query and body.
func TestForwardedRequestsAreSigned(t *testing.T) {
	c := &cluster{key: memguard.NewEnclave([]byte(strings.Repeat("k", 32)))}
	other := &cluster{key: memguard.NewEnclave([]byte(strings.Repeat("x", 32)))}
	signed := func(by *cluster, at time.Time, body string) *http.Request {
		r := httptest.NewRequest("POST", "http://oauthfs.example.com/confirm?a=1", strings.NewReader(body))
		ts := strconv.FormatInt(at.Unix(), 10)
		r.Header.Set(forwardedHeader, "http://10.0.0.2:8400")
		r.Header.Set(forwardedHeader+"-At", ts)
		sig, err := by.sign(r, ts)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(forwardedHeader+"-Sig", sig)
		return r
	}
	for _, tc := range []struct {
		name string
		r    func() *http.Request
		ok   bool
	}{
		{"signed now", func() *http.Request { return signed(c, time.Now(), "state=s") }, true},
		{"unsigned", func() *http.Request {
			r := signed(c, time.Now(), "state=s")
			r.Header.Del(forwardedHeader + "-Sig")
			return r
		}, false},
		{"by another cluster's key", func() *http.Request { return signed(other, time.Now(), "state=s") }, false},
		{"a minute old", func() *http.Request { return signed(c, time.Now().Add(-time.Minute), "state=s") }, false},
		{"another body", func() *http.Request {
			r := signed(c, time.Now(), "state=s")
			r.Body = http.NoBody
			r2 := httptest.NewRequest("POST", r.URL.String(), strings.NewReader("state=t"))
			r2.Header = r.Header
			return r2
		}, false},
		{"another path", func() *http.Request {
			r := signed(c, time.Now(), "state=s")
			r.URL.Path = "/start"
			return r
		}, false},
		{"another host", func() *http.Request {
			r := signed(c, time.Now(), "state=s")
			r.Host = "evil.example"
			return r
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.signedByPeer(tc.r()); got != tc.ok {
				t.Errorf("signedByPeer = %v; want %v", got, tc.ok)
			}
		})
	}
}
