package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/uuid"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/endpoints"
)

// Defaults for the [broker] table.
const (
	DefaultRefreshMargin  = 5 * time.Minute
	DefaultRequestTimeout = 10 * time.Second
	defaultListen         = "127.0.0.1:8400"
	// SystemSocket is where the system broker daemon listens by default.
	SystemSocket = "/run/oauthfs/broker.sock"
	// maxNameLen is the longest integration name, in bytes: a file name
	// under by-name/ cannot be longer.
	maxNameLen = 255
)

// The values of Integration.AuthStyle.
const (
	AuthStyleBasic = "basic"
	AuthStylePost  = "post"
)

// reservedPaths are the sign-in web server's own pages: callback_url
// must not use them.
var reservedPaths = []string{"/start", "/confirm", "/settings"}

// guidNamespace is the UUIDv5 namespace for guids derived from names. It is
// fixed forever: changing it would change every default guid.
var guidNamespace = uuid.MustParse("5b0f6c1e-2f5d-4a8e-9a57-6f61757468fe")

// ErrInvalid is wrapped by every validation error, so callers can tell a
// bad configuration from an unreadable file.
var ErrInvalid = errors.New("invalid configuration")

// Config is a parsed and validated configuration. It is plain data and
// safe to share read-only between goroutines.
type Config struct {
	// File is the path the configuration was read from.
	File string
	// Settings holds the [broker] table with defaults filled in.
	Settings Settings
	// Store holds the [store] table with defaults filled in.
	Store Store
	// Integrations holds the [[integration]] tables in file order.
	Integrations []*Integration
	// Warnings are problems that do not stop the broker, for example a
	// secret file readable by others. The caller logs them.
	Warnings []string
}

// Settings is the [broker] table: how a broker host listens, where it
// keeps credentials, and its refresh rules.
type Settings struct {
	Socket      string  `toml:"socket"`
	Listen      string  `toml:"listen"`
	CallbackURL string  `toml:"callback_url"`
	StateDir    *string `toml:"state_dir"`
	KeyFile     string  `toml:"key_file"`
	// ClusterURL is where the other brokers of a cluster reach this one's
	// sign-in web server, to forward a browser's requests for a sign-in
	// this broker holds.
	ClusterURL string `toml:"cluster_url"`
	// ClusterCAFile holds the certificates (PEM) that verify the other
	// brokers' https cluster_url; "": the system's roots.
	ClusterCAFile string `toml:"cluster_ca_file"`
	// TLSCertFile and TLSKeyFile, when set, make the sign-in web server
	// serve https itself (PEM files).
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
	// AuditLog is the audit log's file ("-": standard output; "": none).
	AuditLog string `toml:"audit_log"`
	// MetricsListen is where Prometheus metrics are served, host:port
	// ("": none).
	MetricsListen string `toml:"metrics_listen"`
	// Mount is where 'oauthfs broker' serves the system mount, in which
	// every process reads its own user's credentials ("": none).
	Mount          string        `toml:"mount"`
	RefreshMargin  time.Duration `toml:"refresh_margin"`  // a Go duration string, e.g. "5m"
	RequestTimeout time.Duration `toml:"request_timeout"` // a Go duration string, e.g. "10s"

	// socketDefaulted records that socket was not in the file.
	socketDefaulted bool
}

// SocketFor returns the socket to listen on: the configured one, or the
// default of the embedded broker, or (daemon) of the system broker.
func (b *Settings) SocketFor(daemon bool) string {
	if daemon && b.socketDefaulted {
		return SystemSocket
	}
	return b.Socket
}

// Store backends.
const (
	BackendFile     = "file"
	BackendPostgres = "postgres"
)

// Store is the [store] table: where credentials are kept. The file
// backend keeps them in [broker] state_dir; the postgres one in a
// PostgreSQL database that the brokers of a cluster share, whose DSN (it
// may hold a password) is a secret given like a client secret.
type Store struct {
	Backend string `toml:"backend"`
	DSN     string `toml:"dsn"`
	DSNFile string `toml:"dsn_file"`
	DSNEnv  string `toml:"dsn_env"`
}

