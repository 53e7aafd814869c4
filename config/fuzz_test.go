package config

import (
	"errors"
	"testing"
)

// FuzzParse feeds configuration text: Parse returns a configuration or an
// error that says it is invalid, and never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"[broker]\n",
		"[broker]\nrefresh_margin = \"5m\"\n[[integration]]\nname = \"A\"\nclient_id = \"i\"\nclient_secret = \"s\"\nprovider = \"github\"\n",
		"[[integration]]\nname = \"A\"\nauth_params = { a = \"b\" }\n",
		"[broker]\ncallback_url = \"http://127.0.0.1:1/start\"\n",
		"= =\n", "[[integration]]\nname = \"\\u0000\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("/nonexistent/f.toml", data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse = %v; want an ErrInvalid error", err)
			}
			return
		}
		for _, in := range c.Integrations {
			if in.Name == "" || in.ClientID == "" || in.AuthURL == "" || in.TokenURL == "" || (in.AuthStyle != AuthStyleBasic && in.AuthStyle != AuthStylePost) {
				t.Fatalf("Parse accepted an incomplete integration: %+v", in)
			}
		}
	})
}
