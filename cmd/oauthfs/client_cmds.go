package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/oauthfs/oauthfs/api"
	"github.com/oauthfs/oauthfs/client"
	"github.com/oauthfs/oauthfs/config"
	"github.com/oauthfs/oauthfs/credential"
	"github.com/oauthfs/oauthfs/internal/printable"
	"github.com/oauthfs/oauthfs/internal/secmem"
)

// clientTimeout bounds one session API call from a command: the broker's
// own request timeout plus slack.
const clientTimeout = config.DefaultRequestTimeout + fuseSlack

// dial returns a client for the broker found by resolveSocket, and a
// context that ends on SIGINT or SIGTERM.
func dial(flagSock, flagCfg string) (*client.Client, context.Context, context.CancelFunc, error) {
	sock, err := resolveSocket(flagSock, flagCfg)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	return client.NewClient(sock, clientTimeout), ctx, cancel, nil
}

// dialFor takes the one NAME|GUID argument of a command, then dials the
// broker that its --broker and --config flags (sock and cfg, read after
// parsing) lead to.
func dialFor(fs *flag.FlagSet, sock, cfg *string) (string, *client.Client, context.Context, context.CancelFunc, error) {
	id, err := oneArg(fs, "NAME or GUID")
	if err != nil {
		return "", nil, nil, nil, err
	}
	c, ctx, cancel, err := dial(*sock, *cfg)
	return id, c, ctx, cancel, err
}

var tokenCommand = &command{
	name: "token", args: "[--min-valid DURATION] [--force-refresh] [--variant NAME | --resource URI --scope S...] [--id-token | --json] NAME|GUID",
	summary: "print a valid access token (refreshed when needed)",
	help: "Print a valid access token for the integration, with no newline. The\n" +
		"broker refreshes it first when it is expired or about to expire, or, with\n" +
		"--min-valid, when it would expire within that time. --variant prints one\n" +
		"of the integration's token variants; --resource and --scope ask for a\n" +
		"token for another resource (RFC 8707) or fewer scopes, obtained with the\n" +
		"same sign-in and kept in the broker's memory only. --id-token prints the\n" +
		"OpenID Connect ID token that came with it; --json prints token.json.\n" +
		"Forced refreshes, --min-valid refreshes and new resources or scopes are\n" +
		"limited per user (20 at once, then one every 3 seconds).",
	flags: tokenFlags,
}

// tokenQueryFlags declares the flags that choose a token and its
// validity, and returns the query they make.
func tokenQueryFlags(fs *flag.FlagSet) func() (api.TokenQuery, error) {
	minValid := fs.Duration("min-valid", 0, "the token must stay valid at least this `duration` (such as 10m): refreshed first when it would not")
	force := fs.Bool("force-refresh", false, "refresh the token first, whatever its time")
	variant := fs.String("variant", "", "one of the integration's token variants (`name`, as under tokens/)")
	resource := fs.String("resource", "", "a token for this resource `URI` (RFC 8707), such as https://graph.microsoft.com")
	var scopes []string
	fs.Func("scope", "a token with this `scope` only (repeat for more; a subset of the granted ones)", func(s string) error {
		scopes = append(scopes, strings.Fields(s)...)
		return nil
	})
	return func() (api.TokenQuery, error) {
		q := api.TokenQuery{Variant: *variant, Resource: *resource, Scopes: scopes, MinValid: *minValid, Force: *force}
		switch {
		case q.MinValid < 0:
			return q, withHint(&usageError{fmt.Sprintf("--min-valid %v is negative", q.MinValid)}, "give a duration such as 10m")
		case q.Variant != "" && (q.Resource != "" || len(q.Scopes) > 0):
			return q, withHint(&usageError{"--variant cannot be used with --resource or --scope"}, "a variant names its own resource and scopes in the configuration")
		}
		return q, nil
	}
}

// tokenFlags declares the flags of oauthfs token.
func tokenFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	query := tokenQueryFlags(fs)
	idToken := fs.Bool("id-token", false, "print the OpenID Connect ID token that came with the access token")
	asJSON := fs.Bool("json", false, "print token.json: the token, its type, expiry, scopes and ID token")
	return func(stdout, _ io.Writer) error {
		q, err := query()
		if err != nil {
			return err
		}
		if *idToken && *asJSON {
			return withHint(&usageError{"--id-token and --json cannot be used together"}, "token.json holds the ID token too")
		}
		id, c, ctx, cancel, err := dialFor(fs, sock, cfg)
		if err != nil {
			return err
		}
		defer cancel()
		t, err := c.TokenFor(ctx, id, q)
		if err != nil {
			return explainToken(err, id, q)
		}
		switch {
		case *idToken:
			if t = t.ID(); t == nil {
				return withHint(fmt.Errorf("%s: the provider sent no ID token with this token", printable.String(id, 0)),
					"ask for the openid scope in the integration's scopes, and sign in again")
			}
		case *asJSON:
			if t, err = t.Document(); err != nil {
				return err
			}
		}
		buf, err := t.Open()
		if err != nil {
			return err
		}
		defer buf.Destroy()
		_, err = stdout.Write(buf.Bytes())
		return err
	}
}