// ReadDSN returns the database's DSN, read from its source.
func (s *Store) ReadDSN() (string, error) {
	switch {
	case s.DSNFile != "":
		b, err := os.ReadFile(s.DSNFile)
		if err != nil {
			return "", fmt.Errorf("config: [store] read dsn_file: %w", err)
		}
		if d := string(trimNewline(b)); d != "" {
			return d, nil
		}
		return "", fmt.Errorf("config: [store] dsn_file %s is empty", s.DSNFile)
	case s.DSNEnv != "":
		v, ok := os.LookupEnv(s.DSNEnv)
		if !ok || v == "" {
			return "", fmt.Errorf("config: [store] environment variable %s (dsn_env) is not set", s.DSNEnv)
		}
		return v, nil
	default:
		return s.DSN, nil
	}
}

// Integration is one [[integration]] table. The client secret itself is
// not kept here; [Integration.Secret] reads it from its source on demand.
type Integration struct {
	Name             string            `toml:"name"`
	DisplayName      string            `toml:"display_name"`
	RawGUID          string            `toml:"guid"`
	ClientID         string            `toml:"client_id"`
	ClientSecret     string            `toml:"client_secret"`
	ClientSecretFile string            `toml:"client_secret_file"`
	ClientSecretEnv  string            `toml:"client_secret_env"`
	AuthURL          string            `toml:"auth_url"`
	TokenURL         string            `toml:"token_url"`
	Scopes           []string          `toml:"scopes"`
	Provider         string            `toml:"provider"`
	AuthParams       map[string]string `toml:"auth_params"`
	// AssumedLifetime is how long an access token lives when the token
	// endpoint does not say (no expires_in), as Salesforce's does not; 0:
	// such a token is taken as never expiring.
	AssumedLifetime time.Duration `toml:"assumed_lifetime"`
	// RefreshRevokesAccess says that a refresh ends the access token it
	// replaces at once (GitHub Apps): the broker then never hands out the
	// replaced token after a refresh ahead. The github preset sets it.
	RefreshRevokesAccess bool   `toml:"refresh_revokes_access"`
	RevocationURL        string `toml:"revocation_url"`
	// DeviceAuthURL is the device authorization endpoint (RFC 8628), for
	// 'oauthfs login --device'.
	DeviceAuthURL string `toml:"device_auth_url"`
	// UserinfoURL, when set, is asked (with the new access token) which
	// account signed in, when the token response does not say.
	UserinfoURL string `toml:"userinfo_url"`
	// AuthStyle is how the client authenticates at the token endpoint:
	// AuthStyleBasic (HTTP Basic, RFC 6749 §2.3.1) or AuthStylePost
	// (client_id and client_secret in the form). It is never retried the
	// other way. Default: post for provider presets, basic otherwise.
	AuthStyle string `toml:"auth_style"`
	// Issuer is the authorization server's issuer identifier (RFC 8414
	// §2). When set, its metadata is fetched when the broker starts and
	// on each reload (package provider, not here): it fills the
	// endpoints left out here, and says whether authorization responses
	// carry the issuer (RFC 9207), which sign-in then checks.
	Issuer string `toml:"issuer"`
	// Tokens are the integration's token variants ([[integration.token]]):
	// tokens for another resource or fewer scopes, obtained with the
	// same refresh token (docs/design.md, "Token variants").
	Tokens []TokenVariant `toml:"token"`
	// Resources are the resources (RFC 8707) besides the variants' that
	// 'oauthfs token --resource' may ask this integration's tokens for.
	// Others are refused before any request: a provider that rotates
	// refresh tokens may spend the grant's refresh token on a request it
	// then refuses (oidc-provider does).
	Resources []string `toml:"resources"`
	// DockerRegistries are the registry hosts 'oauthfs docker-credential'
	// answers for with this integration's token; DockerUsername is the
	// user name it sends with it (default "oauth2").
	DockerRegistries []string `toml:"docker_registries"`
	DockerUsername   string   `toml:"docker_username"`

	// GUID is RawGUID parsed, or the UUIDv5 of Name when RawGUID is empty.
	GUID uuid.UUID `toml:"-"`
	// Line is the line of the [[integration]] header in the file, or 0.
	Line int `toml:"-"`
}

