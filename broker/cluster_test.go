package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/internal/localprovider"
	"github.com/oauthfs/oauthfs/internal/pgtest"
	"github.com/oauthfs/oauthfs/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// BenchmarkStore measures, for the file store and the PostgreSQL store,
// a refresh (the provider's answer saved before it is handed out) and a
// cache-miss read (the user's credentials loaded from the store).
func BenchmarkStore(b *testing.B) {
	p := localprovider.New()
	defer p.Close()
	p.SetRotate(true)
	me := os.Getuid() // the database keys users by name: one that exists
	for _, backend := range []string{config.BackendFile, config.BackendPostgres} {
		dir := b.TempDir()
		src := fmt.Sprintf("[broker]\nstate_dir = %q\n[[integration]]\nname = \"I\"\nclient_id = \"test-client\"\nclient_secret = \"test-secret\"\nauth_url = \"%s/authorize\"\ntoken_url = \"%s/token\"\n", dir, p.URL, p.URL)
		cfg, err := config.Parse(filepath.Join(dir, "c.toml"), []byte(src))
		if err != nil {
			b.Fatal(err)
		}
		var st store.Store
		if backend == config.BackendFile {
			st, err = store.OpenFile(dir, filepath.Join(dir, "key"))
		} else {
			var pg *store.Postgres
			pg, err = store.OpenPostgres(context.Background(), pgtest.Shared(b), store.PostgresOptions{KeyFile: filepath.Join(dir, "key")})
			if pg != nil {
				defer pg.Close()
			}
			st = pg
		}
		if err != nil {
			b.Fatal(err)
		}
		br, err := New(cfg, Options{Store: st})
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close()
		putDue(b, br, p, me, "I")
		g := cfg.Integrations[0].GUID.String()
		b.Run(backend+"/refresh", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				br.mu.Lock()
				br.users[me][g].access = nil // due now
				br.mu.Unlock()
				if _, err := br.Token(context.Background(), me, "I"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(backend+"/miss", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				br.mu.Lock()
				for _, cr := range br.users[me] {
					stopAhead(cr)
				}
				delete(br.users, me) // not in memory
				br.mu.Unlock()
				if _, err := br.Token(context.Background(), me, "I"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
