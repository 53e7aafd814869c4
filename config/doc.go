// Package config parses, defaults and validates the oauthfs TOML
// configuration described in docs/design.md.
//
// The package is plain data plus validation: it never contacts a provider
// and never keeps a client secret in memory longer than [Integration.Secret]
// needs to read it. Every error it returns names the configuration file and
// the line or the integration it is about.
package config