// TokenVariant is one named token of an integration besides its main one:
// a token for Resource (RFC 8707, such as Microsoft Graph beside another
// API), with Scopes (a subset of the granted ones), or both.
type TokenVariant struct {
	Name     string   `toml:"name"`
	Resource string   `toml:"resource"`
	Scopes   []string `toml:"scopes"`
}

// AllowsResource reports whether tokens for resource may be asked for:
// it is in Resources or a token variant's.
func (in *Integration) AllowsResource(resource string) bool {
	if slices.Contains(in.Resources, resource) {
		return true
	}
	for _, v := range in.Tokens {
		if v.Resource == resource {
			return true
		}
	}
	return false
}

// Variant returns the token variant called name, or nil.
func (in *Integration) Variant(name string) *TokenVariant {
	for i := range in.Tokens {
		if in.Tokens[i].Name == name {
			return &in.Tokens[i]
		}
	}
	return nil
}

// variantName is what a token variant's name may be: it names a
// directory under tokens/.
var variantName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkResource checks a resource indicator (RFC 8707 §2).
func checkResource(r string) error {
	if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" {
		return fmt.Errorf("resource %q: want an absolute URI without a fragment (RFC 8707), such as \"https://graph.microsoft.com\"", r)
	}
	return nil
}

// checkVariants checks in's token variants and resources.
func checkVariants(in *Integration) error {
	for _, r := range in.Resources {
		if err := checkResource(r); err != nil {
			return fmt.Errorf("resources: %w", err)
		}
	}
	seen := map[string]bool{}
	for _, v := range in.Tokens {
		switch {
		case !variantName.MatchString(v.Name):
			return fmt.Errorf("[[integration.token]] name %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it names a directory)", v.Name)
		case seen[v.Name]:
			return fmt.Errorf("[[integration.token]] name %q is used twice", v.Name)
		case v.Resource == "" && len(v.Scopes) == 0:
			return fmt.Errorf("[[integration.token]] %q: set resource, scopes or both (otherwise it is the main token)", v.Name)
		}
		if v.Resource != "" {
			if err := checkResource(v.Resource); err != nil {
				return fmt.Errorf("[[integration.token]] %q: %w", v.Name, err)
			}
		}
		for _, s := range v.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\n\"\\") {
				return fmt.Errorf("[[integration.token]] %q: scope %q: want one scope per string, without spaces or quotes", v.Name, s)
			}
		}
		seen[v.Name] = true
	}
	return nil
}

// Secret returns a fresh copy of the client secret read from its source.
// The caller owns the slice and should wipe it (for example by handing it
// to memguard.NewEnclave, which wipes its input).
func (in *Integration) Secret() ([]byte, error) {
	switch {
	case in.ClientSecretFile != "":
		b, err := os.ReadFile(in.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("config: integration %q: read client_secret_file: %w", in.Name, err)
		}
		s := trimNewline(b)
		if len(s) == 0 {
			return nil, fmt.Errorf("config: integration %q: client_secret_file %s is empty", in.Name, in.ClientSecretFile)
		}
		return s, nil
	case in.ClientSecretEnv != "":
		v, ok := os.LookupEnv(in.ClientSecretEnv)
		if !ok || v == "" {
			return nil, fmt.Errorf("config: integration %q: environment variable %s (client_secret_env) is not set", in.Name, in.ClientSecretEnv)
		}
		return []byte(v), nil
	default:
		return []byte(in.ClientSecret), nil
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// MemoryOnly reports whether credentials are kept in memory only.
func (b *Settings) MemoryOnly() bool { return b.StateDir != nil && *b.StateDir == "" }

// file is the on-disk shape; it exists so that unknown keys can be found.
type file struct {
	Settings    Settings       `toml:"broker"`
	Store       Store          `toml:"store"`
	Integration []*Integration `toml:"integration"`
}

// Load reads, defaults and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse defaults and validates configuration text; path is used in errors
// and to resolve relative file names.
func Parse(path string, data []byte) (*Config, error) {
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			where := ""
			if k := perr.LastKey; k != "" {
				where = " [" + k + "]"
			}
			return nil, fmt.Errorf("config: %s:%d:%s %s: %w", path, perr.Position.Line, where, perr.Message, ErrInvalid)
		}
		return nil, fmt.Errorf("config: %s: %v: %w", path, err, ErrInvalid)
	}
	lines := strings.Split(string(data), "\n")
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return nil, fmt.Errorf("config: %s:%d: unknown key %q: %w", path, keyLine(lines, k), k.String(), ErrInvalid)
	}
	c := &Config{File: path, Settings: f.Settings, Store: f.Store, Integrations: f.Integration}
	headers := headerLines(lines)
	for i, in := range c.Integrations {
		if i < len(headers) {
			in.Line = headers[i]
		}
	}
	if err := c.defaults(md); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

