package config_test

import (
	"fmt"
	"log"

	"github.com/oauthfs/oauthfs/config"
)

// ExampleParse reads a configuration with one integration. An integration
// without a guid gets one derived from its name, the same on every host.
func ExampleParse() {
	cfg, err := config.Parse("/etc/oauthfs/config.toml", []byte(`
[broker]
state_dir = ""   # memory only

[[integration]]
name = "GitHub"
provider = "github"
client_id = "Iv1.0123456789abcdef"
client_secret = "not-a-real-secret"
scopes = ["repo"]
`))
	if err != nil {
		log.Fatal(err)
	}
	in := cfg.Integrations[0]
	fmt.Println(in.Name, in.GUID)
	fmt.Println(in.TokenURL)
	fmt.Println(in.Scopes)
	// Output:
	// GitHub 15de8b70-f9d5-5468-9098-d17841453df1
	// https://github.com/login/oauth/access_token
	// [repo]
}
