package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/oauthfs/oauthfs/internal/printable"
)

var gitCredentialCommand = &command{
	name: "git-credential", args: "[--username NAME] [--host HOST]... [--allow-http] NAME|GUID get|store|erase",
	summary: "a git credential helper answering with the token",
	help: "A git credential helper that answers with the integration's token:\n" +
		"  git config --global credential.https://github.com.helper '!oauthfs git-credential --host github.com GitHub'\n" +
		"git appends the action (get, store or erase) and talks on stdin and stdout.",
	flags: gitCredentialFlags,
}

// gitCredentialFlags declares the flags of oauthfs git-credential, a git
// credential helper (gitcredentials(7)): for "get" it answers with the
// integration's access token as the password, refreshed on read; "store"
// and "erase" are accepted and ignored, since the broker owns the tokens.
// It answers only over https (unless --allow-http) and, with --host, only
// for those hosts: a helper set for every URL must not hand a token to
// whichever server asks.
func gitCredentialFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	username := fs.String("username", "oauth2", "the `username` to send with the token (GitHub and GitLab accept oauth2; Bitbucket wants x-token-auth)")
	allowHTTP := fs.Bool("allow-http", false, "answer for plain http too (a server you trust, on loopback, say); by default only https")
	var hosts []string
	fs.Func("host", "answer only for this `host` (repeat for more); by default any host git asks for", func(h string) error {
		hosts = append(hosts, strings.ToLower(h))
		return nil
	})
	return func(stdout, stderr io.Writer) error {
		stdin := os.Stdin
		if fs.NArg() != 2 {
			return usageErrorf("git-credential takes NAME|GUID and an action (get, store or erase), got %d arguments", fs.NArg())
		}
		id, action := fs.Arg(0), fs.Arg(1)
		// Read git's description of the request (key=value lines up to a
		// blank line) whatever the action, so git never blocks writing it.
		attrs := map[string]string{}
		sc := bufio.NewScanner(stdin)
		for sc.Scan() && sc.Text() != "" {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				attrs[k] = v
			}
		}
		switch action {
		case "store", "erase":
			return nil
		case "get":
		default:
			return usageErrorf("git-credential: unknown action %q (want get, store or erase)", action)
		}
		switch p, h := attrs["protocol"], strings.ToLower(attrs["host"]); {
		case p != "https" && !(p == "http" && *allowHTTP):
			return withHint(fmt.Errorf("git-credential: refusing to send a token over %q to %s", printable.String(p, 32), printable.String(h, 128)),
				"tokens go over https only; for a plain http server you trust, add --allow-http to the helper")
		case len(hosts) > 0 && !slices.Contains(hosts, h):
			return withHint(fmt.Errorf("git-credential: refusing to send %s's token to %s", id, printable.String(h, 128)),
				"the helper answers only for --host %s; scope it in git's config (credential.https://HOST.helper) or add the host", strings.Join(hosts, ", "))
		}
		c, ctx, cancel, err := dial(*sock, *cfg)
		if err != nil {
			return err
		}
		defer cancel()
		t, buf, err := openToken(ctx, c, id)
		if err != nil {
			return err
		}
		defer buf.Destroy()
		var b strings.Builder
		if p := attrs["protocol"]; p != "" {
			fmt.Fprintf(&b, "protocol=%s\n", p)
		}
		if h := attrs["host"]; h != "" {
			fmt.Fprintf(&b, "host=%s\n", h)
		}
		fmt.Fprintf(&b, "username=%s\n", *username)
		if exp := t.Expiry(); !exp.IsZero() {
			fmt.Fprintf(&b, "password_expiry_utc=%d\n", exp.Unix())
		}
		// The token goes straight from the locked buffer to git.
		if _, err := io.WriteString(stdout, b.String()+"password="); err != nil {
			return err
		}
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			return err
		}
		_, err = io.WriteString(stdout, "\n\n")
		return err
	}
}
