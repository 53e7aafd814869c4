// Package hostcheck refuses HTTP requests addressed to a host name a
// server does not own. A browser sends the Host it looked up, so a page
// of a site whose name an attacker made resolve to 127.0.0.1 (DNS
// rebinding) reaches a loopback server with the attacker's name as Host:
// checking it keeps such pages out of the broker's sign-in pages and
// metrics.
package hostcheck

import (
	"net"
	"net/http"
	"strings"
)

// Loopback reports whether the host of hostport (a Host header, with or
// without a port) is a loopback address or "localhost".
func Loopback(hostport string) bool {
	h := Name(hostport)
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Name returns the host of hostport, without port or IPv6 brackets.
func Name(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// Handler serves h for requests whose Host allow accepts, and answers the
// others with 421 Misdirected Request.
func Handler(h http.Handler, allow func(host string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allow(r.Host) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusMisdirectedRequest)
			w.Write([]byte("this server does not answer for that host name\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