// openToken asks the broker for id's token and decrypts it. The caller owns
// the buffer and destroys it as soon as the token is written out.
func openToken(ctx context.Context, c *client.Client, id string) (*credential.Token, *secmem.Buffer, error) {
	t, err := c.Token(ctx, id)
	if err != nil {
		return nil, nil, explain(err, id)
	}
	buf, err := t.Open()
	if err != nil {
		return nil, nil, err
	}
	return t, buf, nil
}

// triState is a boolean flag that also remembers whether it was given.
type triState struct{ set, val bool }

func (t *triState) String() string {
	if !t.set {
		return ""
	}
	return strconv.FormatBool(t.val)
}
func (t *triState) Set(s string) error {
	v, err := strconv.ParseBool(s)
	t.set, t.val = true, v
	return err
}
func (t *triState) IsBoolFlag() bool { return true }

var listCommand = &command{
	name: "list", args: "[--json] [--name REGEX] [--authenticated[=false]]",
	summary: "list integrations and whether you are signed in",
	help: "List the integrations, one per line: NAME (GUID): authenticated, or\n" +
		"not authenticated. Like the SDKs' integrations.find() and find_by().",
	flags: listFlags,
}

// listFlags declares the flags of oauthfs list.
func listFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	asJSON := fs.Bool("json", false, "print the index as JSON (the same as integrations.json)")
	name := fs.String("name", "", "only integrations whose name matches this `regex`")
	var authed triState
	fs.Var(&authed, "authenticated", "only integrations you are signed in to (=false: only the others)")
	return func(stdout, _ io.Writer) error {
		if fs.NArg() != 0 {
			return usageErrorf("list takes no arguments; use --name REGEX to filter")
		}
		var re *regexp.Regexp
		if *name != "" {
			var err error
			if re, err = regexp.Compile(*name); err != nil {
				return withHint(&usageError{fmt.Sprintf("--name %q is not a valid regular expression: %v", *name, err)}, "see https://pkg.go.dev/regexp/syntax")
			}
		}
		c, ctx, cancel, err := dial(*sock, *cfg)
		if err != nil {
			return err
		}
		defer cancel()
		list, err := c.Integrations(ctx)
		if err != nil {
			return explain(err, "")
		}
		out := []credential.Integration{}
		for _, in := range list {
			if (re == nil || re.MatchString(in.Name)) && (!authed.set || in.Authenticated == authed.val) {
				out = append(out, in)
			}
		}
		if *asJSON {
			b, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		for _, in := range out {
			state := "authenticated"
			if !in.Authenticated {
				state = "not authenticated"
			}
			fmt.Fprintf(stdout, "%s (%s): %s\n", printable.String(in.Name, 0), printable.String(in.GUID, 64), state)
		}
		return nil
	}
}

var logoutCommand = &command{
	name: "logout", args: "NAME|GUID",
	summary: "forget (and revoke) your tokens for an integration",
	help: "Forget your tokens for the integration, in memory and on disk, and\n" +
		"revoke them at the provider when revocation_url is configured. Every\n" +
		"mount sees ENOKEY at the next open of its access_token.",
	flags: logoutFlags,
}

// logoutFlags declares the flags of oauthfs logout.
func logoutFlags(fs *flag.FlagSet) runFunc {
	sock, cfg := socketFlags(fs)
	return func(stdout, stderr io.Writer) error {
		id, c, ctx, cancel, err := dialFor(fs, sock, cfg)
		if err != nil {
			return err
		}
		defer cancel()
		res, err := c.Logout(ctx, id)
		if err != nil {
			return explain(err, id)
		}
		if !res.SignedOut {
			fmt.Fprintf(stdout, "%s: you were not signed in\n", printable.String(id, 0))
			return nil
		}
		fmt.Fprintf(stdout, "signed out of %s\n", printable.String(id, 0))
		if res.RevocationError != "" {
			fmt.Fprintf(stderr, "oauthfs: warning: the provider did not confirm the revocation (%s); the tokens are forgotten here but may stay valid at the provider until they expire\n", printable.String(res.RevocationError, 0))
		}
		return nil
	}
}