var headerRE = regexp.MustCompile(`^\s*\[\[\s*integration\s*\]\]`)

// headerLines returns the 1-based line numbers of the [[integration]]
// headers, in order.
func headerLines(lines []string) []int {
	var out []int
	for i, l := range lines {
		if headerRE.MatchString(l) {
			out = append(out, i+1)
		}
	}
	return out
}

// keyLine finds the line where the last component of k is assigned. The
// TOML decoder does not export key positions, so this scans the text; it
// returns the first match, or 0 when none is found.
func keyLine(lines []string, k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	re := regexp.MustCompile(`(^|[\s{,])"?` + regexp.QuoteMeta(k[len(k)-1]) + `"?\s*=|^\s*\[+\s*` + regexp.QuoteMeta(k.String()) + `\s*\]`)
	for i, l := range lines {
		if re.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

func (c *Config) errf(format string, args ...any) error {
	return fmt.Errorf("config: %s: %s: %w", c.File, fmt.Sprintf(format, args...), ErrInvalid)
}

func (c *Config) integrationErr(in *Integration, i int, format string, args ...any) error {
	where := fmt.Sprintf("integration #%d", i+1)
	if in.Name != "" {
		where = fmt.Sprintf("integration %q", in.Name)
	}
	if in.Line > 0 {
		return fmt.Errorf("config: %s:%d: %s: %s: %w", c.File, in.Line, where, fmt.Sprintf(format, args...), ErrInvalid)
	}
	return fmt.Errorf("config: %s: %s: %s: %w", c.File, where, fmt.Sprintf(format, args...), ErrInvalid)
}

func (c *Config) defaults(md toml.MetaData) error {
	b := &c.Settings
	for _, d := range []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{{"refresh_margin", &b.RefreshMargin, DefaultRefreshMargin}, {"request_timeout", &b.RequestTimeout, DefaultRequestTimeout}} {
		switch {
		case !md.IsDefined("broker", d.key):
			*d.v = d.def
		case md.Type("broker", d.key) != "String":
			return c.errf("[broker] %s must be a string with a unit, such as \"5m\" or \"10s\"", d.key)
		case *d.v <= 0:
			return c.errf("[broker] %s %v must be positive (a Go duration such as \"5m\")", d.key, *d.v)
		}
	}
	if b.Listen == "" {
		b.Listen = defaultListen
	}
	if b.CallbackURL == "" {
		b.CallbackURL = "http://" + b.Listen + "/callback"
	}
	if b.Socket == "" {
		b.Socket, b.socketDefaulted = defaultSocket(), true
	}
	if b.StateDir == nil {
		d := defaultStateDir()
		b.StateDir = &d
	}
	if b.KeyFile == "" && *b.StateDir != "" {
		b.KeyFile = filepath.Join(*b.StateDir, "key")
	}
	if c.Store.Backend == "" {
		c.Store.Backend = BackendFile
	}
	base := filepath.Dir(c.File)
	for _, p := range []*string{&b.Socket, b.StateDir, &b.KeyFile, &c.Store.DSNFile, &b.AuditLog, &b.ClusterCAFile, &b.TLSCertFile, &b.TLSKeyFile} {
		if *p != "" && *p != "-" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	for _, in := range c.Integrations {
		if in.ClientSecretFile != "" && !filepath.IsAbs(in.ClientSecretFile) {
			in.ClientSecretFile = filepath.Join(base, in.ClientSecretFile)
		}
		if in.DisplayName == "" {
			in.DisplayName = in.Name
		}
	}
	return nil
}

// providers maps the provider key to its endpoints (x/oauth2's, with the
// device authorization endpoint where it has one). Only providers whose
// endpoints are fixed URLs are listed; others need auth_url and
// token_url. Presets authenticate with client_secret_post, which every
// one of these providers accepts (some refuse HTTP Basic).
var providers = map[string]struct {
	endpoint oauth2.Endpoint
	userinfo string
}{
	"amazon":    {endpoints.Amazon, ""},
	"bitbucket": {endpoints.Bitbucket, ""},
	"discord":   {endpoints.Discord, ""},
	"dropbox":   {endpoints.Dropbox, ""},
	"facebook":  {endpoints.Facebook, ""},
	"github":    {endpoints.GitHub, "https://api.github.com/user"},
	"gitlab":    {endpoints.GitLab, ""},
	"google":    {endpoints.Google, ""},
	"linkedin":  {endpoints.LinkedIn, ""},
	"microsoft": {endpoints.AzureAD("common"), ""}, // work, school and personal accounts
	"slack":     {endpoints.Slack, ""},
	"spotify":   {endpoints.Spotify, ""},
	"zoom":      {endpoints.Zoom, ""},
}

// applyQuirks sets what a preset's provider needs beyond its endpoints
// (docs/design.md, "Providers' quirks"), where the configuration does not
// say otherwise.
func applyQuirks(provider string, in *Integration) {
	switch provider {
	case "google":
		// Google sends a refresh token only to an authorization request
		// with access_type=offline, and again only with prompt=consent.
		if in.AuthParams == nil {
			in.AuthParams = map[string]string{}
		}
		for k, v := range map[string]string{"access_type": "offline", "prompt": "consent"} {
			if _, ok := in.AuthParams[k]; !ok {
				in.AuthParams[k] = v
			}
		}
	case "microsoft":
		// Microsoft Entra sends a refresh token only for offline_access.
		if !slices.Contains(in.Scopes, "offline_access") {
			in.Scopes = append(in.Scopes, "offline_access")
		}
	case "github":
		// A GitHub App's refresh ends the access token it replaces.
		in.RefreshRevokesAccess = true
	}
}

// checkEntraScopes refuses what Microsoft Entra refuses: scopes for more
// than one resource in one request (two .default scopes, say).
func checkEntraScopes(in *Integration) error {
	u, _ := url.Parse(in.AuthURL)
	if !strings.EqualFold(in.Provider, "microsoft") && (u == nil || !strings.HasSuffix(strings.ToLower(u.Hostname()), "login.microsoftonline.com")) {
		return nil
	}
	resources := map[string]bool{}
	for _, s := range in.Scopes {
		if r, ok := strings.CutSuffix(s, "/.default"); ok {
			resources[r] = true
		}
	}
	if len(resources) > 1 {
		names := make([]string, 0, len(resources))
		for r := range resources {
			names = append(names, r)
		}
		sort.Strings(names)
		return fmt.Errorf("scopes name %d resources (%s): Microsoft Entra grants a token for one resource at a time; make one integration per resource", len(names), strings.Join(names, ", "))
	}
	return nil
}

// providerNames returns the known provider keys, sorted.
func providerNames() []string {
	out := make([]string, 0, len(providers))
	for k := range providers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (c *Config) validate() error {
	if _, _, err := net.SplitHostPort(c.Settings.Listen); err != nil {
		return c.errf("[broker] listen %q: want host:port", c.Settings.Listen)
	}
	if m := c.Settings.Mount; m != "" && (!filepath.IsAbs(m) || filepath.Clean(m) != m || m == "/") {
		return c.errf("[broker] mount %q: want an absolute, clean path other than /, such as \"/oauth\"", m)
	}
	if a := c.Settings.MetricsListen; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return c.errf("[broker] metrics_listen %q: want host:port, such as \"127.0.0.1:9464\"", a)
		}
	}
	if err := CheckURL(c.Settings.CallbackURL); err != nil {
		return c.errf("[broker] callback_url: %v", err)
	}
	if err := checkCallbackPath(c.Settings.CallbackURL); err != nil {
		return c.errf("[broker] callback_url: %v", err)
	}
	if err := c.validateStore(); err != nil {
		return err
	}
	if u := c.Settings.ClusterURL; u != "" {
		p, err := url.Parse(u)
		switch {
		case err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/"):
			return c.errf("[broker] cluster_url %q: want http(s)://HOST:PORT, where the other brokers reach this one's sign-in web server", u)
		case c.Store.Backend != BackendPostgres:
			return c.errf("[broker] cluster_url is for the brokers of a cluster, which share [store] backend = \"postgres\"")
		}
	}
	if c.Settings.ClusterCAFile != "" && c.Settings.ClusterURL == "" {
		return c.errf("[broker] cluster_ca_file verifies the other brokers' cluster_url; set cluster_url too, or remove it")
	}
	if (c.Settings.TLSCertFile == "") != (c.Settings.TLSKeyFile == "") {
		return c.errf("[broker] tls_cert_file and tls_key_file go together: set both, or neither")
	}
	names := map[string]int{}
	guids := map[uuid.UUID]int{}
	registries := map[string]int{}
	for i, in := range c.Integrations {
		if err := c.validateIntegration(in, i); err != nil {
			return err
		}
		if j, dup := names[in.Name]; dup {
			return c.integrationErr(in, i, "name is also used by integration #%d; names must be unique", j+1)
		}
		names[in.Name] = i
		if j, dup := guids[in.GUID]; dup {
			return c.integrationErr(in, i, "guid %s is also used by integration #%d; guids must be unique", in.GUID, j+1)
		}
		guids[in.GUID] = i
		for _, h := range in.DockerRegistries {
			h = strings.ToLower(h)
			if j, dup := registries[h]; dup {
				return c.integrationErr(in, i, "docker_registries: %s is also named by integration #%d; a registry gets one integration's token", h, j+1)
			}
			registries[h] = i
		}
	}
	return nil
}

func (c *Config) validateStore() error {
	st := &c.Store
	n := 0
	for _, v := range []string{st.DSN, st.DSNFile, st.DSNEnv} {
		if v != "" {
			n++
		}
	}
	switch st.Backend {
	case BackendFile:
		if n > 0 {
			return c.errf("[store] dsn, dsn_file and dsn_env are for backend = \"postgres\"; the file backend keeps credentials in [broker] state_dir")
		}
	case BackendPostgres:
		if n != 1 {
			return c.errf("[store] backend = \"postgres\" needs its database in exactly one of dsn, dsn_file or dsn_env (%d given)", n)
		}
		if c.Settings.KeyFile == "" {
			return c.errf("[store] backend = \"postgres\" needs [broker] key_file (the same file on every broker host), or a state_dir to keep it in")
		}
		if st.DSNFile != "" {
			if fi, err := os.Stat(st.DSNFile); err != nil {
				return c.errf("[store] dsn_file: %v", err)
			} else if fi.Mode().Perm()&0o077 != 0 {
				c.Warnings = append(c.Warnings, fmt.Sprintf("[store] dsn_file %s is readable by group or others (mode %04o); it may hold the database password: chmod 600 it", st.DSNFile, fi.Mode().Perm()))
			}
		}
	default:
		return c.errf("[store] backend %q: want \"file\" or \"postgres\"", st.Backend)
	}
	return nil
}

func (c *Config) validateIntegration(in *Integration, i int) error {
	switch {
	case in.Name == "":
		return c.integrationErr(in, i, "name is missing")
	case len(in.Name) > maxNameLen:
		return c.integrationErr(in, i, "name is %d bytes long; the limit is %d", len(in.Name), maxNameLen)
	case strings.ContainsAny(in.Name, "/\x00"):
		return c.integrationErr(in, i, "name must not contain '/' or NUL")
	case in.Name == "." || in.Name == "..":
		return c.integrationErr(in, i, "name must not be %q", in.Name)
	case isGUIDShaped(in.Name):
		return c.integrationErr(in, i, "name %q has the shape of a guid, and would be confused with an integration's guid; choose a name that is not a UUID", in.Name)
	case in.Name == "by-name" || in.Name == "integrations.json":
		// Allowed: names live under by-name/, so they cannot collide.
	}
	if in.RawGUID == "" {
		in.GUID = uuid.NewSHA1(guidNamespace, []byte(in.Name))
	} else {
		g, err := uuid.Parse(in.RawGUID)
		if err != nil || len(in.RawGUID) != 36 {
			return c.integrationErr(in, i, "guid %q is not a UUID (want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", in.RawGUID)
		}
		if g == uuid.Nil {
			return c.integrationErr(in, i, "guid must not be the nil UUID")
		}
		in.GUID = g
	}
	if in.ClientID == "" {
		return c.integrationErr(in, i, "client_id is missing")
	}
	if in.Provider != "" {
		p, ok := providers[strings.ToLower(in.Provider)]
		if !ok {
			return c.integrationErr(in, i, "unknown provider %q (known: %s); or set auth_url and token_url", in.Provider, strings.Join(providerNames(), ", "))
		}
		if in.AuthURL == "" {
			in.AuthURL = p.endpoint.AuthURL
		}
		if in.TokenURL == "" {
			in.TokenURL = p.endpoint.TokenURL
		}
		if in.DeviceAuthURL == "" {
			in.DeviceAuthURL = p.endpoint.DeviceAuthURL
		}
		if in.UserinfoURL == "" {
			in.UserinfoURL = p.userinfo
		}
		if in.AuthStyle == "" {
			in.AuthStyle = AuthStylePost
		}
		applyQuirks(strings.ToLower(in.Provider), in)
	}
	if err := checkEntraScopes(in); err != nil {
		return c.integrationErr(in, i, "%v", err)
	}
	if err := checkVariants(in); err != nil {
		return c.integrationErr(in, i, "%v", err)
	}
	for _, h := range in.DockerRegistries {
		if h == "" || strings.ContainsAny(h, "/ \t@") {
			return c.integrationErr(in, i, "docker_registries: %q: want a registry host name, with a port if it has one (ghcr.io, registry.example.com:5000), no scheme or path", h)
		}
	}
	if in.DockerUsername == "" {
		in.DockerUsername = "oauth2"
	}
	if in.AssumedLifetime < 0 || (in.AssumedLifetime > 0 && in.AssumedLifetime < time.Second) {
		return c.integrationErr(in, i, "assumed_lifetime %v: want a string with a unit of a second or more, such as \"2h\"", in.AssumedLifetime)
	}
	switch in.AuthStyle {
	case "":
		in.AuthStyle = AuthStyleBasic
	case AuthStyleBasic, AuthStylePost:
	default:
		return c.integrationErr(in, i, "auth_style %q: want %q (HTTP Basic) or %q (in the form)", in.AuthStyle, AuthStyleBasic, AuthStylePost)
	}
	if in.Issuer != "" {
		if err := CheckIssuer(in.Issuer); err != nil {
			return c.integrationErr(in, i, "issuer: %v", err)
		}
	}
	for _, u := range []struct{ key, val string }{{"auth_url", in.AuthURL}, {"token_url", in.TokenURL}} {
		if u.val == "" && in.Issuer != "" {
			continue // from the issuer's metadata
		}
		if u.val == "" {
			return c.integrationErr(in, i, "%s is missing (set it, or set issuer or provider)", u.key)
		}
		if err := CheckURL(u.val); err != nil {
			return c.integrationErr(in, i, "%s: %v", u.key, err)
		}
	}
	for _, u := range []struct{ key, val string }{{"revocation_url", in.RevocationURL}, {"userinfo_url", in.UserinfoURL}, {"device_auth_url", in.DeviceAuthURL}} {
		if u.val == "" {
			continue
		}
		if err := CheckURL(u.val); err != nil {
			return c.integrationErr(in, i, "%s: %v", u.key, err)
		}
	}
	n := 0
	for _, s := range []string{in.ClientSecret, in.ClientSecretFile, in.ClientSecretEnv} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return c.integrationErr(in, i, "give the client secret in exactly one of client_secret, client_secret_file, client_secret_env (found %d)", n)
	}
	if in.ClientSecretFile != "" {
		st, err := os.Stat(in.ClientSecretFile)
		if err != nil {
			return c.integrationErr(in, i, "client_secret_file: %v", err)
		}
		if !st.Mode().IsRegular() {
			return c.integrationErr(in, i, "client_secret_file %s is not a regular file", in.ClientSecretFile)
		}
		if st.Mode().Perm()&0o077 != 0 {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: integration %q: client_secret_file %s is readable by group or others (mode %04o); run chmod 600 %s",
				c.File, in.Name, in.ClientSecretFile, st.Mode().Perm(), in.ClientSecretFile))
		}
	}
	for _, s := range in.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\n") {
			return c.integrationErr(in, i, "scope %q must be a single non-empty word", s)
		}
	}
	return nil
}

