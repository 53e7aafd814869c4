package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/unixsock"
)

// TestNoBrokerSaysSo: every request, token or not, says the same thing
// of a socket where nothing answers, also when its directory was never
// made (a fresh machine), and of a socket it refuses to trust: once,
// without net/http's "Get URL", with "token unavailable" said once.
func TestNoBrokerSaysSo(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	shared := filepath.Join(dir, "shared")
	os.Mkdir(shared, 0o700)
	os.Chmod(shared, 0o777) // anyone could put a socket there
	for _, tc := range []struct {
		name, socket string
		want         error
		says         string
	}{
		{"no directory", filepath.Join(dir, "never-made", "broker.sock"), ErrNoBroker, "client: no broker is running at "},
		{"no socket", filepath.Join(open, "broker.sock"), ErrNoBroker, "client: no broker is running at "},
		{"a directory others may write", filepath.Join(shared, "broker.sock"), unixsock.ErrUntrusted, "client: refusing "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClient(tc.socket, 5*time.Second)
			ctx := context.Background()
			_, errList := c.Integrations(ctx)
			_, errToken := c.Token(ctx, "Demo")
			for what, err := range map[string]error{"Integrations": errList, "Token": errToken} {
				msg := ""
				if err != nil {
					msg = err.Error()
				}
				if !errors.Is(err, tc.want) || !errors.Is(err, credential.ErrUnavailable) || !strings.HasPrefix(msg, tc.says) ||
					!strings.Contains(msg, tc.socket) || strings.Count(msg, credential.ErrUnavailable.Error()) != 1 || strings.Contains(msg, "http://") {
					t.Errorf("%s: %v; want %q, starting %q and naming the socket, unavailable once", what, err, tc.want, tc.says)
				}
			}
		})
	}
}
