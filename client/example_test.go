package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/host"
)

// ExampleClient_Token asks a running broker for a token over its session
// socket, as 'oauthfs token' and the session mounts do. The broker here
// runs in the same process, for the example's sake; the client checks
// that the socket and the process answering on it are the caller's (or
// root's) before it trusts them.
func ExampleClient_Token() {
	dir, err := os.MkdirTemp("", "oauthfs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg, err := config.Parse(filepath.Join(dir, "config.toml"), []byte(fmt.Sprintf(`
[broker]
state_dir = ""
socket = %q
listen = "127.0.0.1:0"
callback_url = "http://127.0.0.1:0/callback"

[[integration]]
name = "Example"
client_id = "id"
client_secret = "secret"
auth_url = "https://provider.example/authorize"
token_url = "https://provider.example/token"
`, filepath.Join(dir, "run", "broker.sock"))))
	if err != nil {
		log.Fatal(err)
	}
	h, err := host.Start(cfg, host.Options{Owner: os.Getuid(), Socket: cfg.Settings.Socket, SocketMode: 0o600, DirMode: 0o700})
	if err != nil {
		log.Fatal(err)
	}
	defer h.Stop()
	// A sign-in would store these; the token does not expire.
	h.Broker.Put(os.Getuid(), "Example", credential.Tokens{Access: []byte("gho_example")})

	c := client.NewClient(h.Socket, 10*time.Second)
	t, err := c.Token(context.Background(), "Example")
	if err != nil {
		log.Fatal(err)
	}
	buf, err := t.Open() // locked memory: destroy it once used
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Destroy()
	fmt.Printf("%s\n", buf.Bytes())
	// Output: gho_example
}