// CheckURL accepts absolute https URLs, and http URLs whose host is a
// loopback address or "localhost": the rule for every endpoint, whether
// configured or found in an issuer's metadata.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	if !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q uses plain http; use https (http is allowed only for loopback hosts)", s)
	default:
		return fmt.Errorf("%q: scheme must be https", s)
	}
}

// CheckIssuer accepts an issuer identifier as RFC 8414 §2 has it: a URL
// as [CheckURL] accepts, with no query or fragment.
func CheckIssuer(s string) error {
	if err := CheckURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("%q has a query or a fragment, which an issuer identifier never has (RFC 8414 §2)", s)
	}
	return nil
}

// checkCallbackPath refuses a callback_url whose path the sign-in web
// server needs for itself, or that has no path to register.
func checkCallbackPath(s string) error {
	u, _ := url.Parse(s)
	if u.Path == "" || u.Path == "/" {
		return fmt.Errorf("%q has no path; use one such as /callback", s)
	}
	for _, p := range reservedPaths {
		if u.Path == p || strings.HasPrefix(u.Path, p+"/") {
			return fmt.Errorf("%q uses the path %s, which the sign-in web server serves itself; use another, such as /callback", s, p)
		}
	}
	if strings.Count(strings.TrimSuffix(u.Path, "/"), "/") > 1 {
		// The broker's pages are at the root of its host name (/start,
		// /confirm, /settings): a callback under a prefix means the host
		// name is shared with other applications, whose pages could act
		// in a user's browser as if they were the broker's.
		return fmt.Errorf("%q has its callback under %s: the sign-in web server needs a host name of its own, at its root (such as https://oauthfs.%s/callback): another application on the same host name can act in your users' browsers as the broker's own pages (docs/deploy.md)",
			s, path.Dir(u.Path), u.Hostname())
	}
	return nil
}

