package broker_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/oauthfs/oauthfs/broker"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/localprovider"
)

// ExampleBroker_Token stores a user's tokens, as a sign-in does, and
// reads the access token with refresh-on-read: the stored one has
// expired, so the broker uses the refresh token first.
func ExampleBroker_Token() {
	p := localprovider.New() // an OAuth 2.0 provider on 127.0.0.1
	defer p.Close()
	cfg, err := config.Parse("example.toml", []byte(fmt.Sprintf(`
[broker]
state_dir = ""   # memory only

[[integration]]
name = "Example"
client_id = "test-client"
client_secret = "test-secret"
auth_url = "%s/authorize"
token_url = "%s/token"
`, p.URL, p.URL)))
	if err != nil {
		log.Fatal(err)
	}
	b, err := broker.New(cfg, broker.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	_, refresh, _ := p.Grant()
	uid := os.Getuid()
	err = b.Put(uid, "Example", credential.Tokens{
		Access:  []byte("an-expired-access-token"),
		Refresh: []byte(refresh),
		Expiry:  time.Now().Add(-time.Minute),
	})
	if err != nil {
		log.Fatal(err)
	}

	t, err := b.Token(context.Background(), uid, "Example")
	if err != nil {
		log.Fatal(err)
	}
	buf, err := t.Open() // locked memory: destroy it once used
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Destroy()
	fmt.Println("issued by the provider:", p.Accepts(string(buf.Bytes())))
	fmt.Println("valid for a minute more:", t.Valid(time.Now(), time.Minute))
	// Output:
	// issued by the provider: true
	// valid for a minute more: true
}
