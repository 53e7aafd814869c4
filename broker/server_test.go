package broker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestServerRefusesUnknownPeers(t *testing.T) {
	f := newFixture(t, time.Second)
	for _, tc := range []struct {
		name  string
		owner int
		ctx   context.Context
		code  int
		want  string
	}{
		{"no peer credentials", -1, context.Background(), 403, "credentials could not be read"},
		{"not the owner", uid, context.WithValue(context.Background(), peerKey{}, uid+1), 403, "serves uid 1000 only"},
		{"the owner", uid, context.WithValue(context.Background(), peerKey{}, uid), 200, `"name": "Test"`},
		{"any user of the daemon", -1, context.WithValue(context.Background(), peerKey{}, uid+7), 200, `"status": "not_signed_in"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{B: f.b, Owner: tc.owner, Log: f.b.log}
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/integrations", nil).WithContext(tc.ctx))
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
				t.Errorf("GET /v1/integrations = %d %s; want %d with %q", w.Code, w.Body, tc.code, tc.want)
			}
		})
	}
}