// isGUIDShaped reports whether name parses as a UUID, in any of the forms
// github.com/google/uuid accepts.
func isGUIDShaped(name string) bool {
	_, err := uuid.Parse(name)
	return err == nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// defaultSocket is the embedded broker's socket path:
// RuntimeDir()/broker.sock.
func defaultSocket() string { return filepath.Join(RuntimeDir(), "broker.sock") }

// RuntimeDir is this user's private directory for sockets and locks:
// $XDG_RUNTIME_DIR/oauthfs, or, when XDG_RUNTIME_DIR is unset (cron, su,
// sudo), oauthfs-UID in the temporary directory. Whoever creates the
// latter first owns it, so its users check its owner and mode before
// trusting anything in it.
func RuntimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "oauthfs")
	}
	return TempRuntimeDir()
}

// TempRuntimeDir is the fallback of RuntimeDir in the temporary
// directory.
func TempRuntimeDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("oauthfs-%d", os.Getuid()))
}

// defaultStateDir is $XDG_STATE_HOME/oauthfs, or ~/.local/state/oauthfs.
func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "oauthfs")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".local", "state", "oauthfs")
}

// DefaultFile is $XDG_CONFIG_HOME/oauthfs/config.toml, or
// ~/.config/oauthfs/config.toml.
func DefaultFile() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "oauthfs", "config.toml")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "config.toml"
	}
	return filepath.Join(home, ".config", "oauthfs", "config.toml")
}
